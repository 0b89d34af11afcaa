"""Bars and interval book snapshots from a service running against the simulator."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.bars import parse_period
from coinfeed.core.events import BarEvent, BookTopEvent, ExrateEvent, OhlcvEvent, TradeEvent
from coinfeed.core.protocol import format_time, parse_time
from coinfeed.simulator import SimulatorConfig
from tests.helpers import SYMBOLS, running, samples, settle, wait_for

BarKey = tuple[str, str, str]


def reference_bars(trades: list[TradeEvent], period_id: str) -> dict[BarKey, tuple[object, ...]]:
    """Bars computed the plain way from stored trades: stable-sorted by exchange time, size-0
    markers left out."""
    seconds = parse_period(period_id).seconds
    grouped: dict[BarKey, list[TradeEvent]] = defaultdict(list)
    for trade in sorted(trades, key=lambda t: t.time_exchange):
        if trade.size == 0:
            continue
        epoch = int(parse_time(trade.time_exchange).timestamp())
        start = format_time(datetime.fromtimestamp(epoch - epoch % seconds, UTC))
        grouped[(trade.symbol_id, period_id, start)].append(trade)
    return {
        key: (
            group[0].price,
            max(t.price for t in group),
            min(t.price for t in group),
            group[-1].price,
            sum((t.size for t in group), Decimal(0)),
            len(group),
        )
        for key, group in grouped.items()
    }


async def test_bars_equal_bars_recomputed_from_the_stored_trades_across_gaps_and_backfills(
    make_settings: Callable[..., Settings],
) -> None:
    config = SimulatorConfig(rate=1500, faults="gaps", seed=11)
    async with running(make_settings, config, bars=("1SEC", "1MIN"), bar_grace=0.5) as (
        sim, service, sink,
    ):  # fmt: skip
        # REST answers come late, so backfilled trades reach bars already emitted.
        sim.rest_faults.delay_next(10_000, seconds=1.5)
        await wait_for(
            lambda: service.processor.counters.recoveries.get(("trade", "recovered"), 0) >= 3,
            20,
            "three trade gaps backfilled",
        )
        await trio.sleep(1.5)
        await settle(sim, service)
    trades = [e for e in sink.events if isinstance(e, TradeEvent)]
    bars = [e for e in sink.events if isinstance(e, BarEvent)]
    final: dict[BarKey, BarEvent] = {}
    for bar in bars:
        key = (bar.symbol_id, bar.period_id, bar.time_period_start)
        if key not in final or bar.revision > final[key].revision:
            final[key] = bar
    for period_id in ("1SEC", "1MIN"):
        expected = reference_bars(trades, period_id)
        got = {
            key: (b.open, b.high, b.low, b.close, b.volume, b.trades_count)
            for key, b in final.items()
            if key[1] == period_id
        }
        assert got == expected, period_id
    first_counts = {
        (b.symbol_id, b.period_id, b.time_period_start): b.trades_count
        for b in bars
        if b.revision == 0
    }
    revised_by_backfill = [
        key for key, b in final.items() if b.trades_count > first_counts[key] and b.complete
    ]
    assert revised_by_backfill, "no bar was revised by a late backfill"
    # Revisions of one bar come in order, each numbered one more than the last.
    seen: dict[BarKey, int] = {}
    for bar in bars:
        key = (bar.symbol_id, bar.period_id, bar.time_period_start)
        assert bar.revision == seen.get(key, -1) + 1
        seen[key] = bar.revision
    # The first minute began before coinfeed was subscribed: it is not complete.
    first_minute = min(k for k in final if k[1] == "1MIN")
    assert final[first_minute].complete is False


async def test_book_tops_come_every_interval_and_equal_api_books_at_that_moment(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(
        make_settings,
        SimulatorConfig(rate=1000, seed=3),
        book_snapshots=("3@250ms",),
        http=ListenAddress("127.0.0.1", 0),
    ) as (sim, service, sink):
        await settle(sim, service)  # every book synced, the market paused
        assert service.http_url is not None
        first = len(sink.events)
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            answers = {
                symbol_id: json.loads(
                    (await client.get(f"/api/books/{symbol_id}?depth=3")).text, parse_float=Decimal
                )
                for symbol_id in SYMBOLS
            }
            started = datetime.now(UTC).timestamp()
            await trio.sleep(2.0)
            stopped = datetime.now(UTC).timestamp()
            metrics = samples((await client.get("/metrics")).text)
    # Read after the shutdown drained the sinks; count the moments of the 2 s watched.
    tops = [e for e in sink.events[first:] if isinstance(e, BookTopEvent)]
    for symbol_id in SYMBOLS:
        mine = [t for t in tops if t.symbol_id == symbol_id]
        watched = [t for t in mine if started <= parse_time(t.time).timestamp() <= stopped]
        assert 7 <= len(watched) <= 9, (symbol_id, len(watched))  # 2 s / 250 ms = 8, +-1
        moments = [parse_time(t.time).timestamp() for t in mine]
        assert all(round(m * 1000) % 250 == 0 for m in moments)
        assert all(abs(b - a - 0.25) < 1e-6 for a, b in itertools.pairwise(moments))
        answer = answers[symbol_id]
        for top in mine:
            assert [[p, s] for p, s in top.asks] == answer["asks"]
            assert [[p, s] for p, s in top.bids] == answer["bids"]
            assert top.sequence == answer["sequence"] and top.depth == 3
    assert metrics[("coinfeed_book_top_skipped_total", (("reason", "behind"),))] == 0


async def test_coinapi_ohlcv_and_exrate_arrive_exactly_as_the_simulator_sent_them(
    make_settings: Callable[..., Settings],
) -> None:
    config = SimulatorConfig(rate=1000, seed=8, ohlcv_interim_interval=0.5, exrate_interval=0.2)
    async with running(
        make_settings, config, types=("trade", "ohlcv", "exrate"), ohlcv_periods=("1SEC",)
    ) as (sim, service, sink):
        await trio.sleep(3.2)
        sim.pause_market()
        await trio.sleep(1.3)  # the last period closes by the clock; a last rate goes out
        truth_bars = {s: sim.truth.ohlcv(s, "1SEC") for s in SYMBOLS}
        truth_rates = {
            pair: sim.truth.exrate(*pair.split("/")) for pair in ("BTC/USD", "BTC/USDT", "ETH/USD")
        }
        await wait_for(
            lambda: all(q.depth == 0 for q in service.queue_statistics().values()), 5, "drained"
        )
        await trio.sleep(0.6)  # a sink flush interval
    assert service.processor.counters.unrequested == 0  # the exrate subscribe widened nothing
    ohlcv = [e for e in sink.events if isinstance(e, OhlcvEvent)]
    final = {(e.symbol_id, e.time_period_start): e for e in ohlcv}  # the last one per period
    for symbol_id, bars in truth_bars.items():
        assert len(bars) >= 3, symbol_id
        for bar in bars:
            got = final[(symbol_id, bar.time_period_start)]
            assert (got.price_open, got.price_high, got.price_low, got.price_close) == (
                bar.price_open, bar.price_high, bar.price_low, bar.price_close,
            )  # fmt: skip
            assert (got.volume_traded, got.trades_count, got.period_id) == (
                bar.volume_traded, bar.trades_count, "1SEC",
            )  # fmt: skip
    assert len(ohlcv) > sum(len(bars) for bars in truth_bars.values())  # interim updates too
    rates = [e for e in sink.events if isinstance(e, ExrateEvent)]
    assert {e.symbol_id for e in rates} == set(truth_rates)
    for pair, truth in truth_rates.items():
        assert truth is not None
        sent = {e.time: e.rate for e in rates if e.symbol_id == pair}
        assert sent[truth.time] == truth.rate
