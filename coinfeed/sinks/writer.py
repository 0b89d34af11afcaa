"""One writer task per sink, and the hub the processor hands event batches to.

How this works: the processor sends each batch of events to every sink's :class:`EventChannel`,
whose capacity is counted in events. ``send`` waits while a sink is behind: that is the
backpressure (the one drop point stays the raw frame queue, whose gaps recovery repairs).
A writer writes when ``max_batch`` events are waiting, when ``flush_interval`` seconds have passed
since the oldest waiting event arrived, when a sender is blocked on a full channel, or when the
channel closes, whichever comes first; so a sink is never more than about ``flush_interval``
behind, and waiting events stay in the channel (counted against its capacity) until written.
Writes run in a worker thread for blocking sinks, so a slow disk or socket never stalls the event
loop. A sink that writes bytes has its channel encode each batch as it is sent
(:class:`EncodedBatch`). A failing write is retried with backoff, with the same batch, while the
sink is reported failing (``ServiceStatus.sink_failures``, read by /ready, and
``sink_errors_total``); its events are held, not dropped, and the bounded channel turns a long
outage into backpressure. When the hub closes, each writer drains its channel, writes, and closes
its sink.

A sink that holds events and has not finished a write for a while is *stalled*
(:meth:`SinkWriter.stalled_for`; /ready reports it past ``sink_stall_after``): a write blocked in
its thread (a pipe nobody reads, a hung server) shows here before anything fails. Worker threads
are abandoned when the writer is cancelled (the shutdown deadline passed), so a write that never
returns cannot keep the process alive; the abandoned sink is not closed under the thread's feet.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs
import msgspec
import trio
from loguru import logger

from coinfeed.core.backoff import full_jitter
from coinfeed.core.events import Event
from coinfeed.framequeue import QueueStatistics
from coinfeed.sinks.base import Sink
from coinfeed.status import ServiceStatus

PERMANENT_ERRORS: Final[tuple[type[Exception], ...]] = (
    ValueError,
    TypeError,
    ArithmeticError,
    msgspec.MsgspecError,
)
"""Failures that say "this event cannot be stored", not "the sink is away": a batch failing with
one is written event by event, and the events that fail alone are set aside. A sink may name
more in its own ``permanent_errors`` (SQLite's binding errors, say)."""

ENCODE_SLICE = 1000
"""Most events encoded without a checkpoint, ~0.4 ms (see :func:`encode_in_slices`)."""


@attrs.frozen
class EncodedBatch:
    """A batch of events a channel encoded as it was sent (:attr:`EventChannel.encode`): the
    sink's bytes and how many events they hold."""

    data: bytes
    events: int

    def __len__(self) -> int:
        return self.events


Batch = list[Event] | EncodedBatch
"""What a channel holds per ``send``: the events, or their bytes when the channel encodes."""


async def encode_in_slices(encode: Callable[[list[Event]], bytes], batch: list[Event]) -> bytes:
    """``encode(batch)`` in slices of :data:`ENCODE_SLICE` events with a checkpoint after each,
    so a large batch does not stall the event loop for its whole length. Not smaller: every
    checkpoint waits a scheduling round, and a slower hand-off lets the processor fill the
    channel (``docs/performance.md``)."""
    if len(batch) <= ENCODE_SLICE:
        return encode(batch)
    parts = []
    for start in range(0, len(batch), ENCODE_SLICE):
        parts.append(encode(batch[start : start + ENCODE_SLICE]))
        await trio.lowlevel.checkpoint()
    return b"".join(parts)


@attrs.define(slots=True)
class SinkCounters:
    """Events written and write errors per sink (read by metrics)."""

    events: dict[str, int] = attrs.field(factory=dict)
    errors: dict[str, int] = attrs.field(factory=dict)
    rejected: dict[str, int] = attrs.field(factory=dict)
    """Events set aside because the sink cannot store them (see :data:`PERMANENT_ERRORS`)."""


@attrs.define(slots=True)
class _Isolation:
    """Progress through a batch written event by event after a permanent failure."""

    batch: int = -1
    position: int = 0
    rejected: list[tuple[Event, Exception]] = attrs.field(factory=list)


@attrs.define(slots=True, eq=False)
class EventChannel:
    """A bounded (in events) channel of event batches with a blocking ``send``.

    Events taken by :meth:`take` still count against the capacity until the writer calls
    :meth:`release` (written), so ``capacity`` bounds every event the sink holds.

    With ``encode`` (a sink that writes bytes), each batch is encoded as it is sent and the
    channel keeps only the bytes: the events are encoded while they are still in the CPU's
    caches and freed with the sender's batch, instead of piling up (~700 B each) until the
    writer takes them. A batch that fails to encode is kept as events, for the writer to find
    the event the sink cannot store.
    """

    capacity: int
    encode: Callable[[list[Event]], bytes] | None = None
    _batches: deque[tuple[float, Batch, int]] = attrs.field(factory=deque, init=False)
    _events: int = attrs.field(default=0, init=False)
    """Events waiting plus events taken and not yet released."""
    _waiting: int = attrs.field(default=0, init=False)
    peak: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _wake_at: int = attrs.field(default=1, init=False)
    """Waiting events at which a ``send`` wakes the parked reader (it sets this before parking;
    waking it earlier would only make it check and park again)."""
    _readers: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)
    _writers: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)

    taken_number: int = attrs.field(default=0, init=False)
    """The number of the last batch :meth:`take` took."""

    async def send(self, events: list[Event], number: int = 0) -> None:
        """Wait until the batch fits (an oversized batch waits for an empty channel), then add.
        ``number`` identifies the batch to :attr:`taken_number` (the hub counts them)."""
        batch: Batch = events
        if self.encode is not None and events:
            # Kept as events when they fail to encode: the writer sets aside the one at fault.
            with contextlib.suppress(*PERMANENT_ERRORS):
                batch = EncodedBatch(await encode_in_slices(self.encode, events), len(events))
        while self._events and self._events + len(batch) > self.capacity:
            self._readers.unpark_all()  # a blocked sender makes the writer write what it has
            await self._writers.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._batches.append((trio.current_time(), batch, number))
        self._events += len(batch)
        self._waiting += len(batch)
        self.peak = max(self.peak, self._events)
        if self._waiting >= self._wake_at:
            self._readers.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._readers.unpark_all()

    @property
    def oldest_arrival(self) -> float | None:
        """When the oldest waiting batch arrived (trio clock), or None when empty."""
        return self._batches[0][0] if self._batches else None

    def _ready(self, min_events: int) -> bool:
        blocked = self._writers.statistics().tasks_waiting > 0
        return self._closed or blocked or self._waiting >= min(min_events, self.capacity)

    async def wait_batch(self, min_events: int, max_wait: float) -> None:
        """Wait for ``min_events`` waiting events, at most ``max_wait`` s after the oldest arrived.

        Returns early when the channel closes or a sender is blocked on it. EndOfChannel when
        closed and empty.
        """
        while not self._batches:
            if self._closed:
                raise trio.EndOfChannel
            self._wake_at = 1
            await self._readers.park()
        oldest = self._batches[0][0]
        with trio.move_on_at(oldest + max_wait):
            while not self._ready(min_events):
                self._wake_at = min(min_events, self.capacity)
                await self._readers.park()
        await trio.lowlevel.checkpoint()

    def take(self, max_events: int) -> list[Batch]:
        """Take whole batches of up to ``max_events`` events together (at least one batch when
        any is waiting); they keep their place in the capacity until :meth:`release`."""
        taken: list[Batch] = []
        events = 0
        while self._batches and (not taken or events + len(self._batches[0][1]) <= max_events):
            _, batch, self.taken_number = self._batches.popleft()
            taken.append(batch)
            events += len(batch)
        self._waiting -= events
        return taken

    def release(self, n: int) -> None:
        """``n`` taken events are written: their room goes back to senders."""
        self._events -= n
        self._writers.unpark_all()

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(self._events, self.capacity, self.peak, 0, len(self._batches))


