"""OHLCV bars: made of exactly the simulator's trades, final at close, one sequence per symbol."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

import msgspec
import trio
from simclient import BTC, ETH, closed_reason, collect, connect, drain, receive, scope, sequences

from coinfeed.core.decoding import InvalidFrame
from coinfeed.core.protocol import Error, Ohlcv, ServerMessage, format_time, parse_time
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.simulator.clock import TICKS_PER_SECOND, StampedTrade
from coinfeed.simulator.ohlcv import PERIODS, OhlcvBars

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bars_of(trades: list[RestTrade], period_id: str, seconds: int) -> dict[str, Ohlcv]:
    """The bars of ``trades`` (oldest first) by ``time_period_start``, recomputed here."""
    length = timedelta(seconds=seconds)
    groups: dict[datetime, list[RestTrade]] = {}
    for t in trades:
        if t.size:  # size 0 is a marker, not a trade
            moment = parse_time(t.time_exchange)
            groups.setdefault(EPOCH + (moment - EPOCH) // length * length, []).append(t)
    out = {}
    with localcontext(Context(prec=100)):  # exact sums
        for start, group in groups.items():
            prices = [t.price for t in group]
            out[format_time(start)] = Ohlcv(
                symbol_id=group[0].symbol_id,
                sequence=0,
                period_id=period_id,
                time_period_start=format_time(start),
                time_period_end=format_time(start + length),
                time_open=group[0].time_exchange,
                time_close=group[-1].time_exchange,
                price_open=prices[0],
                price_high=max(prices),
                price_low=min(prices),
                price_close=prices[-1],
                volume_traded=sum((t.size for t in group), Decimal(0)),
                trades_count=len(group),
            )
    return out


def bar_key(m: Ohlcv) -> tuple[str, str | None, str]:
    return m.symbol_id, m.period_id, m.time_period_start


def unnumbered(m: Ohlcv) -> Ohlcv:
    return msgspec.structs.replace(m, sequence=0)


def only_ohlcv(msgs: list[ServerMessage | InvalidFrame]) -> list[Ohlcv]:
    bars = [m for m in msgs if isinstance(m, Ohlcv)]
    assert len(bars) == len(msgs), "only ohlcv was subscribed"
    return bars


async def test_final_bars_are_the_bars_of_the_truth_trades_with_updates_while_open() -> None:
    seconds = {"1SEC": 1, "5SEC": 5}
    config = SimulatorConfig(rate=4_000, ohlcv_interim_interval=0.25)
    hello = scope(["ohlcv"], [f"{BTC}$", f"{ETH}$"], periods=list(seconds))
    async with open_simulator(config) as sim, connect(sim, hello) as ws:
        msgs: list[ServerMessage | InvalidFrame] = []

        def enough() -> bool:  # the first 5SEC bar closes at the next multiple of 5 s
            return all(
                sim.truth.ohlcv(s, "5SEC") and len(sim.truth.ohlcv(s, "1SEC")) >= 3
                for s in (BTC, ETH)
            )

        with trio.fail_after(8):
            while not enough():
                msgs += await collect(ws, seconds=0.1)
        sim.pause_market()
        finals = {(s, p): sim.truth.ohlcv(s, p) for s in (BTC, ETH) for p in seconds}
        msgs += await drain(ws, idle=0.5)
        trades = {s: sim.truth.trades(s) for s in (BTC, ETH)}
    bars = only_ohlcv(msgs)

    seqs = sequences(bars)  # one counter per symbol, whatever the period
    assert set(seqs) == {("ohlcv", BTC), ("ohlcv", ETH)}
    for got in seqs.values():
        assert got == list(range(1, len(got) + 1))
    for symbol in (BTC, ETH):
        assert {m.period_id for m in bars if m.symbol_id == symbol} == set(seconds)

    last = {bar_key(m): unnumbered(m) for m in bars}
    updates = Counter(bar_key(m) for m in bars)
    for (symbol, period), final_bars in finals.items():
        assert final_bars
        recomputed = bars_of(trades[symbol], period, seconds[period])
        for bar in final_bars:
            assert last[bar_key(bar)] == bar  # the last message of a period is its final bar
            assert recomputed[bar.time_period_start] == bar  # built from exactly those trades
        starts = [b.time_period_start for b in final_bars]
        assert starts == sorted(s for s in recomputed if starts[0] <= s <= starts[-1])
    for symbol in (BTC, ETH):
        later = finals[(symbol, "1SEC")][1:]  # the first one may have been subscribed late
        assert later and all(updates[bar_key(b)] >= 2 for b in later)
        busiest = max(later, key=lambda b: updates[bar_key(b)])
        counts = [m.trades_count for m in bars if bar_key(m) == bar_key(busiest)]
        assert len(counts) >= 3 and counts == sorted(counts) and counts[0] < counts[-1]


async def test_a_quiet_market_still_closes_its_bars() -> None:
    config = SimulatorConfig(rate=2_000, ohlcv_interim_interval=0.2)
    hello = scope(["ohlcv"], [f"{BTC}$"], periods=["1SEC"])
    async with open_simulator(config) as sim, connect(sim, hello) as ws:
        first = await receive(ws)
        assert isinstance(first, Ohlcv)
        sim.pause_market()
        last_trade = sim.truth.trades(BTC)[-1]
        with trio.fail_after(3):  # its period ends within a second; no later trade comes
            while not (bars := sim.truth.ohlcv(BTC, "1SEC")) or bars[-1].time_close != (
                last_trade.time_exchange
            ):
                await trio.sleep(0.01)
        # The first bar may already be the final one (its period ended before the pause).
        msgs = [first, *only_ohlcv(await drain(ws, idle=0.4))]
    final = bars[-1]
    assert final.time_period_start <= last_trade.time_exchange < final.time_period_end
    assert unnumbered(msgs[-1]) == final


async def test_without_a_period_filter_every_supported_period_is_sent() -> None:
    config = SimulatorConfig(rate=2_000, ohlcv_interim_interval=0.2)
    async with (
        open_simulator(config) as sim,
        connect(sim, scope(["ohlcv"], [f"{BTC}$"])) as ws,
    ):
        msgs = await collect(ws, seconds=0.7)
    assert {m.period_id for m in only_ohlcv(msgs)} == set(PERIODS)


async def test_an_unknown_period_id_gets_an_error_frame_and_a_close() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=1_000)) as sim,
        connect(sim, scope(["ohlcv"], [BTC], periods=["1MIN", "7SEC"])) as ws,
    ):
        seen, _ = await closed_reason(ws)
    assert seen == ['{"type":"error","message":"Unknown period id: 7SEC"}']
    assert msgspec.json.decode(seen[0], type=Error).message == "Unknown period id: 7SEC"


def test_the_supported_periods_are_those_that_divide_a_day() -> None:
    seconds = [1, 2, 3, 4, 5, 6, 10, 15, 20, 30]
    hours = [1, 2, 3, 4, 6, 8, 12]
    expected = [f"{n}SEC" for n in seconds] + [f"{n}MIN" for n in seconds]
    expected += [f"{n}HRS" for n in hours] + ["1DAY"]
    assert list(PERIODS) == expected
    assert all(86_400 * TICKS_PER_SECOND % length == 0 for length in PERIODS.values())


def test_bars_are_start_inclusive_end_exclusive_and_skip_size_zero_markers() -> None:
    minute = 60 * TICKS_PER_SECOND
    t0 = 28_333_334 * minute  # a minute boundary

    def trade(at: int, price: str, size: str = "1") -> StampedTrade:
        return StampedTrade(0, t0 + at, Decimal(price), Decimal(size))

    earlier = [trade(-minute, "9")]  # the retained trades a newly tracked bar starts from
    bars = OhlcvBars([0])
    bars.track(frozenset({(0, "1MIN")}), t0 + 5, lambda sym, since: [*earlier, trade(0, "10")])
    assert bars.watches(0) and bars.tracked == {(0, "1MIN")}
    closed = bars.add(
        [
            trade(7, "12", "0.5"),
            trade(9, "99", "0"),  # a marker: no price, no volume, no count
            trade(minute - 1, "8", "0.25"),
        ]
    )
    assert closed == []
    [(key, interim, final)] = bars.changed()
    assert key == (0, "1MIN") and not final and bars.changed() == []
    [(_, bar, final)] = bars.add([trade(minute, "11")])
    assert bar is interim and final
    assert (bar.start, bar.end, bar.time_open, bar.time_close) == (
        t0,
        t0 + minute,
        t0,
        t0 + minute - 1,
    )
    prices = (bar.price_open, bar.price_high, bar.price_low, bar.price_close)
    assert prices == (10, 12, 8, 8) and (bar.volume, bar.trades) == (Decimal("1.75"), 3)
    assert bars.close_due(t0 + 2 * minute - 1) == []
    [(_, next_bar, final)] = bars.close_due(t0 + 2 * minute)  # no trade needed to close it
    assert final and next_bar.start == t0 + minute and next_bar.trades == 1
    assert bars.close_due(t0 + 3 * minute) == [] and bars.changed() == []

    seconds = OhlcvBars([0])  # a trade on the boundary, in the same batch, opens the next bar
    seconds.track(frozenset({(0, "1SEC")}), t0, lambda sym, since: [])
    second = TICKS_PER_SECOND
    [(_, bar, _)] = seconds.add([trade(1, "1"), trade(second - 1, "2"), trade(second, "3")])
    assert (bar.end, bar.trades, bar.price_close) == (t0 + second, 2, 2)


def test_an_exchange_offset_closes_bars_by_the_exchange_clock() -> None:
    second = TICKS_PER_SECOND
    lag = 3 * second // 10  # symbol 0's time_exchange runs 0.3 s behind the clock
    bars = OhlcvBars([-lag, 0])
    t0 = 1_700_000_000 * second
    bars.track(frozenset({(0, "1SEC"), (1, "1SEC")}), t0, lambda sym, since: [])
    bars.add([StampedTrade(sym, t0 + 1, Decimal(1), Decimal(1)) for sym in (0, 1)])
    [(key, _, _)] = bars.close_due(t0 + second)  # symbol 0 may still stamp t0 + 0.7 s
    assert key == (1, "1SEC")
    [(key, _, _)] = bars.close_due(t0 + second + lag)
    assert key == (0, "1SEC")
