"""Gap bookkeeping: every gap from its detection to its one final event, and the repair asked.

How this works: the processor finds a gap (a sequence jump, a dropped frame, a reconnect or a
resubscribe) and tells the :class:`GapLedger`, which emits a ``gap`` event at once and asks the
recovery scheduler for the repair:

- trades: a REST backfill window that starts at the latest trade time seen live for the symbol
  (or when coinfeed first went live) and ends at the trade that revealed the gap, the newest
  dropped trade, or, after a reconnect or resubscribe, the moment the new subscription was sent
  plus ``skew_margin`` seconds (later trades arrive live; dedup absorbs the overlap);
- incremental books: the book goes out of sync and a resync (unsubscribe + subscribe, for a
  fresh snapshot) is asked; the gap stays open until that snapshot arrives;
- quotes and top-N books: the next message is complete state, so the gap is reported with
  ``recovery: "none"`` and ``status: "recovered"`` right away.

Each ``pending`` gap event gets exactly one final event (``recovered`` or ``unrecovered``), when
its window's outcome is known, when its book is synced again, or at shutdown. A request the
scheduler refuses (a book resync over its pending cap) is reported ``unrecovered`` at once.

Across restarts: the ledger knows, per symbol, the time up to which every trade has been
emitted (:meth:`GapLedger.complete_through`: the latest trade or finished window, held back to
the start of any window still open), which the restart checkpoint stores once the sinks have
written it. A process started with such a checkpoint reports a ``restart`` gap per symbol at its
first connection and backfills from the checkpoint, at most ``restart_backfill_max`` back.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Protocol

import attrs
from loguru import logger

from coinfeed.core.book import Books, BookState
from coinfeed.core.controls import (
    ConnectionOpened,
    GapRecord,
    TradesRecovered,
    TradesUnrecovered,
    TradeWindow,
)
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.events import (
    Event,
    GapEvent,
    GapReason,
    GapRecovery,
    GapStatus,
    trade_from_rest,
)
from coinfeed.core.protocol import format_time, parse_time
from coinfeed.logs import RateLimitedLog

MAX_OPEN_GAPS_PER_SYMBOL = 1_000
"""Trade gaps of one symbol waiting for recovery at most (about 200 B each); past it the oldest
is reported ``unrecovered`` (REST blocked for long: memory stays bounded)."""
SKEW_MARGIN = 2.0
"""Seconds a backfill window reaches past a scope change, and waits before it is fetched."""
BACKFILLED_REMEMBERED = 50_000
"""Backfilled trade uuids remembered to credit overlapping windows (about 5 MB at most)."""


def new_run_id() -> str:
    """A fresh prefix for one process's gap ids, so ids stay unique across restarts."""
    return os.urandom(4).hex()


class RecoveryRequests(Protocol):
    """What the ledger asks of recovery (:class:`~coinfeed.recovery.RecoveryScheduler` live;
    a replay answers from the recording)."""

    @property
    def resync_timeout(self) -> float: ...

    def request_backfill_nowait(self, window: TradeWindow) -> None: ...

    def request_resync_nowait(self, symbol_id: str) -> bool: ...

    def retry_incomplete(self, window: TradeWindow) -> bool: ...

    def unfinished_windows(self) -> list[TradeWindow]: ...

    def book_synced(self, symbol_id: str) -> None: ...

    def connection_reset(self) -> None: ...


def window_end(time_exchange: str) -> datetime:
    """A window end that includes ``time_exchange``: datetimes hold microseconds, CoinAPI sends
    100 ns, so truncating would put the trade itself just outside ``time_end``."""
    return parse_time(time_exchange) + timedelta(microseconds=1)


