"""Replay: a recording fed through the same processor, books, dedup and sinks.

How this works: :class:`ReplayDriver` reads the segments oldest first and hands each recorded
batch to :meth:`Processor.handle_batch <coinfeed.processor.Processor.handle_batch>` with the
recorded clock readings, while :class:`ReplayRecovery` gives the gap ledger the answers recovery
gave it live. The processor's decisions (gaps, dedup, books) and its events are then the same as
in the recorded run, ``received_at`` included, so a JSON Lines sink fed by a replay holds the same
bytes as the one fed live. There is no connection and no REST call.

A directory may hold several runs (a process restarted on it); each run gets a fresh processor,
as it had live. A run that was killed has no ``END`` record: its last gaps stay ``pending``, as
they did in that run's sinks. ``--from`` starts at the segment holding that time, with a fresh
processor (books sync at their next snapshot in the recording), and emits events from that time
on; ``--to`` stops at the first batch after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio
from loguru import logger

from coinfeed.core.controls import TradeWindow
from coinfeed.core.decoding import FrameDecoder
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.events import Event
from coinfeed.core.latency import LatencyStats, exchanges_of
from coinfeed.core.protocol import exrate_pairs
from coinfeed.framequeue import DroppedStream, FrameQueue
from coinfeed.processor import Derivations, Processor, ProcessorCounters
from coinfeed.recording.format import (
    Batch,
    End,
    RecordingError,
    Sent,
    wall_from_ns,
    wall_ns,
    windows_of,
)
from coinfeed.recording.segments import SegmentTail, list_segments, read_segment
from coinfeed.recovery import RecoveryCounters
from coinfeed.status import ServiceStatus


class ReplayObserver(Protocol):
    """Told what a replay reads (``coinfeed recordings`` summarises segments with it)."""

    def segment_started(self, path: Path, header: dict[str, Any]) -> None: ...

    def record(self, record: object) -> None: ...

    def segment_ended(self, path: Path, tail: SegmentTail) -> None: ...


class ReplayDiverged(RecordingError):
    """The processor asked recovery something the recorded run did not: a different coinfeed
    version decided differently, so the replay cannot go on faithfully."""


@attrs.define(slots=True, eq=False)
class ReplayRecovery:
    """Answers the gap ledger as the recorded run's recovery did; never calls REST.

    A run replayed from its start asks exactly the recorded questions, batch by batch, and any
    difference stops the replay (:class:`ReplayDiverged`). A run entered part way (its first
    segments deleted, or ``--from``) starts with a processor that knows less than the live one
    did, so it asks fewer or other questions: it gets the batch's recorded answer to the same
    question when there is one, else the answer a live recovery gives when it has nothing in
    hand (a resync is accepted, an incomplete window is not fetched again, nothing is
    unfinished), and a batch's unused answers are dropped with it.
    """

    resync_timeout: float = 10.0
    counters: RecoveryCounters = attrs.field(factory=RecoveryCounters)
    partial: bool = False
    _answers: deque[dict[str, Any]] = attrs.field(factory=deque, init=False)

    def start_run(self, resync_timeout: float, *, partial: bool) -> None:
        self.resync_timeout = resync_timeout
        self.partial = partial
        self._answers.clear()

    def load(self, answers: list[dict[str, Any]]) -> None:
        """The recorded answers of the batch about to be handled."""
        self._answers.extend(answers)

    def finish_batch(self) -> None:
        """The batch is handled: every answer it recorded must have been asked for."""
        if self._answers and not self.partial:
            raise ReplayDiverged(
                f"the recording answered {self._answers[0].get('call')!r} where the processor "
                "asked nothing: it was recorded by a coinfeed that decided differently"
            )
        self._answers.clear()

    def _next(self, call: str, default: object) -> object:
        if self.partial:
            for index, answer in enumerate(self._answers):
                if answer.get("call") == call:
                    del self._answers[index]
                    return answer["value"]
            return default
        if not self._answers or self._answers[0].get("call") != call:
            recorded = self._answers[0].get("call") if self._answers else "nothing"
            raise ReplayDiverged(
                f"the processor asked recovery for {call!r} where the recording has {recorded!r}: "
                "it was recorded by a coinfeed that decided differently"
            )
        return self._answers.popleft()["value"]

    def request_backfill_nowait(self, window: TradeWindow) -> None:
        pass  # its outcome is in the recording, as the control items that answered it

    def request_resync_nowait(self, symbol_id: str) -> bool:
        return bool(self._next("resync", True))

    def retry_incomplete(self, window: TradeWindow) -> bool:
        return bool(self._next("retry", False))

    def unfinished_windows(self) -> list[TradeWindow]:
        return windows_of(self._next("unfinished", []))

    def book_synced(self, symbol_id: str) -> None:
        pass

    def connection_reset(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return 0

    def oldest_pending_age(self) -> float | None:
        return None


@attrs.define(slots=True)
class RecordedClock:
    """The processor's wall clock during a replay: the reading of the batch being replayed."""

    wall: datetime = attrs.field(factory=lambda: wall_from_ns(0))

    def read(self) -> datetime:
        return self.wall


