"""Exchange rates: a VWAP of the simulator's own trades, only for the pairs an asset filter names,
without widening the symbol streams; and the scope rules behind that."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest
import trio
from simclient import BTC, BTC_T, DECODER, closed_reason, collect, connect, drain, scope

from coinfeed.core.protocol import Exrate, ScopeMessage, assets_of, decode_scope_message
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.simulator import DEFAULT_SYMBOLS, SimulatorConfig, open_simulator
from coinfeed.simulator.clock import TICKS_PER_SECOND, StampedTrade
from coinfeed.simulator.exrate import ExchangeRates, vwap
from coinfeed.simulator.scope import PRODUCED_TYPES, Scope, ScopeError, validate

BINANCE_BTC_T = "BINANCE_SPOT_BTC_USDT"
ETH = "COINBASE_SPOT_ETH_USD"
XRP = "KRAKEN_SPOT_XRP_USD"


def vwap_of(trades: list[RestTrade]) -> Decimal:
    """The VWAP of ``trades`` rounded half-even to 9 decimals, recomputed here."""
    notional = sum(Fraction(t.price) * Fraction(t.size) for t in trades)
    volume = sum(Fraction(t.size) for t in trades)
    return Decimal(round(notional / volume * 10**9)).scaleb(-9)


async def test_rates_come_for_the_named_pairs_only_and_are_the_vwap_of_the_truth_trades() -> None:
    config = SimulatorConfig(rate=20_000, exrate_interval=0.2, trade_retention=500)
    hello = scope(["trade", "quote", "book"], [f"{BTC}$"])
    rates = scope(["exrate"], kind="subscribe", assets=["BTC/USDT", "ETH/USD", "XRP"])
    async with open_simulator(config) as sim, connect(sim, hello) as ws:
        await ws.send_message(rates)
        msgs = await collect(ws, seconds=1.0)
        sim.pause_market()
        msgs += await drain(ws, idle=0.1)
        # the rates computed from here on see every trade there will be
        after = await collect(ws, count=3, within=2)
        truth = {s: sim.truth.trades(s) for s in DEFAULT_SYMBOLS}
    assert sim.truth.trades_produced(XRP) > len(truth[XRP]) == 500  # over the retained only

    others = {(type(m).__name__, getattr(m, "symbol_id", None)) for m in msgs}
    assert others == {("Trade", BTC), ("Quote", BTC), ("BookUpdate", BTC), ("Exrate", None)}
    sent = [m for m in msgs + after if isinstance(m, Exrate)]
    assert {(r.asset_id_base, r.asset_id_quote) for r in sent} == {
        ("BTC", "USDT"),
        ("ETH", "USD"),
        ("XRP", "USD"),  # a bare asset: every pair with it as base or quote
    }
    assert all(r.rate_type == "BASE_QUOTE_ISOLATED" and len(r.time) == 28 for r in sent)
    expected = {
        ("BTC", "USDT"): vwap_of(truth[BTC_T] + truth[BINANCE_BTC_T]),  # both markets of it
        ("ETH", "USD"): vwap_of(truth[ETH]),
        ("XRP", "USD"): vwap_of(truth[XRP]),
    }
    assert all(isinstance(r, Exrate) for r in after)
    assert {(r.asset_id_base, r.asset_id_quote): r.rate for r in after} == expected
    for r in after:  # the truth keeps the last rate sent per pair
        assert sim.truth.exrate(r.asset_id_base, r.asset_id_quote) == r
    assert sim.truth.exrate("BTC", "USD") is None  # never subscribed, never computed


async def test_subscribing_rates_neither_widens_nor_narrows_a_whole_market_scope() -> None:
    config = SimulatorConfig(rate=20_000, exrate_interval=0.2)
    async with open_simulator(config) as sim, connect(sim, scope(["trade"])) as ws:
        await ws.send_message(scope(["exrate"], kind="subscribe", assets=["ETH/USD"]))
        msgs = await collect(ws, seconds=0.8)
    symbols = {getattr(m, "symbol_id", None) for m in msgs if not isinstance(m, Exrate)}
    assert symbols == set(DEFAULT_SYMBOLS)
    assert {(m.asset_id_base, m.asset_id_quote) for m in msgs if isinstance(m, Exrate)} == {
        ("ETH", "USD")
    }


async def test_rates_without_an_asset_filter_get_an_error_frame_and_a_close() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=1_000)) as sim,
        connect(sim, scope(["trade", "exrate"], [BTC])) as ws,
    ):
        seen, _ = await closed_reason(ws)
    error = DECODER.decode(seen[0])
    assert len(seen) == 1 and "require subscribe_filter_asset_id" in getattr(error, "message", "")


def _message(kind: str, types: list[str], **filters: list[str]) -> ScopeMessage:
    raw = {"type": kind, "subscribe_data_type": types}
    raw |= {f"subscribe_filter_{name}_id": values for name, values in filters.items()}
    message = decode_scope_message(msgspec.json.encode(raw))
    validate(message)
    return message


PAIRS = [p for p in dict.fromkeys(assets_of(s) for s in DEFAULT_SYMBOLS) if p is not None]


def _symbols(s: Scope, data_type: str = "trade") -> set[str]:
    n, t = len(DEFAULT_SYMBOLS), PRODUCED_TYPES.index(data_type)
    return {DEFAULT_SYMBOLS[sid - t * n] for sid in s.streams(DEFAULT_SYMBOLS) if sid // n == t}


def _pairs(s: Scope) -> set[str]:
    return {"/".join(PAIRS[i]) for i in s.rate_pairs(PAIRS)}


def test_an_exrate_only_message_selects_pairs_and_never_symbols() -> None:
    s = Scope()
    s.apply(_message("hello", ["trade"], symbol=[f"{BTC}$"]))
    s.apply(_message("subscribe", ["exrate"], asset=["BTC/USDT", "ETH"], symbol=["KRAKEN"]))
    assert _symbols(s) == {BTC}  # its symbol filter selects nothing either
    assert _pairs(s) == {"BTC/USDT", "ETH/USD"}
    s.apply(_message("unsubscribe", ["exrate"], asset=["ETH"]))
    assert _symbols(s) == {BTC} and _pairs(s) == {"BTC/USDT"}
    s.apply(_message("unsubscribe", ["exrate"]))
    assert _symbols(s) == {BTC} and _pairs(s) == set()


def test_asset_filters_given_with_symbol_types_select_symbols_and_pairs_as_at_coinapi() -> None:
    s = Scope()
    s.apply(_message("hello", ["quote", "exrate"], asset=["USDT"]))
    assert _symbols(s, "quote") == {BTC_T, BINANCE_BTC_T} and _pairs(s) == {"BTC/USDT"}
    s.apply(_message("hello", ["quote"], asset=["XRP/USD"]))  # hello replaces everything
    assert _symbols(s, "quote") == {XRP} and _pairs(s) == set()


def test_a_hello_naming_only_exrate_leaves_no_symbol_stream() -> None:
    s = Scope()
    s.apply(_message("hello", ["exrate"], asset=["BTC"]))
    assert s.streams(DEFAULT_SYMBOLS) == set()
    assert _pairs(s) == {"BTC/USD", "BTC/USDT"}


@pytest.mark.parametrize(
    ("types", "filters", "error"),
    [
        (["exrate"], {"symbol": [BTC]}, "Exchange rates require subscribe_filter_asset_id."),
        (["ohlcv"], {"period": ["1MTH"]}, "Unknown period id: 1MTH"),
    ],
)
def test_invalid_rate_and_period_scopes_are_refused(
    types: list[str], filters: dict[str, list[str]], error: str
) -> None:
    with pytest.raises(ScopeError, match=error):
        _message("subscribe", types, **filters)


def test_vwap_is_exact_and_rounds_half_even() -> None:
    assert vwap(Decimal("1"), Decimal("3")) == Decimal("0.333333333")
    assert vwap(Decimal("0.0000000025"), Decimal(1)) == Decimal("0.000000002")
    assert vwap(Decimal("0.0000000035"), Decimal(1)) == Decimal("0.000000004")
    big = Decimal("123456789012345678901234567890.123456789")  # beyond 28 digits
    assert vwap(Decimal("246913578024691357802469135780.246913578"), Decimal(2)) == big


def test_a_rate_covers_the_retained_trades_of_the_last_24_hours() -> None:
    day = 86_400 * TICKS_PER_SECOND
    rates = ExchangeRates([(0, 1)], retention=2)  # one pair, traded by symbols 0 and 1

    def trade(sym: int, at: int, price: int) -> StampedTrade:
        return StampedTrade(sym, at, Decimal(price), Decimal(1))

    retained = {0: [trade(0, 1, 100), trade(0, 2, 101)], 1: []}
    rates.track(frozenset({0}), lambda sym, since: retained[sym])
    assert rates.watches(0) and rates.watches(1) and rates.rates(day) == [(0, Decimal("100.5"))]
    rates.add([trade(1, 3, 104), trade(0, 4, 102), trade(0, 5, 103), trade(2, 6, 1)])
    assert rates.rates(day) == [(0, Decimal(103))]  # 100, 101 fell out of retention: 102-104
    assert rates.rates(day + 4) == [(0, Decimal("102.5"))]  # 104 (tick 3) is now 24 h old
    assert rates.rates(day + 5) == [(0, Decimal(103))]
    assert rates.rates(day + 6) == []  # nothing in the last 24 hours: no rate
    rates.track(frozenset(), lambda sym, since: [])
    assert not rates.watches(0) and rates.rates(day) == []


async def test_rates_stop_after_unsubscribe_and_cost_nothing_then() -> None:
    config = SimulatorConfig(rate=5_000, exrate_interval=0.1)
    async with open_simulator(config) as sim:
        rates = scope(["exrate"], assets=["ETH/USD"])
        async with connect(sim, rates) as ws:
            assert isinstance((await collect(ws, count=1))[0], Exrate)
            assert sim.hub.frames.tapped == [s == ETH for s in DEFAULT_SYMBOLS]
            await ws.send_message(scope(["exrate"], kind="unsubscribe", assets=["ETH/USD"]))
            await drain(ws, idle=0.2)
            with trio.move_on_after(0.4):
                extra = await ws.get_message()
                raise AssertionError(f"a frame after unsubscribe: {extra!r}")
            assert not any(sim.hub.frames.tapped) and not sim.hub.rates.tracked