@attrs.define(slots=True, eq=False)
class GapLedger:
    """Open gaps and their repair; owned by the processor, which calls it for every gap."""

    recovery: RecoveryRequests
    books: Books
    dedup: TradeDedup
    gap_counts: dict[str, int]
    """Gaps detected by data type (the processor's counters, read by the metrics)."""
    recovery_counts: dict[tuple[str, str], int]
    """Final outcomes by (data type, outcome)."""
    backfill_trades: bool
    """Whether trades are subscribed, so a reconnect or resubscribe needs a trade backfill."""
    skew_margin: float = SKEW_MARGIN
    last_trade_time: dict[str, str] = attrs.field(factory=dict)
    """Latest ``time_exchange`` seen live per symbol (written by the processor's hot path)."""
    restart_from: dict[str, datetime] = attrs.field(factory=dict)
    """The checkpoint a restart begins from: per symbol, every trade up to then was written."""
    restart_backfill_max: timedelta = timedelta(hours=24)
    run_id: str = attrs.field(factory=new_run_id)
    """Prefix of this run's gap ids."""
    _live_since: datetime | None = attrs.field(default=None, init=False)
    _live_symbols: frozenset[str] = attrs.field(default=frozenset(), init=False)
    _finished_through: dict[str, datetime] = attrs.field(factory=dict, init=False)
    """Per symbol, the end of the latest trade window whose outcome was emitted."""
    _open_windows: dict[str, tuple[int, datetime]] = attrs.field(factory=dict, init=False)
    """Per symbol, backfill requests not yet finished and the earliest start among them."""
    _book_gaps: dict[str, list[GapRecord]] = attrs.field(factory=dict, init=False)
    _backfilled: dict[str, None] = attrs.field(factory=dict, init=False)
    """uuids of recent trades that came by REST, not live (oldest first, bounded)."""
    _gaps_made: int = attrs.field(default=0, init=False)
    _gave_up_log: RateLimitedLog = attrs.field(
        factory=lambda: RateLimitedLog(interval=60.0), init=False
    )
    _book_retry_at: dict[str, float] = attrs.field(factory=dict, init=False)
    _received_at: str = attrs.field(default="", init=False)
    _now: float = attrs.field(default=0.0, init=False)

    def start_batch(self, received_at: str, now: float) -> None:
        """The wall time stamped on this batch's events and the trio clock reading for it."""
        self._received_at = received_at
        self._now = now

    # -- detection ------------------------------------------------------------------------------

    def trade_gap(
        self,
        symbol_id: str,
        missing: int | None,
        end: datetime,
        out: list[Event],
        *,
        sequences: tuple[int | None, int | None] = (None, None),
        last_time: str | None = None,
    ) -> None:
        """Trades of ``symbol_id`` up to ``end`` were lost: report and backfill them.
        ``sequences`` are the numbers seen before and after the missing ones; ``last_time`` is
        the ``time_exchange`` of the trade after them, when one was seen."""
        self._count_gap("trade")
        start = self._window_start(symbol_id, end)
        gap = self._new_gap(
            "trade", symbol_id, "sequence", missing, sequences,
            self.last_trade_time.get(symbol_id) or format_time(start),
            last_time or format_time(end),
        )  # fmt: skip
        window = TradeWindow(symbol_id, start, end, [gap], opened_at=self._now)
        self._request_backfill(window, out)

    def complete_state_gap(
        self,
        data_type: str,
        symbol_id: str,
        missing: int | None,
        out: list[Event],
        *,
        sequences: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """A quote or top-N book stream skipped: the next message repairs it by itself. An
        ``ohlcv`` stream's gap is ``unrecovered``: what was lost may be a period's last update,
        and coinfeed does not refetch bars."""
        self._count_gap(data_type)
        gap = self._new_gap(data_type, symbol_id, "sequence", missing, sequences)
        if data_type == "ohlcv":
            self._count_recovery(data_type, "unrecovered")
            out.append(self._event(gap, "none", "unrecovered"))
        else:
            out.append(self._event(gap, "none", "recovered"))

    def book_gap(
        self,
        symbol_id: str,
        reason: GapReason,
        missing: int | None,
        out: list[Event],
        *,
        sequences: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """Updates of an incremental book were lost: it goes out of sync until resynced."""
        self._count_gap("book")
        self.books.get_or_create(symbol_id).mark_out_of_sync()
        gap = self._new_gap("book", symbol_id, reason, missing, sequences)
        accepted = self.recovery.request_resync_nowait(symbol_id)
        if accepted:
            self._book_gaps.setdefault(symbol_id, []).append(gap)
        else:
            self._count_recovery("book", "refused")
        status: GapStatus = "pending" if accepted else "unrecovered"
        out.append(self._event(gap, "resubscribe", status))

    def book_update_while_out_of_sync(self, symbol_id: str, out: list[Event]) -> None:
        """An update reached an out-of-sync book with no resync in flight (it gave up, or was
        refused at the cap): ask again, at most once per ``resync_timeout``, else the book would
        stay out of sync until the next reconnect. Each new attempt is one more gap event."""
        if symbol_id in self._book_gaps:
            return
        if self._now < self._book_retry_at.get(symbol_id, 0.0):
            return
        self._book_retry_at[symbol_id] = self._now + self.recovery.resync_timeout
        self.book_gap(symbol_id, "sequence", None, out)

    def book_synced(self, symbol_id: str, out: list[Event]) -> None:
        """A snapshot arrived: every open gap of the book is recovered."""
        self.recovery.book_synced(symbol_id)
        for gap in self._book_gaps.pop(symbol_id, ()):
            self._count_recovery("book", "recovered")
            out.append(self._event(gap, "resubscribe", "recovered"))

    def connection_opened(
        self, opened: ConnectionOpened, symbols: frozenset[str], out: list[Event]
    ) -> None:
        """Every stream restarts: synced books resync, trades of ``symbols`` are backfilled for
        the outage (not on the first connection: there was nothing before it)."""
        self.recovery.connection_reset()
        for book in self.books:
            if book.state is not BookState.NO_SNAPSHOT and book.symbol_id not in self._book_gaps:
                gap = self._new_gap("book", book.symbol_id, "reconnect", None)
                self._book_gaps[book.symbol_id] = [gap]
                out.append(self._event(gap, "resubscribe", "pending"))
        self.books.reset_all()
        if self._live_since is None:
            self._live_since = opened.at
            self._live_symbols = symbols
            if self.backfill_trades:
                self._backfill_since_restart(symbols, opened.at, out)
            return
        if self.backfill_trades:
            self._backfill_since_scope_change(symbols, opened.at, "reconnect", out)

    def resubscribed(self, symbols: frozenset[str], at: datetime, out: list[Event]) -> None:
        """``symbols`` were unsubscribed at ``at``: their trades are backfilled from there."""
        if self.backfill_trades:
            self._backfill_since_scope_change(symbols, at, "sequence", out)

    # -- outcomes -------------------------------------------------------------------------------

    def trades_recovered(self, item: TradesRecovered, out: list[Event]) -> None:
        """A page of backfilled trades: new ones become events; the last page decides."""
        window = item.window
        expected = window.expected_missing
        for trade in item.trades:
            if trade.symbol_id != window.symbol_id:
                continue
            uuid = trade.uuid
            if self.dedup.first_sighting(uuid):
                out.append(trade_from_rest(trade, self._received_at))
                self._note_backfilled(uuid)
            elif expected is None or uuid not in self._backfilled:
                continue  # seen live: not one of the trades this window is missing
            # A trade another (overlapping) window brought first is still one this window
            # missed: counting it keeps a complete window from ending "unrecovered".
            if expected is None:
                window.found += 1
            elif uuid not in window.credited:
                window.credited.add(uuid)
                window.found += 1
        if not item.final:
            return
        if expected is not None and window.found < expected:
            # REST may not hold the newest trades yet: fetch the window again (what was found
            # stays counted; dedup drops it when it comes again). Each gap keeps its record, so
            # every pending gap event gets exactly one final one.
            if self.recovery.retry_incomplete(window):
                return
            self._finish_window(window, "unrecovered", out)
            return
        self._finish_window(window, "recovered", out)

    def trades_unrecovered(self, item: TradesUnrecovered, out: list[Event]) -> None:
        """The window could not be fetched within the attempt budget."""
        self._finish_window(item.window, "unrecovered", out)

    def _note_backfilled(self, uuid: str) -> None:
        backfilled = self._backfilled
        backfilled[uuid] = None
        if len(backfilled) > BACKFILLED_REMEMBERED:
            del backfilled[next(iter(backfilled))]  # the oldest: dicts keep insertion order

    def resync_failed(self, symbol_id: str, out: list[Event]) -> None:
        """No fresh snapshot after every resubscribe attempt: the book's gaps end unrecovered."""
        for gap in self._book_gaps.pop(symbol_id, ()):
            self._count_recovery("book", "unrecovered")
            out.append(self._event(gap, "resubscribe", "unrecovered"))

    def report_unfinished(self, out: list[Event]) -> None:
        """At shutdown: every gap still pending ends ``unrecovered`` (a drop is either repaired
        or reported, never left ``pending`` in the sinks). Their windows stay open in
        :meth:`complete_through`, so the next process backfills them after all."""
        for window in self.recovery.unfinished_windows():
            self._finish_window(window, "unrecovered", out, still_owed=True)
        for symbol_id in list(self._book_gaps):
            self.resync_failed(symbol_id, out)

    def complete_through(self) -> dict[str, datetime]:
        """Per symbol, a time up to which every trade has been emitted (or reported lost), for
        the restart checkpoint; symbols not known yet carry their checkpoint over."""
        through = dict(self.restart_from)
        live_since = self._live_since
        if live_since is not None:
            # A symbol that has not traded since going live owes nothing before that moment.
            for symbol_id in self._live_symbols:
                through.setdefault(symbol_id, live_since)
            for symbol_id, last in self.last_trade_time.items():
                through[symbol_id] = max(through.get(symbol_id, live_since), parse_time(last))
            for symbol_id, end in self._finished_through.items():
                through[symbol_id] = max(through.get(symbol_id, live_since), end)
        for symbol_id, (_, start) in self._open_windows.items():
            through[symbol_id] = min(through.get(symbol_id, start), start)
        return through

    # -- helpers --------------------------------------------------------------------------------

    def _finish_window(
        self, window: TradeWindow, status: GapStatus, out: list[Event], *, still_owed: bool = False
    ) -> None:
        for gap in window.gaps:  # counted per gap, as detected, so the figures add up
            self._count_recovery("trade", status)
            out.append(self._event(gap, "backfill", status))
        if still_owed:
            return
        symbol_id = window.symbol_id
        self._finished_through[symbol_id] = max(
            self._finished_through.get(symbol_id, window.end), window.end
        )
        count, start = self._open_windows.get(symbol_id, (0, window.start))
        if count - window.requests > 0:
            self._open_windows[symbol_id] = (count - window.requests, start)
        else:
            self._open_windows.pop(symbol_id, None)

    def _window_start(self, symbol_id: str, end: datetime) -> datetime:
        """From the latest trade seen live, else from going live; never after ``end`` (a trade
        stamped a little ahead of this host's clock must not make an empty window)."""
        last = self.last_trade_time.get(symbol_id)
        if last is not None:
            return min(parse_time(last), end)
        return min(self._live_since or end, end)

    def _request_backfill(self, window: TradeWindow, out: list[Event]) -> None:
        if self._open_windows.get(window.symbol_id, (0,))[0] >= MAX_OPEN_GAPS_PER_SYMBOL:
            self._give_up_oldest_gap(window.symbol_id, out)
        count, start = self._open_windows.get(window.symbol_id, (0, window.start))
        # The earliest start is kept until every window of the symbol is finished: merged
        # windows cannot tell which start was whose, and holding back is the safe side.
        self._open_windows[window.symbol_id] = (count + 1, min(start, window.start))
        self.recovery.request_backfill_nowait(window)
        for gap in window.gaps:
            out.append(self._event(gap, "backfill", "pending"))

    def _give_up_oldest_gap(self, symbol_id: str, out: list[Event]) -> None:
        """Recovery of ``symbol_id`` is this far behind (REST blocked for long): its oldest open
        gap ends ``unrecovered`` now, so the gaps held stay bounded. Its trades are still
        fetched with the window that holds it; if they come, they are delivered."""
        waiting = [w for w in self.recovery.unfinished_windows() if w.symbol_id == symbol_id]
        oldest = min(
            (w for w in waiting if w.gaps and w.requests > 0),
            key=lambda w: w.opened_at if w.opened_at is not None else float("inf"),
            default=None,
        )
        if oldest is None:
            return
        gap = oldest.gaps.pop(0)
        oldest.requests -= 1
        count, start = self._open_windows[symbol_id]
        self._open_windows[symbol_id] = (count - 1, start)  # the start stays: still owed
        self._count_recovery("trade", "unrecovered")
        out.append(self._event(gap, "backfill", "unrecovered"))
        self._gave_up_log.warning(
            f"gave-up:{symbol_id}",
            "too many gaps waiting for recovery: the oldest is reported unrecovered",
            symbol_id=symbol_id,
            max_open_gaps=MAX_OPEN_GAPS_PER_SYMBOL,
            window_start=gap.window_start,
            window_end=gap.window_end,
        )

    def _backfill_since_restart(
        self, symbols: frozenset[str], at: datetime, out: list[Event]
    ) -> None:
        """The first connection after a restart: trades since each symbol's checkpoint (up to
        ``restart_backfill_max`` back) are backfilled; anything older is reported lost."""
        end = at + timedelta(seconds=self.skew_margin)
        oldest = at - self.restart_backfill_max
        for symbol_id in sorted(symbols & self.restart_from.keys()):
            since = min(self.restart_from[symbol_id], at)
            self._count_gap("trade")
            if since < oldest:
                logger.bind(
                    symbol_id=symbol_id,
                    window_start=since.isoformat(),
                    window_end=oldest.isoformat(),
                    restart_backfill_max=self.restart_backfill_max.total_seconds(),
                ).warning("restart gap older than restart_backfill_max: reported unrecovered")
                self._count_recovery("trade", "unrecovered")
                lost = self._new_gap(
                    "trade", symbol_id, "restart", None, (None, None),
                    format_time(since), format_time(oldest),
                )  # fmt: skip
                out.append(self._event(lost, "backfill", "unrecovered"))
                self._count_gap("trade")
                since = oldest
            gap = self._new_gap(
                "trade", symbol_id, "restart", None, (None, None),
                format_time(since), format_time(end),
            )  # fmt: skip
            window = TradeWindow(
                symbol_id,
                since,
                end,
                [gap],
                not_before=self._now + self.skew_margin,
                opened_at=self._now,
            )
            self._request_backfill(window, out)

    def _backfill_since_scope_change(
        self,
        symbols: frozenset[str] | tuple[str, ...],
        at: datetime,
        reason: GapReason,
        out: list[Event],
    ) -> None:
        end = at + timedelta(seconds=self.skew_margin)
        not_before = self._now + self.skew_margin
        for symbol_id in sorted(symbols):
            self._count_gap("trade")
            start = self._window_start(symbol_id, at)
            gap = self._new_gap(
                "trade", symbol_id, reason, None, (None, None),
                self.last_trade_time.get(symbol_id) or format_time(start), format_time(end),
            )  # fmt: skip
            window = TradeWindow(
                symbol_id,
                start,
                end,
                [gap],
                not_before=not_before,
                opened_at=self._now,
            )
            self._request_backfill(window, out)

    def _count_gap(self, data_type: str) -> None:
        self.gap_counts[data_type] = self.gap_counts.get(data_type, 0) + 1

    def _count_recovery(self, data_type: str, outcome: str) -> None:
        key = (data_type, outcome)
        self.recovery_counts[key] = self.recovery_counts.get(key, 0) + 1

    def _new_gap(
        self,
        data_type: str,
        symbol_id: str,
        reason: GapReason,
        missing: int | None,
        sequences: tuple[int | None, int | None] = (None, None),
        window_start: str | None = None,
        window_end: str | None = None,
    ) -> GapRecord:
        self._gaps_made += 1
        return GapRecord(
            data_type, symbol_id, reason, missing, f"{self.run_id}-{self._gaps_made}",
            sequences[0], sequences[1], window_start, window_end,
        )  # fmt: skip

    def _event(self, gap: GapRecord, recovery: GapRecovery, status: GapStatus) -> GapEvent:
        return GapEvent(
            data_type=gap.data_type,
            symbol_id=gap.symbol_id,
            reason=gap.reason,
            missing=gap.missing,
            recovery=recovery,
            status=status,
            received_at=self._received_at,
            id=gap.id,
            after_sequence=gap.after_sequence,
            before_sequence=gap.before_sequence,
            window_start=gap.window_start,
            window_end=gap.window_end,
        )