@attrs.define(slots=True, eq=False)
class ReplayDriver:
    """Reads a recording and drives the processor with it (see module docstring)."""

    directory: Path
    new_processor: Callable[[dict[str, Any]], Processor]
    """A fresh processor for a run, from its segment header, on ``recovery`` and ``clock``."""
    emit: Callable[[list[Event]], Awaitable[None]]
    recovery: ReplayRecovery
    clock: RecordedClock
    speed: float | None = None
    """Recorded time runs this many times faster; None: as fast as it goes."""
    start_ns: int | None = None
    stop_ns: int | None = None
    observer: ReplayObserver | None = None
    processor: Processor | None = attrs.field(default=None, init=False)
    batches: int = attrs.field(default=0, init=False)
    _run_id: str | None = attrs.field(default=None, init=False)
    _pace_from: tuple[float, float] | None = attrs.field(default=None, init=False)

    def segments(self) -> list[Path]:
        """The segments to read: from the one holding ``start_ns`` on."""
        paths = check_recording(self.directory)
        if self.start_ns is None:
            return paths
        first = 0
        for index, path in enumerate(paths):
            if _started_ns(path) <= self.start_ns:
                first = index
        return paths[first:]

    async def run(self) -> None:
        for path in self.segments():
            tail = SegmentTail()
            records = read_segment(path, tail)
            if not await self._replay_segment(path, records):
                return
            if self.observer is not None:
                self.observer.segment_ended(path, tail)
            if tail.error or tail.truncated_bytes:
                logger.bind(path=str(path), bytes=tail.truncated_bytes, error=tail.error).warning(
                    "recording segment ends early (the recording process was killed?)"
                )

    async def _replay_segment(self, path: Path, records: Iterator[Any]) -> bool:
        """Replay one segment; False when ``stop_ns`` was passed."""
        try:
            header = next(records, None)
        except FileNotFoundError:  # retention of a recording still being written got there first
            logger.bind(path=str(path)).warning("recording segment deleted before it was read")
            return True
        if header is None:
            logger.bind(path=str(path)).warning("recording segment cut short before its header")
            return True
        if header["run_id"] != self._run_id:
            self._start_run(header)
        if self.observer is not None:
            self.observer.segment_started(path, header)
        for record in records:
            if self.observer is not None:
                self.observer.record(record)
            if isinstance(record, Batch):
                if self.stop_ns is not None and record.wall_ns > self.stop_ns:
                    return False
                await self._replay_batch(record)
            elif isinstance(record, End):
                await self._end_run(record)
            elif not isinstance(record, Sent):  # pragma: no cover - a new record kind
                raise RecordingError(f"{path}: unexpected record {record!r}")
            await trio.lowlevel.checkpoint()
        return True

    def _start_run(self, header: dict[str, Any]) -> None:
        if self._run_id is not None:
            logger.bind(run=self._run_id).info("replayed run ended without a clean stop")
        self._run_id = header["run_id"]
        self._pace_from = None
        partial = header.get("segment", 0) != 0
        self.recovery.start_run(float(header["processing"]["resync_timeout"]), partial=partial)
        if partial:  # a run entered part way: its checkpoint is moot
            header = {**header, "restart_from": {}}
        self.processor = self.new_processor(header)
        logger.bind(run=self._run_id, segment=header.get("segment"), part_way=partial).info(
            "replaying run"
        )

    async def _replay_batch(self, batch: Batch) -> None:
        processor = self.processor
        assert processor is not None
        emitting = self.start_ns is None or batch.wall_ns >= self.start_ns
        if emitting:  # the batches before --from only bring the processor up to date: no pause
            await self._pace(batch.now)
        self.clock.wall = wall_from_ns(batch.wall_ns)
        self.recovery.load(batch.answers)
        drops = [DroppedStream(**dropped) for dropped in batch.drops]
        out: list[Event] = []
        processor.handle_batch(batch.items, drops, out, batch.now)
        self.recovery.finish_batch()
        self.batches += 1
        if out and emitting:
            processor.counters.events += len(out)
            await self.emit(out)
        processor.sample_latency(batch.items)

    async def _end_run(self, end: End) -> None:
        processor = self.processor
        assert processor is not None
        self.clock.wall = wall_from_ns(end.wall_ns)
        self.recovery.load(end.answers)
        out: list[Event] = []
        processor.report_unfinished(out, end.now)
        self.recovery.finish_batch()
        self._run_id = None  # ended cleanly: nothing to report when the next one starts
        if out:
            processor.counters.events += len(out)
            await self.emit(out)

    async def _pace(self, recorded: float) -> None:
        if self.speed is None:
            return
        now = trio.current_time()
        if self._pace_from is None:
            self._pace_from = (recorded, now)
            return
        first_recorded, started = self._pace_from
        due = started + (recorded - first_recorded) / self.speed
        if due > now:
            await trio.sleep_until(due)