@attrs.define(slots=True, eq=False)
class SinkWriter:
    """Writes one sink's events from its channel (see module docstring)."""

    sink: Sink
    channel: EventChannel
    status: ServiceStatus
    counters: SinkCounters
    max_batch: int = 1000
    flush_interval: float = 0.5
    retry_max: float = 5.0
    split: bool = True
    """Whether a large hand-off is written as batches of ``max_batch``; the recording's writer
    takes each hand-off whole, so a segment never ends inside a record."""
    written_number: int = attrs.field(default=0, init=False)
    """The number of the last batch this sink has written (or set aside events of)."""
    _set_aside: int = attrs.field(default=0, init=False)
    """The sink's ``events_set_aside`` already counted as rejected."""
    _rng: random.Random = attrs.field(factory=random.Random, init=False)
    _writing_since: float | None = attrs.field(default=None, init=False)
    _progress_at: float = attrs.field(default=0.0, init=False)
    _in_thread: bool = attrs.field(default=False, init=False)
    """When the last write finished (or the writer started)."""

    async def run(self) -> None:
        self._progress_at = trio.current_time()
        abandoned = False
        try:
            flush = getattr(self.sink, "flush", None)
            idle_every = getattr(self.sink, "flush_every", math.inf)
            while True:
                try:
                    with trio.move_on_after(idle_every) as idle:
                        await self.channel.wait_batch(self.max_batch, self.flush_interval)
                except trio.EndOfChannel:
                    if flush is not None:
                        await self._flush(flush, everything=True)
                    return
                if idle.cancelled_caught:
                    if flush is not None:
                        await self._flush(flush, everything=False)
                    continue
                # Up to half the channel per hand-off: the processor fills the other half while
                # a worker thread writes, and one thread hop is paid per several batches.
                taken = self.channel.take(max(self.max_batch, self.channel.capacity // 2))
                number = self.channel.taken_number
                self._writing_since = trio.current_time()
                try:
                    await self._write(taken)
                except trio.Cancelled:
                    abandoned = self._in_thread  # that thread may still be inside the sink
                    raise
                finally:
                    self.channel.release(sum(map(len, taken)))
                self._writing_since = None
                self._progress_at = trio.current_time()
                self._written(number)
        finally:
            if not abandoned:
                with trio.move_on_after(1.0, shield=True):
                    await self._call(self.sink.close)
                logger.bind(sink=self.sink.name).debug("sink closed")

    def _written(self, number: int) -> None:
        """Batch ``number`` is written (0: a flush). Events a sink set aside after taking
        them in (``events_set_aside``: Parquet finds them when it converts its spool) are
        counted as rejected, not written."""
        if number:
            self.written_number = number
        set_aside = getattr(self.sink, "events_set_aside", 0)
        if set_aside > self._set_aside:
            name = self.sink.name
            new = set_aside - self._set_aside
            self.counters.rejected[name] = self.counters.rejected.get(name, 0) + new
            self.counters.events[name] = self.counters.events.get(name, 0) - new
            self._set_aside = set_aside

    def held(self) -> int:
        """Events this sink holds: waiting in its channel or being written."""
        return self.channel.statistics().depth

    def stalled_for(self, now: float) -> float:
        """Seconds this sink has held events without finishing a write (0 when it holds none)."""
        # Waiting events are due ``flush_interval`` after they arrive: a writer holding a
        # partial batch on purpose is not stalled.
        oldest = self.channel.oldest_arrival
        due = [] if oldest is None else [oldest + self.flush_interval]
        if self._writing_since is not None:
            due.append(self._writing_since)
        if not due or not self.held():
            return 0.0
        return max(0.0, now - max(min(due), self._progress_at))

    def statistics(self) -> QueueStatistics:
        return self.channel.statistics()

    async def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self.sink.blocking:
            # Abandoned on cancel: a write blocked for ever must not hold up the shutdown.
            self._in_thread = True
            try:
                await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
            finally:
                self._in_thread = False
        else:
            await trio.lowlevel.checkpoint()
            fn(*args)

    def _write_batches(
        self, batches: list[Batch], written: list[int], isolation: _Isolation
    ) -> None:
        """Write ``batches`` from ``written[0]`` on, counting each one done in ``written`` (runs
        in the worker thread for a blocking sink)."""
        for batch in batches[written[0] :]:
            if isinstance(batch, EncodedBatch):
                self.sink.write_encoded(batch.data)  # type: ignore[attr-defined]
            elif isolation.batch == written[0]:
                self._write_one_by_one(batch, isolation)
            else:
                self.sink.write_batch(batch)
            written[0] += 1

    def _write_one_by_one(self, batch: list[Event], isolation: _Isolation) -> None:
        """Write each event of ``batch`` alone; one that fails permanently is set aside. Any
        other failure propagates, and the retry resumes at the event it stopped at."""
        permanent = self._permanent_errors()
        for event in batch[isolation.position :]:
            try:
                self.sink.write_batch([event])
            except permanent as exc:
                isolation.rejected.append((event, exc))
            isolation.position += 1

    def _permanent_errors(self) -> tuple[type[Exception], ...]:
        return PERMANENT_ERRORS + tuple(getattr(self.sink, "permanent_errors", ()))

    def _count(self, batches: list[Batch], counted: int, written: int) -> int:
        name = self.sink.name
        n = sum(len(batch) for batch in batches[counted:written])
        self.counters.events[name] = self.counters.events.get(name, 0) + n
        return written

    def _regroup(self, taken: list[Batch]) -> list[Batch]:
        """The batches to write: runs of event batches joined and cut into ``max_batch``
        events (whole with ``split`` off), runs of encoded ones joined up to ``max_batch``."""
        size = self.max_batch if self.split else sys.maxsize
        out: list[Batch] = []
        events: list[Event] = []
        parts: list[bytes] = []
        encoded = 0  # events in parts
        for batch in [*taken, None]:
            if events and not isinstance(batch, list):
                out.extend(events[i : i + size] for i in range(0, len(events), size))
                events = []
            if parts and (not isinstance(batch, EncodedBatch) or encoded + len(batch) > size):
                # One join per run: adding to the bytes batch by batch would copy them again
                # for every small batch.
                out.append(EncodedBatch(b"".join(parts), encoded))
                parts, encoded = [], 0
            if isinstance(batch, EncodedBatch):
                parts.append(batch.data)
                encoded += len(batch)
            elif batch is not None:
                events.extend(batch)
        return out

    async def _write(self, taken: list[Batch]) -> None:
        """Write what was taken as batches of at most ``max_batch`` events, in one call to the
        worker thread; a failed batch is retried (the same object) after those before it."""
        name = self.sink.name
        batches = self._regroup(taken)
        # A sink that writes bytes gets them encoded on the event loop (by its channel as they
        # were sent, or here): the worker thread then needs the GIL only around its system
        # calls, so its hand-off comes back quickly (encoding in the thread held the GIL as
        # long, and made every hand-off wait for it).
        encode = getattr(self.sink, "encode_batch", None)
        if encode is not None:
            for index, batch in enumerate(batches):
                if isinstance(batch, list):
                    try:
                        data = await encode_in_slices(encode, batch)
                    except PERMANENT_ERRORS:
                        continue  # an event that cannot be encoded: found and set aside below
                    batches[index] = EncodedBatch(data, len(batch))
        written = [0]
        isolation = _Isolation()
        counted = attempt = 0
        while True:
            try:
                await self._call(self._write_batches, batches, written, isolation)
            except Exception as exc:  # a sink's failure is reported and retried, never fatal
                if (
                    isinstance(exc, self._permanent_errors())
                    and isolation.batch != written[0]
                    and isinstance(batches[written[0]], list)
                ):
                    # This batch holds an event the sink cannot store: find it, keep the rest.
                    isolation.batch, isolation.position = written[0], 0
                    self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
                    continue
                counted = self._count(batches, counted, written[0])
                attempt += 1
                await self._failed(exc, attempt, "sink write failed")
                continue
            self._count(batches, counted, written[0])
            self._report_rejected(isolation.rejected)
            self._succeeded(attempt)
            return

    async def _flush(self, flush: Callable[[bool], None], *, everything: bool) -> None:
        """Let a sink that buffers write what is due (``everything`` once the channel closed),
        retried with backoff and reported like a failing write."""
        attempt = 0
        while True:
            try:
                await self._call(flush, everything)
            except Exception as exc:  # reported and retried, like a failing write
                attempt += 1
                await self._failed(exc, attempt, "sink flush failed")
                continue
            self._succeeded(attempt)
            self._progress_at = trio.current_time()
            self._written(0)  # a roll may have set events aside
            return

    async def _failed(self, exc: Exception, attempt: int, what: str) -> None:
        """Report failed ``attempt`` (counted, on /ready, logged), then wait its backoff."""
        name = self.sink.name
        self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
        self.status.sink_failures[name] = f"{type(exc).__name__}: {exc}"
        logger.bind(sink=name, attempt=attempt, error=str(exc)).error(what)
        await trio.sleep(full_jitter(attempt + 1, base=0.1, cap=self.retry_max, rng=self._rng))

    def _succeeded(self, failed_attempts: int) -> None:
        """A write or flush went through after ``failed_attempts`` failures."""
        name = self.sink.name
        if self.status.sink_failures.pop(name, None) is not None:
            logger.bind(sink=name, attempts=failed_attempts + 1).info("sink recovered")

    def _report_rejected(self, rejected: list[tuple[Event, Exception]]) -> None:
        if not rejected:
            return
        name = self.sink.name
        self.counters.rejected[name] = self.counters.rejected.get(name, 0) + len(rejected)
        # They were counted as written with their batch; they were not.
        self.counters.events[name] = self.counters.events.get(name, 0) - len(rejected)
        for event, exc in rejected:
            logger.bind(
                sink=name,
                kind=event.__struct_config__.tag,
                symbol_id=getattr(event, "symbol_id", None),
                error=f"{type(exc).__name__}: {exc}",
            ).error("event set aside: the sink cannot store it")


@attrs.define(slots=True, eq=False)
class SinkHub:
    """Fans each batch out to every sink's channel; ``close`` lets the writers drain."""

    writers: list[SinkWriter]
    recorder: SinkWriter | None = None
    """The recording's writer (``coinfeed.recording``): run, watched and closed with the sinks,
    fed by the processor directly, and not one the restart checkpoint waits for."""
    sent_batches: int = 0
    """Batches handed to the sinks so far (each writer's ``written_number`` counts up to it)."""

    @classmethod
    def build(
        cls,
        sinks: list[Sink],
        status: ServiceStatus,
        counters: SinkCounters,
        *,
        capacity: int,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
    ) -> SinkHub:
        """One writer per sink, each with its own channel of ``capacity`` events."""
        return cls(
            [
                SinkWriter(
                    s,
                    EventChannel(capacity, encode=getattr(s, "encode_batch", None)),
                    status,
                    counters,
                    max_batch=batch_size,
                    flush_interval=flush_interval,
                )
                for s in sinks
            ]
        )

    async def send(self, events: list[Event]) -> None:
        self.sent_batches += 1
        number = self.sent_batches
        for writer in self.writers:
            await writer.channel.send(events, number)

    @property
    def all_writers(self) -> list[SinkWriter]:
        """The sinks' writers and the recording's."""
        return self.writers if self.recorder is None else [*self.writers, self.recorder]

    def stalled(self, now: float, after: float) -> list[tuple[str, int, float]]:
        """``(name, events held, seconds)`` of each sink stalled for more than ``after`` s."""
        stalls = [(w.sink.name, w.held(), w.stalled_for(now)) for w in self.all_writers]
        return [stall for stall in stalls if stall[2] > after]

    def written_batches(self) -> int:
        """Batches every sink has written: the restart checkpoint may claim no later one."""
        return min((w.written_number for w in self.writers), default=self.sent_batches)

    def close(self) -> None:
        for writer in self.all_writers:
            writer.channel.close()
