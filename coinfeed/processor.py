"""The processor: frames in, checked and normalized events out, gaps handed to recovery.

How this works: one task takes everything queued in the :class:`FrameQueue` at once (frames and
ordered control items), handles the batch synchronously (decode, sequence check, book apply,
trade de-duplication, gap bookkeeping), then hands the resulting events to the sinks, which may
block: that is the backpressure, and the queue in front is where it turns into counted drops.

Trade windows for REST backfill start at the latest trade time seen live for the symbol (or
when coinfeed first went live) and end at:
- the trade that revealed a sequence gap, or the newest dropped trade (drops are summarised
  by the queue), or
- for a reconnect or resubscribe, the moment the new subscription was sent plus
  ``skew_margin`` seconds (trades stamped later than that arrive live; dedup absorbs overlap).
Every trade event passes the one :class:`TradeDedup`, live or backfilled.

After a resubscribe CoinAPI restarts every stream of that symbol, while messages sent before the
unsubscribe may still be in flight: a lower number on such a stream is taken as the restart
(once), not as a duplicate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import attrs
import trio
from loguru import logger

from coinfeed.book import Books, BookState
from coinfeed.dedup import TradeDedup
from coinfeed.events import (
    Event,
    GapEvent,
    GapReason,
    GapRecovery,
    GapStatus,
    book_from_rest,
    book_from_ws,
    book_update_event,
    quote_from_ws,
    trade_from_rest,
    trade_from_ws,
    utc_now_iso,
)
from coinfeed.framequeue import DroppedStream, FrameQueue
from coinfeed.protocol import (
    Book5,
    Book20,
    Book50,
    BookUpdate,
    Error,
    FrameDecoder,
    InvalidFrame,
    Quote,
    Reconnect,
    Trade,
    parse_time,
)
from coinfeed.recovery import (
    GapRecord,
    InterimBook,
    RecoveryScheduler,
    ResyncFailed,
    TradesRecovered,
    TradesUnrecovered,
    TradeWindow,
)
from coinfeed.sequence import SequenceTracker, Verdict
from coinfeed.status import ConnectionLost, ConnectionOpened, Resubscribed, ServiceStatus


def _wire_type(record: object) -> str:
    """The ``type`` a record was decoded from (its msgspec tag): one source for wire names."""
    return str(record.__struct_config__.tag)  # type: ignore[attr-defined]


def window_end(time_exchange: str) -> datetime:
    """A window end that includes ``time_exchange``: datetimes hold microseconds, CoinAPI sends
    100 ns, so truncating would put the trade itself just outside ``time_end``."""
    return parse_time(time_exchange) + timedelta(microseconds=1)


@attrs.define(slots=True)
class ProcessorCounters:
    """Plain counters (read by the metrics collector and the stats line)."""

    received: dict[str, int] = attrs.field(factory=dict)
    invalid: dict[str, int] = attrs.field(factory=dict)
    gaps: dict[str, int] = attrs.field(factory=dict)
    recoveries: dict[tuple[str, str], int] = attrs.field(factory=dict)
    stale: int = 0
    duplicates: int = 0
    unrequested: int = 0
    unsynced_updates: int = 0
    events: int = 0
    frames: int = 0

    def bump(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


@attrs.define(slots=True, eq=False)
class Processor:
    """Owns the sequence tracker, the books and trade dedup; the only producer of events."""

    queue: FrameQueue
    recovery: RecoveryScheduler
    emit: Callable[[list[Event]], Awaitable[None]]
    status: ServiceStatus
    symbols: frozenset[str]
    types: frozenset[str]
    decoder: FrameDecoder
    dedup: TradeDedup
    tracker: SequenceTracker = attrs.field(factory=SequenceTracker)
    books: Books = attrs.field(factory=Books)
    counters: ProcessorCounters = attrs.field(factory=ProcessorCounters)
    skew_margin: float = 2.0
    observe_batch: Callable[[float, int], None] = lambda _seconds, _frames: None
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _connection_id: int = attrs.field(default=0, init=False)
    _live_since: datetime | None = attrs.field(default=None, init=False)
    _last_trade_time: dict[str, str] = attrs.field(factory=dict, init=False)
    _restart_expected: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    _book_gaps: dict[str, list[GapRecord]] = attrs.field(factory=dict, init=False)
    _stale_retry_at: dict[str, float] = attrs.field(factory=dict, init=False)
    _received_at: str = attrs.field(default="", init=False)

    async def run(self) -> None:
        """Process until the queue is closed and drained."""
        while True:
            try:
                items, drops = await self.queue.get_batch()
            except trio.EndOfChannel:
                final: list[Event] = []
                self.report_unfinished(final)
                if final:
                    await self.emit(final)
                return
            started = trio.current_time()
            out: list[Event] = []
            self.handle_batch(items, drops, out)
            self.observe_batch(trio.current_time() - started, len(items))
            if out:
                self.counters.events += len(out)
                await self.emit(out)

    def report_unfinished(self, out: list[Event]) -> None:
        """At shutdown: every gap still pending ends ``unrecovered`` (a drop is either repaired
        or reported, never left ``pending`` in the sinks)."""
        self._received_at = utc_now_iso(self.wall_clock())
        for window in self.recovery.unfinished_windows():
            self._count_recovery("trade", "unrecovered")
            for gap in window.gaps:
                out.append(self._gap_from(gap, "backfill", "unrecovered"))
        for gaps in self._book_gaps.values():
            for gap in gaps:
                self._count_recovery("book", "unrecovered")
                out.append(self._gap_from(gap, "resubscribe", "unrecovered"))
        self._book_gaps.clear()

    # -- one batch ----------------------------------------------------------------------------

    def handle_batch(
        self, items: list[object], drops: list[DroppedStream], out: list[Event]
    ) -> None:
        """Handle frames and control items in order, then the drops recorded behind them."""
        self._received_at = utc_now_iso(self.wall_clock())
        decode = self.decoder.decode
        on_trade, on_book, on_quote = self._on_trade, self._on_book, self._on_quote
        trades = books = quotes = frames = 0
        for item in items:
            if type(item) is str or type(item) is bytes:
                frames += 1
                msg = decode(item)
                kind = type(msg)
                if kind is BookUpdate:
                    books += 1
                    on_book(msg, out)  # type: ignore[arg-type]
                elif kind is Trade:
                    trades += 1
                    on_trade(msg, out)  # type: ignore[arg-type]
                elif kind is Quote:
                    quotes += 1
                    on_quote(msg, out)  # type: ignore[arg-type]
                elif kind is InvalidFrame:
                    self._on_invalid(msg)  # type: ignore[arg-type]
                else:
                    self.counters.bump(self.counters.received, _wire_type(msg))
                    self._on_other(msg, out)
            else:
                self._on_control(item, out)
        counters = self.counters
        counters.frames += frames
        received = counters.received
        for name, n in (("book", books), ("trade", trades), ("quote", quotes)):
            if n:
                received[name] = received.get(name, 0) + n
        for dropped in drops:
            self._on_drop(dropped, out)

    # -- market data --------------------------------------------------------------------------

    def _wanted(self, data_type: str, symbol_id: str) -> bool:
        if symbol_id in self.symbols and data_type in self.types:
            return True
        self.counters.unrequested += 1
        return False

    def _restarted(self, data_type: str, symbol_id: str, sequence: int) -> bool:
        """A STALE number right after a resubscribe is the stream's restart: take it as base."""
        key = (data_type, symbol_id)
        if key in self._restart_expected:
            self._restart_expected.discard(key)
            self.tracker.restart_stream(data_type, symbol_id, sequence)
            return True
        self.counters.stale += 1
        return False

    def _on_trade(self, msg: Trade, out: list[Event]) -> None:
        symbol_id = msg.symbol_id
        if symbol_id not in self.symbols or "trade" not in self.types:
            self.counters.unrequested += 1
            return
        obs = self.tracker.observe("trade", symbol_id, msg.sequence)
        verdict = obs.verdict
        if verdict is Verdict.STALE:
            if not self._restarted("trade", symbol_id, msg.sequence):
                return
        elif verdict is Verdict.GAP:
            self._trade_gap(symbol_id, obs.missing, window_end(msg.time_exchange), out)
        elif verdict is Verdict.FIRST:
            self._restart_expected.discard(("trade", symbol_id))
        last = self._last_trade_time.get(symbol_id)
        if last is None or msg.time_exchange > last:
            self._last_trade_time[symbol_id] = msg.time_exchange
        if self.dedup.first_sighting(msg.uuid):
            out.append(trade_from_ws(msg, self._received_at))
        else:
            self.counters.duplicates += 1

    def _on_quote(self, msg: Quote, out: list[Event]) -> None:
        if msg.symbol_id not in self.symbols or "quote" not in self.types:
            self.counters.unrequested += 1
            return
        if self._simple_stream("quote", msg.symbol_id, msg.sequence, out):
            out.append(quote_from_ws(msg, self._received_at))

    def _on_top_of_book(self, msg: Book5 | Book20 | Book50, out: list[Event]) -> None:
        data_type = _wire_type(msg)
        if not self._wanted(data_type, msg.symbol_id):
            return
        if self._simple_stream(data_type, msg.symbol_id, msg.sequence, out):
            out.append(book_from_ws(msg, self._received_at))

    def _simple_stream(
        self, data_type: str, symbol_id: str, sequence: int, out: list[Event]
    ) -> bool:
        """Streams whose every message is complete state: a gap is reported, nothing to repair."""
        obs = self.tracker.observe(data_type, symbol_id, sequence)
        if obs.verdict is Verdict.STALE:
            return self._restarted(data_type, symbol_id, sequence)
        if obs.verdict is Verdict.GAP:
            self.counters.bump(self.counters.gaps, data_type)
            out.append(
                self._gap(data_type, symbol_id, "sequence", obs.missing, "none", "recovered")
            )
        return True

    def _on_book(self, msg: BookUpdate, out: list[Event]) -> None:
        symbol_id = msg.symbol_id
        if symbol_id not in self.symbols or "book" not in self.types:
            self.counters.unrequested += 1
            return
        obs = self.tracker.observe("book", symbol_id, msg.sequence)
        book = self.books.get_or_create(symbol_id)
        if msg.is_snapshot:
            # A snapshot is complete state whatever its number: it becomes the new base.
            self.tracker.restart_stream("book", symbol_id, msg.sequence)
            self._restart_expected.discard(("book", symbol_id))
            book.apply_snapshot(msg.asks, msg.bids, msg.sequence)
            self._book_synced(symbol_id, out)
            out.append(book_update_event(msg, self._received_at))
            return
        verdict = obs.verdict
        if verdict is Verdict.STALE:
            self._restarted("book", symbol_id, msg.sequence)
            return
        if book.state is not BookState.SYNCED:
            self.counters.unsynced_updates += 1
            if book.state is BookState.STALE and symbol_id not in self._book_gaps:
                self._retry_stale_book(symbol_id, out)
            return
        if verdict is Verdict.GAP:
            self._book_gap(symbol_id, "sequence", obs.missing, out)
            return
        book.apply_update(msg.asks, msg.bids, msg.sequence)
        out.append(book_update_event(msg, self._received_at))

    def _on_invalid(self, msg: InvalidFrame) -> None:
        self.counters.bump(self.counters.invalid, msg.reason)
        self.status.log_invalid(msg)

    def _on_other(self, msg: object, out: list[Event]) -> None:
        if isinstance(msg, Book5 | Book20 | Book50):
            self._on_top_of_book(msg, out)
        elif isinstance(msg, Error):
            self.status.server_error(self._connection_id, msg.message or "")
        elif isinstance(msg, Reconnect):
            logger.bind(within_seconds=msg.within_seconds, before_time=msg.before_time).info(
                "server announced a restart"
            )
            self.status.reconnect_announced_for = self._connection_id

    # -- gaps ---------------------------------------------------------------------------------

    def _gap(
        self,
        data_type: str,
        symbol_id: str,
        reason: GapReason,
        missing: int | None,
        recovery: GapRecovery,
        status: GapStatus,
    ) -> GapEvent:
        return GapEvent(
            data_type=data_type,
            symbol_id=symbol_id,
            reason=reason,
            missing=missing,
            recovery=recovery,
            status=status,
            received_at=self._received_at,
        )

    def _gap_from(self, gap: GapRecord, recovery: GapRecovery, status: GapStatus) -> GapEvent:
        return self._gap(gap.data_type, gap.symbol_id, gap.reason, gap.missing, recovery, status)

    def _window_start(self, symbol_id: str, fallback: datetime) -> datetime:
        last = self._last_trade_time.get(symbol_id)
        if last is not None:
            return parse_time(last)
        return self._live_since or fallback

    def _trade_gap(
        self, symbol_id: str, missing: int | None, end: datetime, out: list[Event]
    ) -> None:
        self.counters.bump(self.counters.gaps, "trade")
        gap = GapRecord("trade", symbol_id, "sequence", missing)
        window = TradeWindow(symbol_id, self._window_start(symbol_id, end), end, [gap])
        self._request_backfill(window, out)

    def _request_backfill(self, window: TradeWindow, out: list[Event]) -> None:
        accepted = self.recovery.request_backfill_nowait(window)
        status: GapStatus = "pending" if accepted else "unrecovered"
        if not accepted:
            self._count_recovery("trade", "refused")
        for gap in window.gaps:
            out.append(self._gap_from(gap, "backfill", status))

    def _book_gap(
        self, symbol_id: str, reason: GapReason, missing: int | None, out: list[Event]
    ) -> None:
        self.counters.bump(self.counters.gaps, "book")
        self.books.get_or_create(symbol_id).mark_stale()
        accepted = self.recovery.request_resync_nowait(symbol_id)
        if accepted:
            self._book_gaps.setdefault(symbol_id, []).append(
                GapRecord("book", symbol_id, reason, missing)
            )
        else:
            self._count_recovery("book", "refused")
        status: GapStatus = "pending" if accepted else "unrecovered"
        out.append(self._gap("book", symbol_id, reason, missing, "resubscribe", status))

    def _retry_stale_book(self, symbol_id: str, out: list[Event]) -> None:
        """A stale book with no resync in flight (it gave up, or was refused at the cap) asks
        again, at most once per ``resync_timeout``: without this it stayed stale until the next
        reconnect, its updates dropped. Each new attempt is one more ``gap`` event."""
        now = trio.current_time()
        if now < self._stale_retry_at.get(symbol_id, 0.0):
            return
        self._stale_retry_at[symbol_id] = now + self.recovery.resync_timeout
        self._book_gap(symbol_id, "sequence", None, out)

    def _book_synced(self, symbol_id: str, out: list[Event]) -> None:
        self.recovery.book_synced(symbol_id)
        for gap in self._book_gaps.pop(symbol_id, ()):
            self._count_recovery("book", "recovered")
            out.append(self._gap_from(gap, "resubscribe", "recovered"))

    def _count_recovery(self, data_type: str, outcome: str) -> None:
        key = (data_type, outcome)
        self.counters.recoveries[key] = self.counters.recoveries.get(key, 0) + 1

    def _on_drop(self, dropped: DroppedStream, out: list[Event]) -> None:
        """Frames the queue dropped: repair their stream now (they precede all queued input)."""
        if dropped.connection_id != self._connection_id or dropped.max_sequence is None:
            return  # an older connection's drops: the reconnect backfill covers them
        data_type, symbol_id = dropped.data_type, dropped.symbol_id
        if symbol_id not in self.symbols or data_type not in self.types:
            return
        obs = self.tracker.observe(data_type, symbol_id, dropped.max_sequence)
        if obs.verdict is Verdict.STALE:
            return
        if obs.verdict is Verdict.GAP:
            missing: int | None = obs.missing + 1
        elif obs.verdict is Verdict.NEXT:
            missing = 1
        else:
            missing = dropped.count
        if data_type == "trade":
            end = (
                window_end(dropped.last_time_exchange)
                if dropped.last_time_exchange
                else self.wall_clock()
            )
            self._trade_gap(symbol_id, missing, end, out)
            self._last_trade_time[symbol_id] = max(
                self._last_trade_time.get(symbol_id, ""), dropped.last_time_exchange or ""
            )
        elif data_type == "book":
            self._book_gap(symbol_id, "sequence", missing, out)
        else:
            self.counters.bump(self.counters.gaps, data_type)
            out.append(self._gap(data_type, symbol_id, "sequence", missing, "none", "recovered"))

    # -- control items ------------------------------------------------------------------------

    def _on_control(self, item: object, out: list[Event]) -> None:
        if isinstance(item, ConnectionOpened):
            self._on_connection_opened(item, out)
        elif isinstance(item, TradesRecovered):
            self._on_trades_recovered(item, out)
        elif isinstance(item, TradesUnrecovered):
            self._count_recovery("trade", "unrecovered")
            for gap in item.window.gaps:
                out.append(self._gap_from(gap, "backfill", "unrecovered"))
        elif isinstance(item, Resubscribed):
            self._on_resubscribed(item, out)
        elif isinstance(item, InterimBook):
            book = self.books.get(item.book.symbol_id)
            if book is None or book.state is not BookState.SYNCED:
                out.append(book_from_rest(item.book, self._received_at))
        elif isinstance(item, ResyncFailed):
            for gap in self._book_gaps.pop(item.symbol_id, ()):
                self._count_recovery("book", "unrecovered")
                out.append(self._gap_from(gap, "resubscribe", "unrecovered"))
        elif isinstance(item, ConnectionLost):
            pass  # trackers reset when the next connection opens
        else:  # pragma: no cover - a bug, not input
            raise TypeError(f"unknown control item {item!r}")

    def _on_connection_opened(self, opened: ConnectionOpened, out: list[Event]) -> None:
        self._connection_id = opened.connection_id
        self.tracker.reset()
        self._restart_expected.clear()
        self.recovery.connection_reset()
        for book in self.books:
            if book.state is not BookState.NO_SNAPSHOT and book.symbol_id not in self._book_gaps:
                self._book_gaps[book.symbol_id] = [
                    GapRecord("book", book.symbol_id, "reconnect", None)
                ]
                out.append(
                    self._gap("book", book.symbol_id, "reconnect", None, "resubscribe", "pending")
                )
        self.books.reset_all()
        if self._live_since is None:
            self._live_since = opened.at
            return
        if "trade" in self.types:
            self._backfill_since_scope_change(self.symbols, opened.at, "reconnect", out)

    def _on_resubscribed(self, item: Resubscribed, out: list[Event]) -> None:
        if item.connection_id != self._connection_id:
            return
        for symbol_id in item.symbols:
            for data_type in self.types:
                self._restart_expected.add((data_type, symbol_id))
        if "trade" in self.types:
            self._backfill_since_scope_change(item.symbols, item.at, "sequence", out)

    def _backfill_since_scope_change(
        self,
        symbols: frozenset[str] | tuple[str, ...],
        at: datetime,
        reason: GapReason,
        out: list[Event],
    ) -> None:
        end = at + timedelta(seconds=self.skew_margin)
        not_before = trio.current_time() + self.skew_margin
        for symbol_id in sorted(symbols):
            self.counters.bump(self.counters.gaps, "trade")
            gap = GapRecord("trade", symbol_id, reason, None)
            window = TradeWindow(
                symbol_id, self._window_start(symbol_id, at), end, [gap], not_before=not_before
            )
            self._request_backfill(window, out)

    def _on_trades_recovered(self, item: TradesRecovered, out: list[Event]) -> None:
        window = item.window
        for trade in item.trades:
            if trade.symbol_id == window.symbol_id and self.dedup.first_sighting(trade.uuid):
                out.append(trade_from_rest(trade, self._received_at))
                window.found += 1
        if not item.final:
            return
        expected = window.expected_missing
        if expected is not None and window.found < expected:
            # REST may not hold the newest trades yet: fetch the window again (what was found
            # stays counted; dedup drops it when it comes again). Each gap keeps its record, so
            # every pending gap event gets exactly one final one.
            if self.recovery.retry_incomplete(window):
                return
            self._count_recovery("trade", "unrecovered")
            for gap in window.gaps:
                out.append(self._gap_from(gap, "backfill", "unrecovered"))
            return
        self._count_recovery("trade", "recovered")
        for gap in window.gaps:
            out.append(self._gap_from(gap, "backfill", "recovered"))
