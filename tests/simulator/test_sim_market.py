"""The seeded market: same seed, same market; books that stay sane; exact decimals."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfeed.core.rest_protocol import rest_trades_decoder
from coinfeed.simulator import DEFAULT_SYMBOLS, SimulatorConfig, default_symbols, open_simulator
from coinfeed.simulator.market import Market, MarketBookChange, MarketQuote, MarketTrade


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=12))
def test_same_seed_gives_the_same_events_however_they_are_batched(cuts: list[int]) -> None:
    whole = Market(DEFAULT_SYMBOLS, seed=42).generate(sum(cuts))
    batched = Market(DEFAULT_SYMBOLS, seed=42)
    pieces = [e for n in cuts for e in batched.generate(n, top_for={0, 2})]
    strip = [e._replace(top=None) if isinstance(e, MarketBookChange) else e for e in pieces]
    assert strip == whole


def test_another_seed_gives_another_market() -> None:
    a = Market(DEFAULT_SYMBOLS, seed=1).generate(200)
    b = Market(DEFAULT_SYMBOLS, seed=2).generate(200)
    assert a != b


def _decimals(d: Decimal) -> int:
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def test_books_stay_uncrossed_and_a_few_dozen_levels_deep_with_exact_decimals() -> None:
    market = Market(DEFAULT_SYMBOLS, seed=5, depth=30)
    kinds: set[type] = set()
    for _ in range(20):
        for e in market.generate(2_000):
            kinds.add(type(e))
            if isinstance(e, MarketTrade):
                assert uuid.UUID(e.uuid).version == 4 and e.uuid == e.uuid.lower()
                assert e.size > 0 and _decimals(e.price) <= 9 and _decimals(e.size) <= 9
            elif isinstance(e, MarketQuote):
                assert e.ask_price > e.bid_price
        for sym in range(len(DEFAULT_SYMBOLS)):
            asks, bids = market.book(sym)
            assert 10 <= len(asks) <= 40 and 10 <= len(bids) <= 40
            assert asks[0][0] > bids[0][0]
            assert [p for p, _ in asks] == sorted(p for p, _ in asks)
            assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
            assert all(s > 0 and _decimals(p) <= 9 and _decimals(s) <= 9 for p, s in asks + bids)
    assert kinds == {MarketTrade, MarketQuote, MarketBookChange}
    assert any(
        _decimals(s) == 9
        for s, _ in [(e.size, 0) for e in market.generate(500) if isinstance(e, MarketTrade)]
    )


def test_the_mix_is_about_55_30_15() -> None:
    events = Market(DEFAULT_SYMBOLS, seed=9).generate(20_000)
    share = {
        k: sum(isinstance(e, k) for e in events) / len(events)
        for k in (MarketBookChange, MarketTrade, MarketQuote)
    }
    assert share[MarketBookChange] == pytest.approx(0.55, abs=0.02)
    assert share[MarketTrade] == pytest.approx(0.30, abs=0.02)
    assert share[MarketQuote] == pytest.approx(0.15, abs=0.02)


def test_default_symbols_include_a_prefix_of_another_id() -> None:
    assert any(a != b and b.startswith(a) for a in DEFAULT_SYMBOLS for b in DEFAULT_SYMBOLS)
    assert default_symbols(8)[:6] == DEFAULT_SYMBOLS and len(set(default_symbols(8))) == 8


async def test_two_simulators_with_one_seed_produce_the_same_trades_and_books() -> None:
    results = []
    for _ in range(2):
        config = SimulatorConfig(rate=0, seed=11)
        async with open_simulator(config) as sim:
            sim.step_market(3_000)
            trades = [
                (t.uuid, t.price, t.size, t.taker_side)
                for s in sim.truth.symbols
                for t in sim.truth.trades(s)
            ]
            books = [sim.truth.book(s) for s in sim.truth.symbols]
            results.append((trades, [(b.asks, b.bids) for b in books if b is not None]))
    assert results[0] == results[1]
    assert len(results[0][0]) > 500


async def test_trade_retention_bounds_history_and_truth_alike() -> None:
    async with open_simulator(SimulatorConfig(rate=0, trade_retention=1_000)) as sim:
        for _ in range(40):
            sim.step_market(1_000)
            await trio.sleep(0.001)  # distinct timestamps per batch
        kept = sim.truth.trades(DEFAULT_SYMBOLS[0])
        assert len(kept) == 1_000 < sim.truth.trades_produced(DEFAULT_SYMBOLS[0])
        log = sim.truth.logs[0]
        assert [log.time_of(b) for b in log.all()] == [t.time_exchange for t in kept]
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            day = kept[-1].time_exchange[:10]
            url = f"/v1/trades/{DEFAULT_SYMBOLS[0]}/history"
            r = await rest.get(url, params={"date": day, "limit": 5_000})
        rows = rest_trades_decoder.decode(r.content)
        assert rows == [t for t in kept if t.time_exchange[:10] == day]  # evicted ones are gone