def processor_for(
    header: dict[str, Any],
    *,
    recovery: ReplayRecovery,
    clock: RecordedClock,
    emit: Callable[[list[Event]], Awaitable[None]],
    status: ServiceStatus,
    counters: ProcessorCounters,
    last_seen: dict[str, dict[str, float]],
    observe_batch: Callable[[float, int], None] = lambda _seconds, _frames: None,
    derivations: Derivations | None = None,
) -> Processor:
    """A processor set up as the run of ``header`` was (its symbols, types, processing
    settings, restart checkpoint and gap-id prefix), answered by ``recovery`` and reading
    ``clock``; ``counters`` and ``last_seen`` carry over from run to run."""
    processing = header["processing"]
    restart_from = {
        symbol_id: datetime.fromisoformat(at)
        for symbol_id, at in header.get("restart_from", {}).items()
    }
    if derivations is None:
        derivations = Derivations.from_header(processing)
    bars, book_tops = derivations.builders(header["symbols"], header["types"], restart_from)
    return Processor(
        queue=FrameQueue(1),  # never fed: batches come from the recording
        recovery=recovery,
        emit=emit,
        status=status,
        symbols=frozenset(header["symbols"]),
        types=frozenset(header["types"]),
        decoder=FrameDecoder(max_frame_bytes=processing["max_frame_bytes"]),
        dedup=TradeDedup(processing["dedup_capacity"]),
        counters=counters,
        observe_batch=observe_batch,
        wall_clock=clock.read,
        skew_margin=processing["skew_margin"],
        restart_from=restart_from,
        restart_backfill_max=timedelta(seconds=processing["restart_backfill_max"]),
        run_id=header["run_id"],
        last_seen=last_seen,
        bars=bars,
        book_tops=book_tops,
        latency=LatencyStats(exchanges_of(header["symbols"])),
        exrate_pairs=frozenset(exrate_pairs(header["symbols"])),
    )


def check_recording(directory: Path) -> list[Path]:
    """The segments of ``directory``, each header checked (``RecordingError`` naming the
    first problem: no segments, a segment of a newer format, a file that is no segment)."""
    paths = list_segments(directory)
    if not paths:
        raise RecordingError(f"no recording segments (*.cfrec) in {str(directory)!r}")
    for path in paths:
        try:
            next(read_segment(path), None)
        except OSError as exc:
            raise RecordingError(f"{path}: {exc.strerror}") from None
    return paths


def _started_ns(path: Path) -> int:
    """When a segment started, from its name (``20261206T140300.123Z-…``)."""
    stamp = path.name.split("Z-", 1)[0]
    return wall_ns(datetime.strptime(stamp + "+0000", "%Y%m%dT%H%M%S.%f%z"))
