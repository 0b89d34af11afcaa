"""Per-stream ``sequence`` checking for one connection, sans-I/O.

How this works: CoinAPI numbers every message per (type, symbol_id) stream, and the numbering is
valid for one connection only. :class:`SequenceTracker` remembers the last accepted number of each
stream (one int per live stream, in a dict per data type so the hot path builds no key tuple) and
classifies each new number as FIRST, NEXT, BEHIND (a duplicate or older number: dropped, the
tracker does not move back), GAP (``missing`` numbers skipped; the tracker moves on) or
IMPLAUSIBLE (a jump no connection can produce: a bad value, the tracker does not move).

FIRST, NEXT and BEHIND answers are pre-built constants, so the common case allocates no record;
only a GAP builds one, because it carries its ``missing`` count. Callers may compare verdicts
(``obs.verdict is Verdict.NEXT``) or the constants themselves (``obs is OBSERVED_NEXT``).

A book snapshot is complete state, so the processor applies it whatever the verdict and then calls
:meth:`SequenceTracker.restart_stream` if it wants the snapshot's number to be the new base even
when it is lower (CoinAPI §5.3: "if k not in last_seq or is_snapshot: accept").
"""

from __future__ import annotations

import enum
from typing import Final

import attrs


class Verdict(enum.Enum):
    """What a sequence number means for its stream."""

    FIRST = "first"
    """The stream's first number on this connection (or since it was forgotten)."""
    NEXT = "next"
    """Exactly one more than the last: nothing was lost."""
    BEHIND = "behind"
    """Equal to or lower than the last: a duplicate or a late message; drop it."""
    GAP = "gap"
    """Higher than last + 1: ``missing`` messages were lost; the tracker moved on to this one."""
    IMPLAUSIBLE = "implausible"
    """More than :data:`MAX_PLAUSIBLE_GAP` higher than last: a bad value, not a gap; the tracker
    stays where it was, so the stream's next real message is still NEXT."""


@attrs.frozen(slots=True)
class Observation:
    """The verdict for one message; ``missing`` is non-zero only for a GAP."""

    verdict: Verdict
    missing: int = 0


OBSERVED_FIRST: Final = Observation(Verdict.FIRST)
OBSERVED_NEXT: Final = Observation(Verdict.NEXT)
OBSERVED_BEHIND: Final = Observation(Verdict.BEHIND)
OBSERVED_IMPLAUSIBLE: Final = Observation(Verdict.IMPLAUSIBLE)

MAX_PLAUSIBLE_GAP: Final = 1_000_000
"""Most messages one stream can skip in one step on one connection. CoinAPI disconnects a client
once 131,072 messages wait for it, so a longer run of one stream cannot go missing in between."""


@attrs.frozen(slots=True)
class TrackerStatistics:
    """A snapshot of a tracker's counters (gap and behind counts are totals since creation)."""

    streams: int
    gaps: int
    missing_total: int
    behind: int


@attrs.define(slots=True)
class SequenceTracker:
    """Last ``sequence`` per (data_type, symbol_id) stream on the current connection.

    Memory is bounded by the live streams: one dict slot and one int per stream. ``reset`` (new
    connection) and ``forget_symbol`` (resubscribe) drop streams; the counters behind
    :meth:`statistics` are lifetime totals and survive both.
    """

    # data_type -> symbol_id -> last accepted sequence. Nested dicts: no key tuple per message.
    _last: dict[str, dict[str, int]] = attrs.field(factory=dict, init=False)
    _gaps: int = attrs.field(default=0, init=False)
    _missing_total: int = attrs.field(default=0, init=False)
    _behind: int = attrs.field(default=0, init=False)

    def observe(self, data_type: str, symbol_id: str, sequence: int) -> Observation:
        """Classify ``sequence`` for its stream and remember it unless it is BEHIND."""
        try:
            streams = self._last[data_type]
            last = streams[symbol_id]
        except KeyError:
            self._last.setdefault(data_type, {})[symbol_id] = sequence
            return OBSERVED_FIRST
        if sequence == last + 1:
            streams[symbol_id] = sequence
            return OBSERVED_NEXT
        if sequence <= last:
            self._behind += 1
            return OBSERVED_BEHIND
        missing = sequence - last - 1
        if missing > MAX_PLAUSIBLE_GAP:
            return OBSERVED_IMPLAUSIBLE
        streams[symbol_id] = sequence
        self._gaps += 1
        self._missing_total += missing
        return Observation(Verdict.GAP, missing)

    def restart_stream(self, data_type: str, symbol_id: str, sequence: int) -> None:
        """Make ``sequence`` the stream's last number, even if lower (a book snapshot restarts)."""
        self._last.setdefault(data_type, {})[symbol_id] = sequence

    def last(self, data_type: str, symbol_id: str) -> int | None:
        """The last accepted number of a stream, or ``None`` if it has none on this connection."""
        streams = self._last.get(data_type)
        return None if streams is None else streams.get(symbol_id)

    def forget_symbol(self, symbol_id: str) -> None:
        """Forget every stream of ``symbol_id``: after a resubscribe all its types restart."""
        for streams in self._last.values():
            streams.pop(symbol_id, None)

    def reset(self) -> None:
        """Forget every stream (a new connection numbers everything afresh)."""
        self._last.clear()

    def statistics(self) -> TrackerStatistics:
        """Streams tracked now, plus lifetime gap, missing and behind totals."""
        return TrackerStatistics(
            streams=sum(len(streams) for streams in self._last.values()),
            gaps=self._gaps,
            missing_total=self._missing_total,
            behind=self._behind,
        )
