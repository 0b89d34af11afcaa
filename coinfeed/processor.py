"""The processor: frames in, checked and normalized events out, gaps handed to the ledger.

How this works: one task takes everything queued in the :class:`FrameQueue` at once (frames and
ordered control items), handles the batch synchronously in :meth:`Processor.handle_batch`
(decode, sequence check, book apply, trade de-duplication), then hands the resulting events to
the sinks, which may block: that is the backpressure, and the queue in front is where it turns
into counted drops. ``handle_batch`` reads no clock: the caller passes ``now``.

Every gap found here goes to the :class:`~coinfeed.gaps.GapLedger`, which reports it and asks
for the repair. Every trade event passes the one :class:`TradeDedup`, live or backfilled.

After a resubscribe CoinAPI restarts every stream of that symbol, while messages sent before the
unsubscribe may still be in flight: a lower number on such a stream is taken as the restart
(once), not as a duplicate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs
import trio
from loguru import logger

from coinfeed.core.bars import BarBuilder, parse_period
from coinfeed.core.book import Books, BookState
from coinfeed.core.booktop import BookTops, parse_schedule
from coinfeed.core.controls import (
    ConnectionLost,
    ConnectionOpened,
    ControlItem,
    InterimBook,
    Resubscribed,
    ResyncFailed,
    TradesRecovered,
    TradesUnrecovered,
)
from coinfeed.core.decoding import FUTURE_TOLERANCE, FrameDecoder, InvalidFrame, checked_time
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.events import (
    Event,
    book_from_rest,
    book_from_ws,
    book_update_event,
    exrate_from_ws,
    ohlcv_from_ws,
    quote_from_ws,
    trade_from_ws,
    utc_now_iso,
)
from coinfeed.core.latency import LatencyStats
from coinfeed.core.protocol import (
    Book5,
    Book20,
    Book50,
    BookUpdate,
    Error,
    Exrate,
    Ohlcv,
    Quote,
    Reconnect,
    Trade,
    asset_pair,
)
from coinfeed.core.sequence import SequenceTracker, Verdict
from coinfeed.framequeue import DroppedStream, FrameQueue, QueueItem
from coinfeed.gaps import SKEW_MARGIN, GapLedger, RecoveryRequests, new_run_id, window_end
from coinfeed.logs import RateLimitedLog
from coinfeed.status import ServiceStatus

CLOCK_SKEW_TOLERANCE = 0.5
"""Seconds a frame may seem to arrive before CoinAPI stamped it before coinfeed warns that
this machine's clock is behind (NTP)."""


def _wire_type(record: object) -> str:
    """The ``type`` a record was decoded from (its msgspec tag): one source for wire names."""
    return str(record.__struct_config__.tag)  # type: ignore[attr-defined]


class InputRecorder(Protocol):
    """Records what the processor takes, as it takes it (``coinfeed.recording``): together
    with the recovery answers it records, enough to run the same processor again."""

    def control(self, item: ControlItem) -> None:
        """``item`` is about to be handled (its state now, not when it was queued)."""

    async def batch(
        self,
        items: list[QueueItem],
        drops: list[DroppedStream],
        wall: datetime,
        now: float,
        reads: list[tuple[int, int, float]],
    ) -> None:
        """The batch just handled, with the clock readings it was handled at and when its
        frames were read (see :attr:`FrameQueue.taken_reads`); may wait."""

    async def end(self, wall: datetime, now: float) -> None:
        """The input ended cleanly (shutdown); the unfinished gaps were just reported."""


