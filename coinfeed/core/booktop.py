"""Interval book snapshots (``--book-snapshots 10@1s``): the top N levels of every synced book
at regular moments, as ``book_top`` events.

How this works: each schedule's moments are the multiples of its interval since the epoch
(``10@1s`` at every whole second), so snapshots of several processes line up. The processor
calls :meth:`BookTops.emit_due` before it applies each batch, with the batch's wall clock, and
wakes by itself at :attr:`BookTops.next_due` when no frame comes: a snapshot at moment T is the
book as the processor held it at T, exactly what ``/api/books`` answered then. The cost is per
interval and book, never per update. A book that is not synced emits nothing and the skip is
counted (``unsynced``); moments that passed while the processor was held up (a sink applying
backpressure) are counted (``behind``) and only the latest is emitted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

import attrs

from coinfeed.core.book import Books, BookState
from coinfeed.core.events import BookTopEvent, Event, utc_now_iso

MAX_DEPTH: Final = 1000
MIN_INTERVAL_MS: Final = 100
_SCHEDULE: Final = re.compile(r"(\d+)@(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


@attrs.frozen(order=True)
class SnapshotSchedule:
    """``depth`` levels per side every ``interval_ms`` milliseconds."""

    depth: int
    interval_ms: int

    def __str__(self) -> str:
        if self.interval_ms % 1000:
            return f"{self.depth}@{self.interval_ms}ms"
        return f"{self.depth}@{self.interval_ms // 1000}s"


def parse_schedule(text: str) -> SnapshotSchedule:
    """``DEPTH@INTERVAL`` with the interval in ms, s, m or h (``10@1s``, ``50@500ms``)."""
    match = _SCHEDULE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not DEPTH@INTERVAL (e.g. 10@1s, 50@500ms, 20@1m)")
    depth = int(match[1])
    interval_ms = float(match[2]) * _UNIT_MS[match[3]]
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"{text!r}: the depth must be 1 to {MAX_DEPTH}")
    if interval_ms < MIN_INTERVAL_MS or not interval_ms.is_integer():
        raise ValueError(f"{text!r}: the interval must be whole milliseconds, at least 100 ms")
    return SnapshotSchedule(depth, int(interval_ms))


@attrs.define(slots=True, eq=False)
class BookTops:
    """Emits ``book_top`` events for ``symbols`` on ``schedules`` (see the module docstring)."""

    schedules: tuple[SnapshotSchedule, ...]
    symbols: tuple[str, ...]
    skipped: dict[str, int] = attrs.field(factory=lambda: {"unsynced": 0, "behind": 0})
    """Snapshots not emitted, by reason."""
    _done: list[int] = attrs.field(factory=list, init=False)
    """Per schedule, the number of the last moment handled (moment k is at k * interval)."""
    _next_due: float = attrs.field(default=float("-inf"), init=False)

    @property
    def next_due(self) -> float:
        """Epoch time of the next moment of any schedule (-inf before the first call)."""
        return self._next_due

    def emit_due(self, now: float, books: Books, received_at: str, out: list[Event]) -> None:
        """Emit the snapshots of every moment up to epoch time ``now`` not handled yet."""
        if now < self._next_due:
            return
        now_ms = int(now * 1000)
        if not self._done:  # the first call: moments before it are not ours
            self._done = [now_ms // s.interval_ms for s in self.schedules]
        for index, schedule in enumerate(self.schedules):
            moment = now_ms // schedule.interval_ms
            passed = moment - self._done[index]
            if passed <= 0:
                continue
            self._done[index] = moment
            self.skipped["behind"] += (passed - 1) * len(self.symbols)
            self._emit(schedule, moment * schedule.interval_ms, books, received_at, out)
        self._next_due = min(
            (done + 1) * s.interval_ms / 1000
            for done, s in zip(self._done, self.schedules, strict=True)
        )

    def _emit(
        self,
        schedule: SnapshotSchedule,
        at_ms: int,
        books: Books,
        received_at: str,
        out: list[Event],
    ) -> None:
        time = utc_now_iso(datetime.fromtimestamp(at_ms / 1000, UTC))
        depth = schedule.depth
        for symbol_id in self.symbols:
            book = books.get(symbol_id)
            if book is None or book.state is not BookState.SYNCED:
                self.skipped["unsynced"] += 1
                continue
            asks, bids = book.top(depth)
            out.append(
                BookTopEvent(
                    symbol_id=symbol_id,
                    depth=depth,
                    time=time,
                    sequence=book.sequence,
                    asks=asks,
                    bids=bids,
                    received_at=received_at,
                )
            )
