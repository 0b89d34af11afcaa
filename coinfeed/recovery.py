"""One recovery scheduler for the whole process: backfills trades, resyncs books.

How this works:
- The processor finds a gap and calls a ``request_*_nowait`` method (never blocks). Trade
  windows are merged per symbol while pending; at the ``pending_max`` cap a symbol's new window
  widens its pending one instead of adding another, so the work stays bounded (by the cap plus
  one window per symbol) and no trade window is refused. A book resync is pending at most once
  per symbol; one over the cap is refused, and the processor reports that gap ``unrecovered``
  at once (nothing unbounded, nothing silent).
- Trade windows go before interim book fetches: missed trades exist nowhere else.
- ``recovery_concurrency`` worker tasks take due work. Each REST call is one of at most that
  many in flight (a ``CapacityLimiter``), every worker pauses ``pause`` seconds after a call,
  and a ``Retry-After`` from any answer holds back every worker until it has passed.
- Retryable failures are retried with capped exponential backoff and full jitter, at most
  ``max_attempts`` times; then the work is reported as failed.
- Results go back to the processor as control items in the frame queue (it owns dedup and
  events), so recovered data is ordered with live data and de-duplicated in one place.
- A book resync is a WebSocket scope change (unsubscribe + subscribe, see ``connection.py``);
  if no fresh snapshot arrives within ``resync_timeout`` it is requested again, up to
  ``max_attempts`` times. Optionally the REST ``/current`` book is fetched once per resync as an
  unsequenced interim view.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
import trio
from loguru import logger

from coinfeed.core.backoff import full_jitter
from coinfeed.core.controls import (
    ControlItem,
    InterimBook,
    ResyncFailed,
    TradesRecovered,
    TradesUnrecovered,
    TradeWindow,
)
from coinfeed.core.decoding import FUTURE_TOLERANCE, trade_problem
from coinfeed.core.protocol import parse_time
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.rest import (
    RestAuthError,
    RestBadRequest,
    RestClient,
    RestError,
    RestRetryable,
    split_at_utc_midnight,
)

PAGE_LIMIT: Final = 10_000
MAX_PAGES: Final = 100
MERGE_SLACK: Final = timedelta(seconds=5)
"""Pending windows of a symbol closer than this are fetched as one: a few seconds of trades
fetched twice (dedup drops them) cost less than one more REST call under a burst of gaps."""


@attrs.define(slots=True)
class _Resync:
    attempt: int
    deadline: float
    opened_at: float


@attrs.define(slots=True)
class RecoveryCounters:
    """Plain counters read by the metrics collector."""

    in_flight: int = 0
    refused: int = 0
    coarsened: int = 0
    """Windows merged into a wider pending one because pending work was at its cap."""
    rest_calls: int = 0
    invalid_trades: int = 0
    """REST trades skipped for impossible values (a time that is not one, a negative price)."""


@attrs.define(slots=True, eq=False)
class RecoveryScheduler:
    """Owns every REST call and resync of the process (see module docstring)."""

    rest: RestClient
    deliver: Callable[[ControlItem], None]
    """Hands a control item to the processor (``FrameQueue.put_control_nowait``)."""
    resubscribe: Callable[[str], None]
    """Asks the connection to unsubscribe and resubscribe one symbol (batched there)."""
    concurrency: int = 2
    max_attempts: int = 5
    pause: float = 0.2
    pending_max: int = 1000
    resync_timeout: float = 10.0
    interim_books: bool = True
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    observe_seconds: Callable[[float], None] = lambda _seconds: None
    wait_for_room: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
    """Waits until the processor's queue can take more recovered data (backpressure)."""
    counters: RecoveryCounters = attrs.field(factory=RecoveryCounters)
    _windows: dict[str, list[TradeWindow]] = attrs.field(factory=dict, init=False)
    _book_fetches: set[str] = attrs.field(factory=set, init=False)
    _resyncs: dict[str, _Resync] = attrs.field(factory=dict, init=False)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _idle_workers: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False
    )
    _resume_at: float = attrs.field(default=0.0, init=False)
    _rng: random.Random = attrs.field(factory=random.Random, init=False)
    _in_flight: list[TradeWindow] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.concurrency)

    # -- requests (processor side, never block) ---------------------------------------------

    @property
    def pending(self) -> int:
        """Work items waiting: trade windows, interim book fetches and unconfirmed resyncs."""
        return self.pending_backfills + len(self._book_fetches) + len(self._resyncs)

    def unfinished_windows(self) -> list[TradeWindow]:
        """Trade windows pending or being fetched (after a cancel: the abandoned ones), so
        shutdown can report their gaps instead of leaving them ``pending`` forever."""
        return [*self._in_flight, *(w for ws in self._windows.values() for w in ws)]

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest gap still waiting for recovery was found (trade windows
        pending or being fetched, book resyncs), or None when nothing waits."""
        opened = [w.opened_at for ws in self._windows.values() for w in ws]
        opened += [w.opened_at for w in self._in_flight]
        opened += [resync.opened_at for resync in self._resyncs.values()]
        known = [at for at in opened if at is not None]
        return trio.current_time() - min(known) if known else None

    @property
    def pending_backfills(self) -> int:
        """Trade windows waiting to be fetched (in-flight ones are not counted)."""
        return sum(len(ws) for ws in self._windows.values())

    def request_backfill_nowait(self, window: TradeWindow) -> None:
        """Queue a trade window, merged with an overlapping pending one of its symbol.

        Never refused: at the ``pending_max`` cap a symbol's new window widens its pending one
        instead (a coarser window costs a longer REST fetch; refusing loses the trades), and a
        symbol without one always gets one, so the work stays bounded by the symbols.
        """
        pending = self._windows.setdefault(window.symbol_id, [])
        for existing in pending:
            # Merging must never postpone pending work: under a reconnect storm each new
            # window is due later, and absorbing it would defer the fetch forever.
            if (
                window.start <= existing.end + MERGE_SLACK
                and window.end >= existing.start - MERGE_SLACK
                and window.not_before <= existing.not_before
            ):
                existing.absorb(window)
                self._idle_workers.unpark_all()
                return
        if pending and self.pending >= self.pending_max:
            coarser = pending[-1]
            due = coarser.not_before <= trio.current_time()
            not_before = coarser.not_before
            coarser.absorb(window)
            if due:  # already due: fetch it now, as above
                coarser.not_before = not_before
            self.counters.coarsened += 1
            self._idle_workers.unpark_all()
            return
        pending.append(window)
        self._idle_workers.unpark_all()

    def request_resync_nowait(self, symbol_id: str) -> bool:
        """Resubscribe ``symbol_id`` to get a fresh snapshot; False if over the cap."""
        if symbol_id in self._resyncs:
            return True
        if self.pending >= self.pending_max:
            self.counters.refused += 1
            return False
        now = trio.current_time()
        self._resyncs[symbol_id] = _Resync(1, now + self.resync_timeout, now)
        self.resubscribe(symbol_id)
        if self.interim_books:
            self._book_fetches.add(symbol_id)
        self._idle_workers.unpark_all()
        return True

    def book_synced(self, symbol_id: str) -> None:
        """A fresh snapshot arrived: the resync for ``symbol_id`` is done."""
        self._resyncs.pop(symbol_id, None)
        self._book_fetches.discard(symbol_id)

    def connection_reset(self) -> None:
        """A new connection sends every snapshot again: pending resyncs are moot."""
        self._resyncs.clear()
        self._book_fetches.clear()

    # -- the tasks --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers and the resync timer until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker)
            nursery.start_soon(self._resync_timer)

    async def _resync_timer(self) -> None:
        while True:
            await trio.sleep(min(1.0, self.resync_timeout / 4))
            now = trio.current_time()
            for symbol_id, resync in list(self._resyncs.items()):
                if now < resync.deadline:
                    continue
                if resync.attempt >= self.max_attempts:
                    del self._resyncs[symbol_id]
                    self._book_fetches.discard(symbol_id)
                    logger.bind(symbol_id=symbol_id, attempts=resync.attempt).warning(
                        "book resync gave up"
                    )
                    self.deliver(ResyncFailed(symbol_id))
                    continue
                resync.attempt += 1
                resync.deadline = now + self.resync_timeout
                logger.bind(symbol_id=symbol_id, attempt=resync.attempt).info("book resync retry")
                self.resubscribe(symbol_id)

    async def _worker(self) -> None:
        while True:
            job = self._next_due_job()
            if job is None:
                await self._wait_for_work()
                continue
            if isinstance(job, TradeWindow):
                self._in_flight.append(job)
                await self._respect_retry_after()
                await self._backfill(job)
                # Not reached when cancelled: unfinished_windows() still reports the window.
                self._in_flight.remove(job)
            else:
                await self._respect_retry_after()
                await self._fetch_interim_book(job)
            if self.pause > 0:
                await trio.sleep(self.pause)

    async def _wait_for_work(self) -> None:
        # Every idle worker parks in the one lot and new work wakes them all: a per-wait event
        # replaced by the next idle worker left the previous one asleep for good.
        due = [w.not_before for ws in self._windows.values() for w in ws]
        with trio.move_on_at(min(due) if due else float("inf")):
            await self._idle_workers.park()

    def _next_due_job(self) -> TradeWindow | str | None:
        # Trade windows first: trades the WebSocket missed exist nowhere else, while an interim
        # book is a convenience until the next snapshot.
        now = trio.current_time()
        for symbol_id, windows in self._windows.items():
            for window in windows:
                if window.not_before <= now:
                    windows.remove(window)
                    if not windows:
                        del self._windows[symbol_id]
                    return window
        if self._book_fetches:
            return self._book_fetches.pop()
        return None

    async def _respect_retry_after(self) -> None:
        # Another worker may push _resume_at further while this one sleeps: re-check.
        while trio.current_time() < self._resume_at:  # noqa: ASYNC110
            await trio.sleep_until(self._resume_at)

    async def _backfill(self, window: TradeWindow) -> None:
        started = trio.current_time()
        try:
            await self._fetch_window(window)
        except RestRetryable as exc:
            self._retry_later(window, exc)
            return
        except (RestAuthError, RestBadRequest, RestError) as exc:
            self._give_up(window, str(exc))
            return
        self.observe_seconds(trio.current_time() - started)

    async def _fetch_window(self, window: TradeWindow) -> None:
        """Fetch page by page, handing each page over as it arrives (memory stays one page)."""
        pending: list[RestTrade] | None = None
        for day_start, day_end in split_at_utc_midnight(window.start, window.end):
            start = day_start
            for _ in range(MAX_PAGES):
                async with self._limiter:
                    self.counters.in_flight += 1
                    self.counters.rest_calls += 1
                    try:
                        page = await self.rest.trades_history(
                            window.symbol_id, start, day_end, limit=PAGE_LIMIT
                        )
                    finally:
                        self.counters.in_flight -= 1
                if pending is not None:
                    await self._hand_over(TradesRecovered(window, pending, final=False))
                pending = self._plausible(window.symbol_id, page)
                if len(page) < PAGE_LIMIT or not pending:
                    break
                # A full page: continue from the last trade's time (inclusive; dedup drops the
                # overlap). Pause between pages like between any other calls.
                start = parse_time(pending[-1].time_exchange)
                await trio.sleep(self.pause)
        await self._hand_over(TradesRecovered(window, pending or [], final=True))

    def _plausible(self, symbol_id: str, page: list[RestTrade]) -> list[RestTrade]:
        """``page`` without trades whose values are impossible (they are counted and logged)."""
        not_after = datetime.now(UTC) + FUTURE_TOLERANCE
        kept: list[RestTrade] = []
        first_problem = None
        for trade in page:
            problem = trade_problem(trade, not_after)
            if problem is None:
                kept.append(trade)
            elif first_problem is None:
                first_problem = problem
        if first_problem is not None:
            self.counters.invalid_trades += len(page) - len(kept)
            logger.bind(
                symbol_id=symbol_id, skipped=len(page) - len(kept), problem=first_problem
            ).warning("REST trades with impossible values skipped")
        return kept

    async def _hand_over(self, item: ControlItem) -> None:
        """Deliver once the processor has room: recovered data never piles up in its queue."""
        await self.wait_for_room()
        self.deliver(item)

    def _retry_later(self, window: TradeWindow, exc: RestRetryable) -> None:
        if exc.retry_after is not None:
            self._resume_at = max(self._resume_at, trio.current_time() + exc.retry_after)
        window.attempt += 1
        if window.attempt >= self.max_attempts:
            self._give_up(window, str(exc))
            return
        delay = self._backoff(window.attempt)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        window.not_before = trio.current_time() + delay
        logger.bind(
            symbol_id=window.symbol_id,
            attempt=window.attempt,
            delay=round(delay, 3),
            reason=str(exc),
        ).info("backfill retry")
        self.request_backfill_nowait(window)

    def retry_incomplete(self, window: TradeWindow) -> bool:
        """The processor found fewer new trades than missing: fetch again later, if allowed."""
        window.attempt += 1
        if window.attempt >= self.max_attempts:
            return False
        window.not_before = trio.current_time() + self._backoff(window.attempt)
        self.request_backfill_nowait(window)
        return True

    def _give_up(self, window: TradeWindow, error: str) -> None:
        logger.bind(symbol_id=window.symbol_id, attempts=window.attempt + 1, error=error).warning(
            "backfill failed"
        )
        self.deliver(TradesUnrecovered(window, error))

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, base=self.backoff_base, cap=self.backoff_max, rng=self._rng)

    async def _fetch_interim_book(self, symbol_id: str) -> None:
        try:
            async with self._limiter:
                self.counters.in_flight += 1
                self.counters.rest_calls += 1
                try:
                    book = await self.rest.current_book(symbol_id, limit_levels=50)
                finally:
                    self.counters.in_flight -= 1
        except RestRetryable as exc:
            if exc.retry_after is not None:
                self._resume_at = max(self._resume_at, trio.current_time() + exc.retry_after)
            logger.bind(symbol_id=symbol_id, reason=str(exc)).info("interim book skipped")
            return
        except RestError as exc:
            logger.bind(symbol_id=symbol_id, reason=str(exc)).info("interim book skipped")
            return
        if book is not None and symbol_id in self._resyncs:
            self.deliver(InterimBook(book))