@attrs.define(slots=True)
class ProcessorCounters:
    """Plain counters (read by the metrics collector and the stats line)."""

    received: dict[str, int] = attrs.field(factory=dict)
    invalid: dict[str, int] = attrs.field(factory=dict)
    gaps: dict[str, int] = attrs.field(factory=dict)
    recoveries: dict[tuple[str, str], int] = attrs.field(factory=dict)
    behind_sequence: int = 0
    """Messages whose sequence was not above the last one seen (duplicates, late ones)."""
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
    recovery: RecoveryRequests
    emit: Callable[[list[Event]], Awaitable[None]]
    status: ServiceStatus
    symbols: frozenset[str]
    types: frozenset[str]
    decoder: FrameDecoder
    dedup: TradeDedup
    tracker: SequenceTracker = attrs.field(factory=SequenceTracker)
    books: Books = attrs.field(factory=Books)
    counters: ProcessorCounters = attrs.field(factory=ProcessorCounters)
    skew_margin: float = SKEW_MARGIN
    observe_batch: Callable[[float, int], None] = lambda _seconds, _frames: None
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    restart_from: dict[str, datetime] = attrs.field(factory=dict)
    """The restart checkpoint, per symbol (see :class:`~coinfeed.gaps.GapLedger`)."""
    restart_backfill_max: timedelta = timedelta(hours=24)
    run_id: str = attrs.field(factory=new_run_id)
    """Prefix of this run's gap ids (a replay passes the recorded one)."""
    recorder: InputRecorder | None = None
    bars: BarBuilder | None = None
    book_tops: BookTops | None = None
    latency: LatencyStats | None = None
    exrate_pairs: frozenset[str] = frozenset()
    """The ``BASE/QUOTE`` pairs whose exchange rates were asked for."""
    last_seen: dict[str, dict[str, float]] = attrs.field(factory=dict)
    """data type -> symbol id -> trio time of the batch its last message came in (read by the
    silent-symbol watch; duplicates and late messages count: the symbol is delivering)."""
    gaps: GapLedger = attrs.field(init=False)
    _connection_id: int = attrs.field(default=0, init=False)
    _last_trade_time: dict[str, str] = attrs.field(init=False)
    _restart_expected: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    _received_at: str = attrs.field(default="", init=False)
    _wall: datetime = attrs.field(factory=lambda: datetime.now(UTC), init=False)
    """The wall clock reading of the batch being handled (one per batch: replayable)."""
    _now: float = attrs.field(default=0.0, init=False)
    _trade_seen: dict[str, float] = attrs.field(init=False)
    _quote_seen: dict[str, float] = attrs.field(init=False)
    _book_seen: dict[str, float] = attrs.field(init=False)
    _skew_log: RateLimitedLog = attrs.field(
        factory=lambda: RateLimitedLog(interval=60.0), init=False
    )

    def __attrs_post_init__(self) -> None:
        self.gaps = GapLedger(
            recovery=self.recovery,
            books=self.books,
            dedup=self.dedup,
            gap_counts=self.counters.gaps,
            recovery_counts=self.counters.recoveries,
            backfill_trades="trade" in self.types,
            skew_margin=self.skew_margin,
            restart_from=self.restart_from,
            restart_backfill_max=self.restart_backfill_max,
            run_id=self.run_id,
        )
        self._last_trade_time = self.gaps.last_trade_time  # the hot path writes it per trade
        for data_type in self.types:  # every type's dict exists: no setdefault per message
            self.last_seen.setdefault(data_type, {})
        self._trade_seen = self.last_seen.setdefault("trade", {})
        self._quote_seen = self.last_seen.setdefault("quote", {})
        self._book_seen = self.last_seen.setdefault("book", {})

    async def run(self) -> None:
        """Process until the queue is closed and drained."""
        while True:
            items: list[QueueItem] = []
            drops: list[DroppedStream] = []
            try:
                # Woken by the clock with nothing queued, the batch is empty: a book snapshot
                # or a bar is due, and a quiet feed must not hold it back.
                with trio.move_on_at(self._wake_at()):
                    items, drops = await self.queue.get_batch()
            except trio.EndOfChannel:
                final: list[Event] = []
                now = trio.current_time()
                self.report_unfinished(final, now)
                if self.recorder is not None:
                    await self.recorder.end(self._wall, now)
                if final:
                    await self.emit(final)
                return
            started = trio.current_time()
            out: list[Event] = []
            self.handle_batch(items, drops, out, started)
            self.observe_batch(trio.current_time() - started, len(items))
            if self.recorder is not None:  # first: no sink gets an event of an unrecorded batch
                await self.recorder.batch(items, drops, self._wall, started, self.queue.taken_reads)
            if out:
                self.counters.events += len(out)
                await self.emit(out)
            self.sample_latency(items, self.queue.taken_reads)

    def _wake_at(self) -> float:
        """The trio time at which a book snapshot or a bar falls due (inf: none)."""
        due = min(
            self.book_tops.next_due if self.book_tops is not None else float("inf"),
            self.bars.next_due if self.bars is not None else float("inf"),
        )
        if due == float("inf"):
            return due
        return trio.current_time() + max(0.0, due - self.wall_clock().timestamp())

    def report_unfinished(self, out: list[Event], now: float) -> None:
        """At shutdown: every gap still pending ends ``unrecovered``; every bar not emitted
        yet goes out."""
        self._wall = self.wall_clock()
        received_at = utc_now_iso(self._wall)
        self.gaps.start_batch(received_at, now)
        self.gaps.report_unfinished(out)
        if self.bars is not None:
            self.bars.observe(out)
            self.bars.emit_all(self._wall.timestamp(), received_at, out)

    # -- one batch ----------------------------------------------------------------------------

    def handle_batch(
        self,
        items: list[QueueItem],
        drops: list[DroppedStream],
        out: list[Event],
        now: float,
    ) -> None:
        """Handle frames and control items in order, then the drops recorded behind them.

        ``now`` is the trio clock reading for this batch (resync pacing, backfill delays). Book
        snapshots due are taken before the batch is applied, bars due after it. Latency
        telemetry is :meth:`sample_latency`'s, once the events are out.
        """
        self._wall = wall = self.wall_clock()
        self._now = now
        self._received_at = received_at = utc_now_iso(wall)
        self.decoder.not_after = wall + FUTURE_TOLERANCE
        self.gaps.start_batch(received_at, now)
        epoch = wall.timestamp()
        if self.book_tops is not None:
            self.book_tops.emit_due(epoch, self.books, received_at, out)
        first_new = len(out)
        decode = self.decoder.decode
        on_trade, on_book, on_quote = self._on_trade, self._on_book, self._on_quote
        trades = books = quotes = frames = 0
        note_control = self.recorder.control if self.recorder is not None else None
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
                if note_control is not None:
                    note_control(item)  # type: ignore[arg-type]
                self._on_control(item, out)  # type: ignore[arg-type]
        counters = self.counters
        counters.frames += frames
        received = counters.received
        for name, n in (("book", books), ("trade", trades), ("quote", quotes)):
            if n:
                received[name] = received.get(name, 0) + n
        for dropped in drops:
            self._on_drop(dropped, out)
        if self.bars is not None:
            self.bars.observe(out[first_new:])
            self.bars.emit_due(epoch, received_at, out)

    def sample_latency(
        self, items: Sequence[QueueItem], reads: Sequence[tuple[int, int, float]] = ()
    ) -> None:
        """Latency telemetry of the batch :meth:`handle_batch` just handled, at its clock
        readings; called once its events are handed over, so measuring never delays them.
        ``reads`` says when the frames came off the socket (``FrameQueue.taken_reads``)."""
        if self.latency is None or not items:
            return
        now = self._now
        skew = self.latency.sample(items, reads, self._wall.timestamp(), now)
        if skew < -CLOCK_SKEW_TOLERANCE:
            self._skew_log.warning(
                "clock_skew",
                "frames arrive before CoinAPI's time_coinapi: this machine's clock is "
                "behind (check NTP), and latency figures are off by as much",
                now=now,
                seconds_behind=round(-skew, 3),
            )

    # -- market data --------------------------------------------------------------------------

    def _wanted(self, data_type: str, symbol_id: str) -> bool:
        if symbol_id in self.symbols and data_type in self.types:
            self.last_seen[data_type][symbol_id] = self._now
            return True
        self.counters.unrequested += 1
        return False

    def _implausible(self, data_type: str, symbol_id: str, sequence: int) -> None:
        """A sequence no connection can reach in one step: an invalid frame, not a gap."""
        self._on_invalid(
            InvalidFrame(
                "invalid_value",
                f"{data_type} {symbol_id} sequence {sequence} jumps from "
                f"{self.tracker.last(data_type, symbol_id)}",
                0,
            )
        )

    def _restarted(self, data_type: str, symbol_id: str, sequence: int) -> bool:
        """A BEHIND number right after a resubscribe is the stream's restart: take it as base."""
        key = (data_type, symbol_id)
        if key in self._restart_expected:
            self._restart_expected.discard(key)
            self.tracker.restart_stream(data_type, symbol_id, sequence)
            return True
        self.counters.behind_sequence += 1
        return False

    def _on_trade(self, msg: Trade, out: list[Event]) -> None:
        symbol_id = msg.symbol_id
        if symbol_id not in self.symbols or "trade" not in self.types:
            self.counters.unrequested += 1
            return
        self._trade_seen[symbol_id] = self._now
        obs = self.tracker.observe("trade", symbol_id, msg.sequence)
        verdict = obs.verdict
        if verdict is Verdict.BEHIND:
            if not self._restarted("trade", symbol_id, msg.sequence):
                return
        elif verdict is Verdict.GAP:
            self.gaps.trade_gap(
                symbol_id, obs.missing, window_end(msg.time_exchange), out,
                sequences=(msg.sequence - obs.missing - 1, msg.sequence),
                last_time=msg.time_exchange,
            )  # fmt: skip
        elif verdict is Verdict.IMPLAUSIBLE:
            self._implausible("trade", symbol_id, msg.sequence)
            return
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
        self._quote_seen[msg.symbol_id] = self._now
        if self._complete_state_stream("quote", msg.symbol_id, msg.sequence, out):
            out.append(quote_from_ws(msg, self._received_at))

    def _on_top_of_book(self, msg: Book5 | Book20 | Book50, out: list[Event]) -> None:
        data_type = _wire_type(msg)
        if not self._wanted(data_type, msg.symbol_id):
            return
        if self._complete_state_stream(data_type, msg.symbol_id, msg.sequence, out):
            out.append(book_from_ws(msg, self._received_at))

    def _complete_state_stream(
        self,
        data_type: str,
        symbol_id: str,
        sequence: int,
        out: list[Event],
    ) -> bool:
        """Streams whose every message is complete state: a gap is reported, nothing to repair."""
        obs = self.tracker.observe(data_type, symbol_id, sequence)
        if obs.verdict is Verdict.BEHIND:
            return self._restarted(data_type, symbol_id, sequence)
        if obs.verdict is Verdict.GAP:
            self.gaps.complete_state_gap(
                data_type, symbol_id, obs.missing, out,
                sequences=(sequence - obs.missing - 1, sequence),
            )  # fmt: skip
        elif obs.verdict is Verdict.IMPLAUSIBLE:
            self._implausible(data_type, symbol_id, sequence)
            return False
        return True

    def _on_book(self, msg: BookUpdate, out: list[Event]) -> None:
        symbol_id = msg.symbol_id
        if symbol_id not in self.symbols or "book" not in self.types:
            self.counters.unrequested += 1
            return
        self._book_seen[symbol_id] = self._now
        obs = self.tracker.observe("book", symbol_id, msg.sequence)
        if obs.verdict is Verdict.IMPLAUSIBLE:  # a snapshot too: it would become the base
            self._implausible("book", symbol_id, msg.sequence)
            return
        book = self.books.get_or_create(symbol_id)
        if msg.is_snapshot:
            # A snapshot is complete state whatever its number: it becomes the new base.
            self.tracker.restart_stream("book", symbol_id, msg.sequence)
            self._restart_expected.discard(("book", symbol_id))
            book.apply_snapshot(msg.asks, msg.bids, msg.sequence)
            self.gaps.book_synced(symbol_id, out)
            out.append(book_update_event(msg, self._received_at))
            return
        verdict = obs.verdict
        if verdict is Verdict.BEHIND:
            self._restarted("book", symbol_id, msg.sequence)
            return
        if book.state is not BookState.SYNCED:
            self.counters.unsynced_updates += 1
            if book.state is BookState.OUT_OF_SYNC:
                self.gaps.book_update_while_out_of_sync(symbol_id, out)
            return
        if verdict is Verdict.GAP:
            sequences = (msg.sequence - obs.missing - 1, msg.sequence)
            self.gaps.book_gap(symbol_id, "sequence", obs.missing, out, sequences=sequences)
            return
        book.apply_update(msg.asks, msg.bids, msg.sequence)
        out.append(book_update_event(msg, self._received_at))

    def _on_invalid(self, msg: InvalidFrame) -> None:
        self.counters.bump(self.counters.invalid, msg.reason)
        self.status.log_invalid(msg)

    def _on_ohlcv(self, msg: Ohlcv, out: list[Event]) -> None:
        if not self._wanted("ohlcv", msg.symbol_id):
            return
        if self._complete_state_stream("ohlcv", msg.symbol_id, msg.sequence, out):
            out.append(ohlcv_from_ws(msg, self._received_at))

    def _on_exrate(self, msg: Exrate, out: list[Event]) -> None:
        if "exrate" in self.types and asset_pair(msg.asset_id_base, msg.asset_id_quote) in (
            self.exrate_pairs
        ):
            out.append(exrate_from_ws(msg, self._received_at))
        else:
            self.counters.unrequested += 1

    def _on_other(self, msg: object, out: list[Event]) -> None:
        if isinstance(msg, Book5 | Book20 | Book50):
            self._on_top_of_book(msg, out)
        elif isinstance(msg, Ohlcv):
            self._on_ohlcv(msg, out)
        elif isinstance(msg, Exrate):
            self._on_exrate(msg, out)
        elif isinstance(msg, Error):
            self.status.server_error(self._connection_id, msg.message or "")
        elif isinstance(msg, Reconnect):
            logger.bind(within_seconds=msg.within_seconds, before_time=msg.before_time).info(
                "server announced a restart"
            )
            self.status.reconnect_announced_for = self._connection_id

    def _on_drop(self, dropped: DroppedStream, out: list[Event]) -> None:
        """Frames the queue dropped: repair their stream now (they precede all queued input)."""
        if dropped.connection_id != self._connection_id or dropped.max_sequence is None:
            return  # an older connection's drops: the reconnect backfill covers them
        data_type, symbol_id = dropped.data_type, dropped.symbol_id
        if symbol_id not in self.symbols or data_type not in self.types:
            return
        previous = self.tracker.last(data_type, symbol_id)
        obs = self.tracker.observe(data_type, symbol_id, dropped.max_sequence)
        if obs.verdict is Verdict.BEHIND or obs.verdict is Verdict.IMPLAUSIBLE:
            return  # nothing plausible was lost: the frames were late, or hostile
        if obs.verdict is Verdict.GAP:
            missing: int | None = obs.missing + 1
        elif obs.verdict is Verdict.NEXT:
            missing = 1
        else:
            missing = dropped.count
        # The dropped frames run up to max_sequence itself: the next number is after them.
        sequences = (previous, dropped.max_sequence + 1)
        if data_type == "trade":
            # Peeked, not validated: a time that is not one (or lies ahead) must not become
            # a window's end or the symbol's latest trade time.
            last_time = dropped.last_time_exchange
            if last_time is not None and checked_time(last_time, self.decoder.not_after) is None:
                last_time = None
            end = window_end(last_time) if last_time else self._wall
            self.gaps.trade_gap(
                symbol_id, missing, end, out, sequences=sequences, last_time=last_time
            )
            if last_time:
                self._last_trade_time[symbol_id] = max(
                    self._last_trade_time.get(symbol_id, ""), last_time
                )
        elif data_type == "book":
            self.gaps.book_gap(symbol_id, "sequence", missing, out, sequences=sequences)
        else:
            self.gaps.complete_state_gap(data_type, symbol_id, missing, out, sequences=sequences)

    # -- control items ------------------------------------------------------------------------

    def _on_control(self, item: ControlItem, out: list[Event]) -> None:
        if isinstance(item, ConnectionOpened):
            self._connection_id = item.connection_id
            if self.bars is not None:
                self.bars.went_live(item.at)
            self.tracker.reset()
            self._restart_expected.clear()
            self.gaps.connection_opened(item, self.symbols, out)
        elif isinstance(item, TradesRecovered):
            self.gaps.trades_recovered(item, out)
        elif isinstance(item, TradesUnrecovered):
            self.gaps.trades_unrecovered(item, out)
        elif isinstance(item, Resubscribed):
            if item.connection_id != self._connection_id:
                return
            for symbol_id in item.symbols:
                for data_type in self.types:
                    self._restart_expected.add((data_type, symbol_id))
            self.gaps.resubscribed(item.symbols, item.at, out)
        elif isinstance(item, InterimBook):
            book = self.books.get(item.book.symbol_id)
            if book is None or book.state is not BookState.SYNCED:
                out.append(book_from_rest(item.book, self._received_at))
        elif isinstance(item, ResyncFailed):
            self.gaps.resync_failed(item.symbol_id, out)
        elif isinstance(item, ConnectionLost):
            pass  # trackers reset when the next connection opens
        else:  # pragma: no cover - a bug, not input
            raise TypeError(f"unknown control item {item!r}")


