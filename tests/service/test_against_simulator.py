"""The whole service against the simulator on loopback, checked against its ground truth.

Each scenario runs the market, injects faults, then pauses the market and waits until the
service has settled; at that point every trade the market produced must have been delivered
exactly once, live or backfilled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
import trio

from coinfeed.config import TRANSPORTS, Secret, Settings
from coinfeed.core.book import BookState
from coinfeed.core.events import GapEvent, TradeEvent
from coinfeed.observability.metrics import received_by_type
from coinfeed.service import Service
from coinfeed.simulator import Simulator, SimulatorConfig, open_simulator
from tests.helpers import SYMBOLS, MemorySink, SlowSink, running, truth_uuids, wait_for

# Every scenario runs once per WebSocket library; ids end in [trio-websocket] or [websockets].
pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


def trade_uuids(sink: MemorySink) -> list[str]:
    return [e.uuid for e in sink.events if isinstance(e, TradeEvent)]


async def settle_and_check_trades(sim: Simulator, service: Service, sink: MemorySink) -> None:
    """Pause the market, wait for recovery to finish, then compare with ground truth."""
    sim.pause_market()
    expected = truth_uuids(sim)
    assert expected, "the market produced no trades"
    with trio.move_on_after(20):
        while not (set(trade_uuids(sink)) >= expected and service.recovery.pending_backfills == 0):
            await trio.sleep(0.02)
    delivered = trade_uuids(sink)
    missing = expected - set(delivered)
    assert not missing, diagnose(sim, service, sink, missing)
    duplicates = [u for u, n in Counter(delivered).items() if n > 1]
    assert duplicates == []
    assert set(delivered) == expected


def diagnose(sim: Simulator, service: Service, sink: MemorySink, missing: set[str]) -> str:
    """What a failing completeness check needs to be understood from a CI log."""
    when = {t.uuid.lower(): (s, t.time_exchange) for s in SYMBOLS for t in sim.truth.trades(s)}
    gap_states = Counter(
        (e.data_type, e.reason, e.status) for e in sink.events if isinstance(e, GapEvent)
    )
    return (
        f"{len(missing)} trades never delivered, e.g. {sorted(when[u] for u in missing)[:5]}; "
        f"reconnects={service.connection.counters.reconnects} "
        f"recoveries={service.processor.counters.recoveries} gaps={dict(gap_states)} "
        f"pending_backfills={service.recovery.pending_backfills} "
        f"dropped={service.queue.dropped_total} sim={sim.stats}"
    )


async def scenario(
    sim: Simulator, steps: list[Callable[[], Awaitable[None] | None]], gap: float = 0.5
) -> None:
    for step in steps:
        await trio.sleep(gap)
        result = step()
        if result is not None:
            await result
    await trio.sleep(gap)


async def test_overload_drops_are_counted_repaired_and_queue_stays_bounded(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    sink = SlowSink(delay=0.02)
    async with running(
        make_settings,
        SimulatorConfig(rate=6000, seed=3),
        transport=transport,
        sink=sink,
        queue_capacity=20,
        sink_queue_capacity=50,
    ) as (sim, service, _):
        await trio.sleep(3)
        stats = service.queue.statistics()
        assert stats.dropped > 0, "the slow sink should have forced drops"
        assert stats.peak <= stats.capacity == 20
        sink.delay = 0
        await settle_and_check_trades(sim, service, sink)
        assert service.queue.statistics().peak <= 20
        # Dropped frames were received too: the metric counts them by their peeked type.
        received = received_by_type(service.processor.counters.received, service.queue)
        assert sum(received.values()) == service.status.frames_received
        queue = service.queue
        assert sum(queue.dropped_by_type.values()) + queue.unidentified_drops == queue.dropped_total
        gaps = [e for e in sink.events if isinstance(e, GapEvent) and e.data_type == "trade"]
        assert any(g.status == "recovered" for g in gaps)


async def test_book_gap_resubscribes_and_the_book_matches_ground_truth(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    symbol = SYMBOLS[0]
    async with running(make_settings, SimulatorConfig(rate=2000, seed=4), transport=transport) as (
        sim,
        service,
        sink,
    ):
        await trio.sleep(0.5)
        sim.faults.skip_next("book", symbol, 3)
        await wait_for(
            lambda: any(
                isinstance(e, GapEvent) and e.data_type == "book" and e.status == "recovered"
                for e in sink.events
            ),
            10,
            "the book gap to be recovered",
        )
        assert sim.stats.scope_messages >= 2  # unsubscribe + subscribe
        sim.pause_market()
        await trio.sleep(0.3)
        book = service.processor.books.get(symbol)
        assert book is not None and book.state is BookState.SYNCED
        truth = sim.truth.book(symbol)
        assert truth is not None
        asks, bids = book.top(1000)
        assert asks == [(lv.price, lv.size) for lv in truth.asks]
        assert bids == [(lv.price, lv.size) for lv in truth.bids]
        await settle_and_check_trades(sim, service, sink)


async def test_rest_429_retry_after_is_honoured_with_at_most_two_calls_in_flight(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with running(make_settings, SimulatorConfig(rate=3000, seed=5), transport=transport) as (
        sim,
        service,
        sink,
    ):
        await trio.sleep(0.5)
        sim.rest_faults.fail_next(2, status=429, retry_after=2)
        started = trio.current_time()
        for symbol in SYMBOLS:
            sim.faults.skip_next("trade", symbol, 2)
        await wait_for(
            lambda: (
                sum(
                    1
                    for e in sink.events
                    if isinstance(e, GapEvent)
                    and e.data_type == "trade"
                    and e.status == "recovered"
                )
                >= 3
            ),
            20,
            "the three trade gaps to be recovered",
        )
        elapsed = trio.current_time() - started
        assert elapsed >= 2.0, "recovery finished before Retry-After had passed"
        assert sim.stats.rest_by_status.get(429) == 2
        assert sim.stats.rest_peak_in_flight <= 2
        await settle_and_check_trades(sim, service, sink)
        assert sim.stats.rest_peak_in_flight <= 2


async def test_rejected_key_exits_3_quickly_after_at_most_two_attempts(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with open_simulator(SimulatorConfig(rate=500, keys=frozenset({"good-key"}))) as sim:
        settings = make_settings(
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            symbols=SYMBOLS,
            api_key=Secret("wrong-key"),
            transport=transport,
        )
        service = Service.build(settings, sinks=[MemorySink()], handle_signals=False)
        started = trio.current_time()
        with trio.fail_after(10):
            code = await service.run()
        assert code == 3
        assert trio.current_time() - started < 5
        assert sim.stats.ws_connections_total <= 2
        assert service.status.fatal is not None
        assert "wrong-key" not in service.status.fatal.message


async def test_reconnect_frames_and_abrupt_disconnects_lose_no_trades(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with running(make_settings, SimulatorConfig(rate=3000, seed=6), transport=transport) as (
        sim,
        service,
        sink,
    ):
        await scenario(sim, [lambda: sim.send_reconnect_all(1), sim.disconnect_all], gap=1.5)
        await wait_for(lambda: service.status.connected, 5, "reconnected")
        reasons = service.connection.counters.reconnects
        assert reasons.get("server_reconnect", 0) >= 1
        assert sum(reasons.values()) >= 2
        await settle_and_check_trades(sim, service, sink)
        reconnect_gaps = [
            e
            for e in sink.events
            if isinstance(e, GapEvent) and e.reason == "reconnect" and e.data_type == "trade"
        ]
        assert reconnect_gaps and {g.status for g in reconnect_gaps} >= {"pending", "recovered"}


async def test_stalled_stream_reconnects_after_stale_after(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    # stale_after must exceed the 1 s heartbeat interval, or a quiet market would flap.
    async with running(
        make_settings, SimulatorConfig(rate=1000, seed=7), transport=transport, stale_after=1.5
    ) as (
        sim,
        service,
        sink,
    ):
        await trio.sleep(0.5)
        sim.stall(4)
        await wait_for(
            lambda: service.connection.counters.reconnects.get("stale", 0) >= 1,
            5,
            "the watchdog to reconnect",
        )
        await wait_for(lambda: service.status.connected, 5, "reconnected")
        await settle_and_check_trades(sim, service, sink)


async def test_bad_frames_are_counted_by_reason_and_the_service_goes_on(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with running(
        make_settings,
        SimulatorConfig(rate=1000, seed=8),
        transport=transport,
        max_frame_bytes=64 * 1024,
    ) as (sim, service, sink):
        await trio.sleep(0.3)
        for kind in ("not_json", "wrong_price", "sequence_string", "unknown_type"):
            sim.inject_malformed_all(kind)
        sim.inject_oversized_all(200 * 1024)
        await wait_for(
            lambda: sum(service.processor.counters.invalid.values()) >= 5,
            5,
            "the bad frames to be counted",
        )
        assert service.processor.counters.invalid == {
            "not_json": 1,
            "invalid_schema": 2,
            "unknown_type": 1,
            "too_large": 1,
        }
        assert service.status.connected
        await settle_and_check_trades(sim, service, sink)


async def test_prices_reach_the_sink_with_the_digits_sent(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with running(make_settings, SimulatorConfig(rate=1000, seed=9), transport=transport) as (
        sim,
        _service,
        sink,
    ):
        await trio.sleep(1)
        sim.pause_market()
        await trio.sleep(0.2)
        by_uuid = {t.uuid.lower(): t for s in SYMBOLS for t in sim.truth.trades(s)}
        live = [e for e in sink.events if isinstance(e, TradeEvent)]
        assert live
        for event in live:
            truth = by_uuid[event.uuid]
            assert isinstance(event.price, Decimal)
            assert str(event.price) == str(truth.price)
            assert str(event.size) == str(truth.size)


async def test_a_frame_far_over_the_limit_reconnects_without_losing_trades(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    # Frames up to max_frame_bytes + 1 MiB are read and counted as too_large; one far beyond
    # that is refused by the WebSocket library (1009), which costs a reconnect, not memory.
    async with running(
        make_settings,
        SimulatorConfig(rate=1000, seed=10),
        transport=transport,
        max_frame_bytes=64 * 1024,
    ) as (sim, service, sink):
        await trio.sleep(0.3)
        sim.inject_oversized_all(3 * 1024 * 1024)
        await wait_for(
            lambda: sum(service.connection.counters.reconnects.values()) >= 1, 5, "a reconnect"
        )
        assert "too_large" not in service.processor.counters.invalid
        await wait_for(lambda: service.status.connected, 5, "reconnected")
        await settle_and_check_trades(sim, service, sink)


async def test_gap_events_name_windows_that_hold_the_trades_they_missed(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with running(
        make_settings, SimulatorConfig(rate=3000, seed=9, faults="gaps"), transport=transport
    ) as (sim, service, sink):
        await trio.sleep(3)
        await settle_and_check_trades(sim, service, sink)
    gaps = [e for e in sink.events if isinstance(e, GapEvent)]
    # Every pending gap has exactly one final event, with the same id.
    pending = Counter(g.id for g in gaps if g.status == "pending")
    final = Counter(g.id for g in gaps if g.status != "pending")
    assert pending and all(n == 1 for n in pending.values())
    assert set(pending) <= set(final) and all(n == 1 for n in final.values())
    for g in gaps:
        if g.reason == "sequence" and g.missing is not None and g.after_sequence is not None:
            assert g.before_sequence is not None
            assert g.before_sequence - g.after_sequence - 1 == g.missing
    windows: dict[str, list[tuple[str, str]]] = {}
    for g in gaps:
        if g.data_type == "trade" and g.status == "pending":
            assert g.window_start is not None and g.window_end is not None
            windows.setdefault(g.symbol_id, []).append((g.window_start, g.window_end))
    backfilled = [e for e in sink.events if isinstance(e, TradeEvent) and e.source == "rest"]
    assert backfilled, "the gaps profile should make trades arrive by REST"
    for t in backfilled:  # each trade the WebSocket missed lies in a window a gap named
        assert any(
            start <= t.time_exchange <= end for start, end in windows.get(t.symbol_id, [])
        ), (t.symbol_id, t.time_exchange, windows.get(t.symbol_id))
