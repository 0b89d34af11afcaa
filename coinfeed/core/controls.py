"""Control items: what travels with the frames in the frame queue, in order, never dropped.

The connection puts :class:`ConnectionOpened`, :class:`ConnectionLost` and :class:`Resubscribed`
between the frames before and after the change; the recovery scheduler puts recovered data and
outcomes (:class:`TradesRecovered`, :class:`TradesUnrecovered`, :class:`InterimBook`,
:class:`ResyncFailed`). The processor handles each exactly where it sits among the frames, so a
reconnect is seen between the last frame of one connection and the first of the next, and
recovered trades pass the same de-duplication as live ones.

:class:`GapRecord` and :class:`TradeWindow` are the recovery work these items carry.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from coinfeed.core.events import GapReason
from coinfeed.core.rest_protocol import RestBook, RestTrade


@attrs.frozen
class ConnectionOpened:
    """Connected and subscribed (hello sent) at wall time ``at``; sequences start afresh."""

    connection_id: int
    at: datetime


@attrs.frozen
class ConnectionLost:
    """The connection ended for ``reason`` (the next one resets every stream)."""

    connection_id: int
    reason: str


@attrs.frozen
class Resubscribed:
    """``symbols`` were unsubscribed at wall time ``at`` and are being subscribed again."""

    connection_id: int
    symbols: frozenset[str]
    at: datetime


@attrs.frozen
class GapRecord:
    """One detected gap, reported as ``pending`` and later ``recovered``/``unrecovered``
    (both events carry its ``id``), or once when it needs no repair."""

    data_type: str
    symbol_id: str
    reason: GapReason
    missing: int | None
    id: str = ""
    after_sequence: int | None = None
    """The last number seen before the missing ones (they lie strictly between the two)."""
    before_sequence: int | None = None
    """The first number seen after the missing ones."""
    window_start: str | None = None
    """``time_exchange`` bounds of the missing data (ISO 8601, as CoinAPI writes times)."""
    window_end: str | None = None


@attrs.define(slots=True)
class TradeWindow:
    """Trades of ``symbol_id`` with ``start <= time_exchange <= end`` to fetch from REST."""

    symbol_id: str
    start: datetime
    end: datetime
    gaps: list[GapRecord]
    attempt: int = 0
    not_before: float = 0.0
    found: int = 0
    """Trades the WebSocket missed that this window's pages brought so far."""
    credited: set[str] = attrs.field(factory=set)
    """Their uuids, when the missing count is known (so a page fetched again counts once)."""
    opened_at: float | None = None
    """When its oldest gap was found (trio clock): how long trades have been missing."""
    requests: int = 1
    """Backfill requests this window answers (it absorbs others while pending)."""

    @property
    def expected_missing(self) -> int | None:
        """Trades the WebSocket is known to have missed, or None when unknown (reconnects)."""
        total = 0
        for gap in self.gaps:
            if gap.missing is None:
                return None
            total += gap.missing
        return total

    def absorb(self, other: TradeWindow) -> None:
        self.requests += other.requests
        self.credited |= other.credited
        self.found = len(self.credited) if self.credited else self.found + other.found
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.attempt = max(self.attempt, other.attempt)
        self.not_before = max(self.not_before, other.not_before)
        if other.opened_at is not None:
            self.opened_at = (
                other.opened_at if self.opened_at is None else min(self.opened_at, other.opened_at)
            )
        # Every record is kept: each had its pending event and is owed its final one.
        self.gaps.extend(other.gaps)


@attrs.frozen
class TradesRecovered:
    """Control item: one page of REST trades for a window (not yet de-duplicated);
    ``final`` marks the window's last page, when its outcome is decided."""

    window: TradeWindow
    trades: list[RestTrade]
    final: bool = True


@attrs.frozen
class TradesUnrecovered:
    """Control item: the window could not be fetched within the attempt budget."""

    window: TradeWindow
    error: str


@attrs.frozen
class InterimBook:
    """Control item: the REST ``/current`` book, an unsequenced view while a book is out of sync."""

    book: RestBook


@attrs.frozen
class ResyncFailed:
    """Control item: no fresh snapshot arrived after ``max_attempts`` resubscribes."""

    symbol_id: str


ControlItem = (
    ConnectionOpened
    | ConnectionLost
    | Resubscribed
    | TradesRecovered
    | TradesUnrecovered
    | InterimBook
    | ResyncFailed
)
"""Everything besides frames that the frame queue carries to the processor."""