@attrs.frozen
class Derivations:
    """What the processor derives besides the wire's events: bars, interval book snapshots
    and latency telemetry. A run records the settings that shape them, so a replay derives
    the same."""

    bars: tuple[str, ...] = ()
    bar_grace: float = 2.0
    book_snapshots: tuple[str, ...] = ()

    def as_header(self) -> dict[str, Any]:
        return {
            "bars": list(self.bars),
            "bar_grace": self.bar_grace,
            "book_snapshots": list(self.book_snapshots),
        }

    @classmethod
    def from_header(cls, processing: Mapping[str, Any]) -> Derivations:
        """A recording's (one made before these settings existed derives nothing)."""
        return cls(
            bars=tuple(processing.get("bars", ())),
            bar_grace=float(processing.get("bar_grace", 2.0)),
            book_snapshots=tuple(processing.get("book_snapshots", ())),
        )

    def builders(
        self, symbols: Iterable[str], types: Container[str], restart_from: Mapping[str, datetime]
    ) -> tuple[BarBuilder | None, BookTops | None]:
        bars = None
        if self.bars and "trade" in types:
            bars = BarBuilder(
                tuple(parse_period(period_id) for period_id in self.bars),
                grace=self.bar_grace,
                covered_from={s: at.timestamp() for s, at in restart_from.items()},
            )
        book_tops = None
        if self.book_snapshots and "book" in types:
            book_tops = BookTops(
                tuple(sorted({parse_schedule(text) for text in self.book_snapshots})),
                tuple(symbols),
            )
        return bars, book_tops
