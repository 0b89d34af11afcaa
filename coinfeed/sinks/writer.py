"""One writer task per sink, and the hub the processor hands event batches to.

How this works: the processor sends each batch of events to every sink's bounded channel
(``send`` blocks when a sink is behind: that is the backpressure; the one drop point stays the
raw frame queue). A writer coalesces what is waiting, up to ``max_batch`` events, and writes it
in a worker thread, so a slow disk or pipe never stalls the event loop. A failing write is
retried with backoff while the sink is reported failing (``ServiceStatus.sink_failures``, which
/ready reads); events are held, not dropped, and the bounded channel turns a long outage into
backpressure. When the hub closes, each writer drains its channel, writes, and closes the sink.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import trio
from loguru import logger

from coinfeed.events import Event
from coinfeed.sinks.base import Sink
from coinfeed.status import ServiceStatus


@attrs.define(slots=True)
class SinkCounters:
    """Events written and write errors per sink (read by metrics)."""

    events: dict[str, int] = attrs.field(factory=dict)
    errors: dict[str, int] = attrs.field(factory=dict)


@attrs.define(slots=True, eq=False)
class SinkWriter:
    """Writes one sink's events from its channel (see module docstring)."""

    sink: Sink
    receive: trio.MemoryReceiveChannel[list[Event]]
    status: ServiceStatus
    counters: SinkCounters
    max_batch: int = 5000
    retry_max: float = 5.0

    async def run(self) -> None:
        name = self.sink.name
        try:
            async for batch in self.receive:
                pending = list(batch)
                while len(pending) < self.max_batch:
                    try:
                        pending.extend(self.receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._write(pending)
        finally:
            with trio.move_on_after(2.0, shield=True):
                await self._call(self.sink.close)
            logger.debug("sink closed sink={}", name)

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
            except OSError as exc:
                attempt += 1
                self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
                self.status.sink_failures[name] = f"{type(exc).__name__}: {exc}"
                delay = random.uniform(0, min(self.retry_max, 0.1 * 2**attempt))
                logger.error("sink write failed sink={} attempt={} error={}", name, attempt, exc)
                await trio.sleep(delay)
                continue
            self.status.sink_failures.pop(name, None)
            self.counters.events[name] = self.counters.events.get(name, 0) + len(events)
            return


@attrs.define(slots=True, eq=False)
class SinkHub:
    """Fans each batch out to every sink's channel; ``aclose`` lets the writers drain."""

    _sends: list[trio.MemorySendChannel[list[Event]]]
    writers: list[SinkWriter]
    capacities: list[int]

    @classmethod
    def build(
        cls, sinks: list[Sink], status: ServiceStatus, counters: SinkCounters, *, capacity: int
    ) -> SinkHub:
        sends = []
        writers = []
        for sink in sinks:
            send, receive = trio.open_memory_channel[list[Event]](capacity)
            sends.append(send)
            writers.append(SinkWriter(sink, receive, status, counters))
        return cls(sends, writers, [capacity] * len(sinks))

    async def send(self, events: list[Event]) -> None:
        for channel in self._sends:
            await channel.send(events)

    def close(self) -> None:
        for channel in self._sends:
            channel.close()

    def depths(self) -> list[tuple[str, int, int]]:
        """(sink name, batches waiting, capacity in batches) per sink."""
        return [
            (w.sink.name, s.statistics().current_buffer_used, cap)
            for w, s, cap in zip(self.writers, self._sends, self.capacities, strict=True)
        ]
