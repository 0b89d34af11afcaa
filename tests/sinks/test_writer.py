"""The sink writer batches by size and by time, applies backpressure and retries failures."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from coinfeed.events import Event
from coinfeed.sinks.writer import EventChannel, SinkCounters, SinkWriter
from coinfeed.status import ServiceStatus
from tests.service.conftest import MemorySink
from tests.sinks.conftest import trade


@attrs.define(eq=False)
class RecordingSink(MemorySink):
    """Records each batch with the (virtual) time it was written; can be made to fail."""

    batches: list[tuple[float, list[Event]]] = attrs.field(factory=list)
    failing: bool = False

    def write_batch(self, events: list[Event]) -> None:
        if self.failing:
            raise ConnectionError("sink unreachable")
        self.batches.append((trio.current_time(), list(events)))
        super().write_batch(events)


def make_writer(
    *, batch: int = 10, interval: float = 1.0, capacity: int = 100
) -> tuple[SinkWriter, RecordingSink]:
    sink = RecordingSink()
    writer = SinkWriter(
        sink, EventChannel(capacity), ServiceStatus(), SinkCounters(),
        max_batch=batch, flush_interval=interval,
    )  # fmt: skip
    return writer, sink


async def test_a_full_batch_is_written_at_once_a_partial_one_after_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer, sink = make_writer(batch=10, interval=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        start = trio.current_time()
        await writer.channel.send([trade(n) for n in range(10)])
        await trio.sleep(0.01)
        assert [len(b) for _, b in sink.batches] == [10]
        assert sink.batches[0][0] - start < 0.01
        await writer.channel.send([trade(10), trade(11)])
        await trio.sleep(0.5)
        await writer.channel.send([trade(12)])
        await trio.sleep(0.4)
        assert len(sink.batches) == 1, "a partial batch must wait for the flush interval"
        await trio.sleep(0.2)
        assert [len(b) for _, b in sink.batches] == [10, 3]
        # Measured from the oldest waiting event, not the newest.
        assert abs(sink.batches[1][0] - (start + 1.01)) < 0.02
        writer.channel.close()


async def test_close_flushes_what_is_waiting_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer, sink = make_writer(batch=100, interval=60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send([trade(1), trade(2)])
        await trio.sleep(0.1)
        start = trio.current_time()
        writer.channel.close()
    assert trio.current_time() - start < 0.01
    assert [len(b) for _, b in sink.batches] == [2]
    assert sink.closed


async def test_a_blocked_sender_makes_the_writer_write_without_waiting_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer, sink = make_writer(batch=1000, interval=30.0, capacity=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        start = trio.current_time()
        for n in range(20):
            await writer.channel.send([trade(n)])
        assert trio.current_time() - start < 1.0
        assert writer.channel.peak <= 5
        writer.channel.close()
    assert len(sink.events) == 20


async def test_a_failing_sink_is_retried_reported_and_holds_at_most_its_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer, sink = make_writer(batch=4, interval=0.1, capacity=8)
    sink.failing = True
    sent = 0

    async def produce() -> None:
        nonlocal sent
        while sent < 500:
            await writer.channel.send([trade(sent)])
            sent += 1
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        nursery.start_soon(produce)
        await trio.sleep(20)
        assert writer.counters.errors["memory"] >= 5
        assert "memory" in writer.status.sink_failures
        assert writer.channel.peak <= 8
        assert sent <= 8 + 4 + 1, "the producer must be blocked, not buffered without bound"
        sink.failing = False
        await trio.sleep(10)
        assert writer.status.sink_failures == {}
        assert sent == 500
        writer.channel.close()
    assert len(sink.events) == 500
    uuids = [e.uuid for e in sink.events]  # type: ignore[union-attr]
    assert uuids == sorted(set(uuids)), "retries must neither duplicate nor reorder events"
