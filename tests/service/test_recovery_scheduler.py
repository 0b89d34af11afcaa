"""RecoveryScheduler against a fake REST client, in virtual time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import msgspec
import pytest
import trio

from coinfeed.core.controls import GapRecord, TradesRecovered, TradesUnrecovered, TradeWindow
from coinfeed.core.protocol import format_time
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.recovery import RecoveryScheduler
from coinfeed.rest import RestRetryable

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def window(symbol: str, start_s: float, end_s: float, missing: int | None = 1) -> TradeWindow:
    return TradeWindow(
        symbol,
        T0 + timedelta(seconds=start_s),
        T0 + timedelta(seconds=end_s),
        [GapRecord("trade", symbol, "sequence", missing)],
    )


def rest_trade(symbol: str, uuid: str) -> RestTrade:
    t = format_time(T0)
    return RestTrade(
        symbol_id=symbol,
        time_exchange=t,
        time_coinapi=t,
        uuid=uuid,
        price=Decimal("1"),
        size=Decimal("1"),
        taker_side="BUY",
    )


@attrs.define(eq=False)
class FakeRest:
    """Answers after ``delay``; fails with the scripted errors first. Tracks concurrency."""

    delay: float = 1.0
    failures: list[Exception] = attrs.field(factory=list)
    in_flight: int = 0
    peak: int = 0
    calls: list[tuple[str, datetime, datetime, float]] = attrs.field(factory=list)
    page_sizes: list[int] = attrs.field(factory=list)
    """Trades per answer, in order (then 1 each)."""

    async def trades_history(
        self, symbol_id: str, time_start: datetime, time_end: datetime, *, limit: int
    ) -> list[RestTrade]:
        self.calls.append((symbol_id, time_start, time_end, trio.current_time()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(self.delay)
            if self.failures:
                raise self.failures.pop(0)
            size = self.page_sizes.pop(0) if self.page_sizes else 1
            return [
                rest_trade(symbol_id, f"{symbol_id}-{len(self.calls)}-{i}") for i in range(size)
            ]
        finally:
            self.in_flight -= 1

    async def current_book(self, symbol_id: str, *, limit_levels: int) -> Any:
        return None


def scheduler(rest: FakeRest, delivered: list[object], **kw: Any) -> RecoveryScheduler:
    return RecoveryScheduler(
        rest=rest,  # type: ignore[arg-type]
        deliver=delivered.append,
        resubscribe=lambda _s: None,
        **kw,
    )


async def run_until(sched: RecoveryScheduler, done: Any, limit: float = 600) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.run)
        with trio.move_on_after(limit):
            while not done():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_never_more_than_concurrency_calls_in_flight(autojump_clock: trio.abc.Clock) -> None:
    rest, delivered = FakeRest(delay=1.0), []
    sched = scheduler(rest, delivered, concurrency=2, pause=0.0)
    for i in range(10):
        sched.request_backfill_nowait(window(f"S{i}", 0, 1))
    await run_until(sched, lambda: len(delivered) == 10)
    assert rest.peak == 2
    assert len(rest.calls) == 10
    assert all(isinstance(d, TradesRecovered) for d in delivered)


async def test_every_worker_wakes_for_work_that_arrives_after_all_went_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Both workers idle first (nothing to do), then a burst arrives: both must take part.
    # A wake-up event replaced by the second worker to go idle left the first asleep for good,
    # halving recovery for the rest of the run.
    rest, delivered = FakeRest(delay=1.0), []
    sched = scheduler(rest, delivered, concurrency=2, pause=0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.run)
        await trio.sleep(1.0)  # both workers wait for work
        for i in range(10):
            sched.request_backfill_nowait(window(f"S{i}", 0, 1))
        with trio.move_on_after(60):
            while len(delivered) < 10:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert rest.peak == 2
    assert rest.calls[-1][3] - rest.calls[0][3] < 5.0  # 10 calls of 1 s on two workers


async def test_overlapping_windows_of_a_symbol_merge_into_one_call(
    autojump_clock: trio.abc.Clock,
) -> None:
    rest, delivered = FakeRest(), []
    sched = scheduler(rest, delivered)
    sched.request_backfill_nowait(window("S", 0, 10, missing=2))
    sched.request_backfill_nowait(window("S", 5, 20, missing=3))
    sched.request_backfill_nowait(window("S", 100, 110, missing=1))  # disjoint
    assert sched.pending == 2
    await run_until(sched, lambda: len(delivered) == 2)
    spans = sorted((c[1], c[2]) for c in rest.calls)
    assert spans == [
        (T0, T0 + timedelta(seconds=20)),
        (T0 + timedelta(seconds=100), T0 + timedelta(seconds=110)),
    ]
    merged = next(
        d for d in delivered if isinstance(d, TradesRecovered) and len(d.window.gaps) == 2
    )
    assert merged.window.expected_missing == 5


async def test_a_later_due_window_does_not_postpone_a_pending_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    rest, delivered = FakeRest(delay=0.1), []
    sched = scheduler(rest, delivered, pause=0.0)
    first = window("S", 0, 10)
    first.not_before = trio.current_time() + 2
    sched.request_backfill_nowait(first)

    async def reconnect_storm() -> None:
        # A new overlapping window, due 2 s later, every second (like repeated reconnects).
        for i in range(1, 6):
            await trio.sleep(1)
            later = window("S", 0, 10 + i)
            later.not_before = trio.current_time() + 2
            sched.request_backfill_nowait(later)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconnect_storm)
        await run_until(sched, lambda: bool(delivered), limit=30)
    assert rest.calls[0][3] <= 2.1, "the first window was postponed by later ones"


async def test_retry_after_holds_every_worker_back(autojump_clock: trio.abc.Clock) -> None:
    rest = FakeRest(delay=0.1, failures=[RestRetryable("HTTP 429", status=429, retry_after=7)])
    delivered: list[object] = []
    sched = scheduler(rest, delivered, concurrency=2, pause=0.0)
    sched.request_backfill_nowait(window("A", 0, 1))
    await trio.sleep(0.05)
    sched.request_backfill_nowait(window("B", 0, 1))
    await run_until(sched, lambda: len(delivered) == 2)
    first_failure_end = rest.calls[0][3] + 0.1
    later = [c[3] for c in rest.calls[1:] if c[3] > first_failure_end]
    # Every call after the 429 waited for its Retry-After of 7 s.
    assert later and all(t >= first_failure_end + 7 - 1e-6 for t in later)


async def test_gives_up_after_max_attempts_and_reports_unrecovered(
    autojump_clock: trio.abc.Clock,
) -> None:
    failures: list[Exception] = [RestRetryable("HTTP 503", status=503) for _ in range(10)]
    rest, delivered = FakeRest(delay=0.1, failures=failures), []
    sched = scheduler(rest, delivered, max_attempts=3, pause=0.0)
    sched.request_backfill_nowait(window("S", 0, 1))
    await run_until(sched, lambda: bool(delivered))
    assert len(rest.calls) == 3
    assert len(delivered) == 1 and isinstance(delivered[0], TradesUnrecovered)
    assert "503" in delivered[0].error


async def test_at_the_pending_cap_windows_grow_coarser_instead_of_being_refused(
    autojump_clock: trio.abc.Clock,
) -> None:
    sched = scheduler(FakeRest(), [], pending_max=3)
    # One window per symbol is always taken (bounded by the subscribed symbols): a reconnect
    # with 2,000 symbols must not refuse 1,000 of them.
    for i in range(5):
        sched.request_backfill_nowait(window(f"S{i}", 0, 1))
    assert sched.pending == 5
    # Over the cap, a disjoint window of a symbol widens its pending one.
    sched.request_backfill_nowait(window("S0", 100, 101, missing=2))
    assert sched.pending == 5
    [s0] = sched._windows["S0"]
    assert (s0.start, s0.end, s0.expected_missing) == (T0, T0 + timedelta(seconds=101), 3)
    assert sched.counters.refused == 0


async def test_resync_is_retried_until_a_snapshot_then_gives_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    asked: list[str] = []
    delivered: list[object] = []
    sched = RecoveryScheduler(
        rest=FakeRest(),  # type: ignore[arg-type]
        deliver=delivered.append,
        resubscribe=asked.append,
        max_attempts=3,
        resync_timeout=10,
        interim_books=False,
    )
    assert sched.request_resync_nowait("S")
    assert sched.request_resync_nowait("S")  # de-duplicated while pending
    assert asked == ["S"]
    await run_until(sched, lambda: bool(delivered), limit=100)
    assert asked == ["S", "S", "S"]
    assert [type(d).__name__ for d in delivered] == ["ResyncFailed"]
    assert sched.pending == 0


async def test_a_long_window_is_fetched_and_handed_over_page_by_page(
    autojump_clock: trio.abc.Clock,
) -> None:
    from coinfeed.recovery import PAGE_LIMIT

    rest, delivered = FakeRest(delay=0.1, page_sizes=[PAGE_LIMIT, PAGE_LIMIT, 7]), []
    sched = scheduler(rest, delivered, pause=0.0)
    sched.request_backfill_nowait(window("S", 0, 3600, missing=None))
    await run_until(sched, lambda: any(getattr(d, "final", False) for d in delivered))
    pages = [d for d in delivered if isinstance(d, TradesRecovered)]
    assert [(len(p.trades), p.final) for p in pages] == [
        (PAGE_LIMIT, False),
        (PAGE_LIMIT, False),
        (7, True),
    ]
    # Each next page starts at the last trade of the previous one (inclusive; dedup drops it).
    assert [c[1] for c in rest.calls][1:] == [T0, T0]
    assert len(rest.calls) == 3


async def test_recovered_data_waits_while_the_processor_queue_is_backed_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    from functools import partial

    from coinfeed.framequeue import FrameQueue

    queue = FrameQueue(10)
    sched = RecoveryScheduler(
        rest=FakeRest(delay=0.1),  # type: ignore[arg-type]
        deliver=queue.put_control_nowait,
        resubscribe=lambda _s: None,
        pause=0.0,
        wait_for_room=partial(queue.wait_control_room, 2),
    )
    for i in range(6):
        sched.request_backfill_nowait(window(f"S{i}", 0, 1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.run)
        await trio.sleep(10)
        assert queue.statistics().control_items == 2  # nobody consumed: the workers wait
        taken, _ = queue.take_nowait()
        assert len(taken) == 2
        await trio.sleep(10)
        assert queue.statistics().control_items == 2
        nursery.cancel_scope.cancel()


async def test_a_window_cancelled_mid_fetch_is_still_reported_unfinished(
    autojump_clock: trio.abc.Clock,
) -> None:
    rest, delivered = FakeRest(delay=5.0), []
    sched = scheduler(rest, delivered, pause=0.0)
    sched.request_backfill_nowait(window("S", 0, 1))
    sched.request_backfill_nowait(window("T", 0, 1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.run)
        await trio.sleep(1)  # both fetches in flight
        assert sched.pending_backfills == 0
        nursery.cancel_scope.cancel()
    assert delivered == []
    assert sorted(w.symbol_id for w in sched.unfinished_windows()) == ["S", "T"]


@attrs.define(eq=False)
class HostileRest(FakeRest):
    """A full first page whose last trade has a time that is not one, then a short page."""

    async def trades_history(
        self, symbol_id: str, time_start: datetime, time_end: datetime, *, limit: int
    ) -> list[RestTrade]:
        self.calls.append((symbol_id, time_start, time_end, trio.current_time()))
        if len(self.calls) > 1:
            return [rest_trade(symbol_id, "later")]
        good = [rest_trade(symbol_id, f"good-{i}") for i in range(limit - 2)]
        negative = msgspec.structs.replace(rest_trade(symbol_id, "negative"), price=Decimal(-1))
        bad_time = msgspec.structs.replace(
            rest_trade(symbol_id, "bad-time"), time_exchange="not-a-time"
        )
        return [*good, negative, bad_time]


async def test_a_rest_page_with_impossible_values_is_filtered_and_paging_goes_on(
    autojump_clock: trio.abc.Clock, monkeypatch: Any
) -> None:
    import coinfeed.recovery

    monkeypatch.setattr(coinfeed.recovery, "PAGE_LIMIT", 5)
    rest, delivered = HostileRest(delay=0.0), []
    sched = scheduler(rest, delivered, pause=0.0)
    sched.request_backfill_nowait(window("S", 0, 10))
    await run_until(sched, lambda: any(getattr(d, "final", False) for d in delivered), limit=30)
    pages = [d for d in delivered if isinstance(d, TradesRecovered)]
    uuids = [t.uuid for page in pages for t in page.trades]
    assert uuids == ["good-0", "good-1", "good-2", "later"]
    # The next page starts at the last valid trade's time, not at the impossible one.
    assert rest.calls[1][1] == T0
    assert sched.counters.invalid_trades == 2


@attrs.define(eq=False)
class OrderedRest(FakeRest):
    """Records which kind of call came when."""

    order: list[str] = attrs.field(factory=list)

    async def trades_history(
        self, symbol_id: str, time_start: datetime, time_end: datetime, *, limit: int
    ) -> list[RestTrade]:
        self.order.append(f"trades {symbol_id}")
        return await super().trades_history(symbol_id, time_start, time_end, limit=limit)

    async def current_book(self, symbol_id: str, *, limit_levels: int) -> Any:
        self.order.append(f"book {symbol_id}")
        await trio.sleep(self.delay)
        return None


async def test_trade_windows_are_fetched_before_interim_books(
    autojump_clock: trio.abc.Clock,
) -> None:
    rest, delivered = OrderedRest(delay=1.0), []
    sched = scheduler(rest, delivered, concurrency=1, pause=0.0, interim_books=True)
    for i in range(3):
        assert sched.request_resync_nowait(f"B{i}")
    sched.request_backfill_nowait(window("T", 0, 1))
    await run_until(sched, lambda: len(rest.order) == 4, limit=30)
    # Trades the WebSocket missed are lost without REST; an interim book is a convenience.
    assert rest.order[0] == "trades T"


async def test_the_oldest_pending_gap_has_an_age(autojump_clock: trio.abc.Clock) -> None:
    rest, delivered = FakeRest(delay=100.0), []
    sched = scheduler(rest, delivered, concurrency=1, pause=0.0)
    assert sched.oldest_pending_age() is None
    first = window("A", 0, 1)
    first.opened_at = trio.current_time()
    sched.request_backfill_nowait(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.run)
        await trio.sleep(30)
        second = window("B", 0, 1)
        second.opened_at = trio.current_time()
        sched.request_backfill_nowait(second)
        await trio.sleep(10)
        # A is being fetched (in flight), B waits: the age is A's.
        assert sched.oldest_pending_age() == pytest.approx(40)
        nursery.cancel_scope.cancel()
