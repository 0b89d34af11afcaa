"""One writer task per sink, and the hub the processor hands event batches to.

How this works: the processor sends each batch of events to every sink's :class:`EventChannel`,
whose capacity is counted in events. ``send`` waits while a sink is behind: that is the
backpressure (the one drop point stays the raw frame queue, whose gaps recovery repairs). A
writer takes everything waiting, up to ``max_batch`` events, and writes it (in a worker thread
for blocking sinks), so a slow disk or pipe never stalls the event loop. A failing write is
retried with backoff while the sink is reported failing (``ServiceStatus.sink_failures``, read
by /ready); its events are held, not dropped, and the bounded channel turns a long outage into
backpressure. When the hub closes, each writer drains its channel, writes, and closes its sink.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import attrs
import trio
from loguru import logger

from coinfeed.events import Event
from coinfeed.framequeue import QueueStatistics
from coinfeed.sinks.base import Sink
from coinfeed.status import ServiceStatus


@attrs.define(slots=True)
class SinkCounters:
    """Events written and write errors per sink (read by metrics)."""

    events: dict[str, int] = attrs.field(factory=dict)
    errors: dict[str, int] = attrs.field(factory=dict)


@attrs.define(slots=True, eq=False)
class EventChannel:
    """A bounded (in events) channel of event batches with a blocking ``send``."""

    capacity: int
    _batches: deque[list[Event]] = attrs.field(factory=deque, init=False)
    _events: int = attrs.field(default=0, init=False)
    peak: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _readers: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)
    _writers: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)

    async def send(self, batch: list[Event]) -> None:
        """Wait until the batch fits (an oversized batch waits for an empty channel), then add."""
        while self._events and self._events + len(batch) > self.capacity:
            await self._writers.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._batches.append(batch)
        self._events += len(batch)
        self.peak = max(self.peak, self._events)
        self._readers.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._readers.unpark_all()

    async def receive(self, max_events: int) -> list[Event]:
        """Wait for events; take whole batches up to ``max_events``. EndOfChannel when done."""
        while not self._batches:
            if self._closed:
                raise trio.EndOfChannel
            await self._readers.park()
        taken: list[Event] = []
        while self._batches and (not taken or len(taken) + len(self._batches[0]) <= max_events):
            taken.extend(self._batches.popleft())
        self._events -= len(taken)
        self._writers.unpark_all()
        return taken

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(self._events, self.capacity, self.peak, 0, len(self._batches))


@attrs.define(slots=True, eq=False)
class SinkWriter:
    """Writes one sink's events from its channel (see module docstring)."""

    sink: Sink
    channel: EventChannel
    status: ServiceStatus
    counters: SinkCounters
    max_batch: int = 5000
    retry_max: float = 5.0

    async def run(self) -> None:
        try:
            while True:
                try:
                    events = await self.channel.receive(self.max_batch)
                except trio.EndOfChannel:
                    return
                await self._write(events)
        finally:
            with trio.move_on_after(2.0, shield=True):
                await self._call(self.sink.close)
            logger.debug("sink closed sink={}", self.sink.name)

    def statistics(self) -> QueueStatistics:
        return self.channel.statistics()

    async def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self.sink.blocking:
            await trio.to_thread.run_sync(fn, *args)
        else:
            await trio.lowlevel.checkpoint()
            fn(*args)

    async def _write(self, events: list[Event]) -> None:
        name = self.sink.name
        attempt = 0
        while True:
            try:
                await self._call(self.sink.write_batch, events)
            except Exception as exc:  # a sink's failure is reported and retried, never fatal
                attempt += 1
                self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
                self.status.sink_failures[name] = f"{type(exc).__name__}: {exc}"
                delay = random.uniform(0, min(self.retry_max, 0.1 * 2**attempt))
                logger.error("sink write failed sink={} attempt={} error={}", name, attempt, exc)
                await trio.sleep(delay)
                continue
            if self.status.sink_failures.pop(name, None) is not None:
                logger.info("sink recovered sink={} attempts={}", name, attempt + 1)
            self.counters.events[name] = self.counters.events.get(name, 0) + len(events)
            return


@attrs.define(slots=True, eq=False)
class SinkHub:
    """Fans each batch out to every sink's channel; ``close`` lets the writers drain."""

    writers: list[SinkWriter]

    @classmethod
    def build(
        cls, sinks: list[Sink], status: ServiceStatus, counters: SinkCounters, *, capacity: int
    ) -> SinkHub:
        return cls([SinkWriter(s, EventChannel(capacity), status, counters) for s in sinks])

    async def send(self, events: list[Event]) -> None:
        for writer in self.writers:
            await writer.channel.send(events)

    def close(self) -> None:
        for writer in self.writers:
            writer.channel.close()
