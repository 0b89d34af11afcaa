"""The sink writer batches by size and by time, applies backpressure and retries failures."""

from __future__ import annotations

import threading
from pathlib import Path

import attrs
import msgspec
import trio
import trio.testing

from coinfeed.core.events import Event, encode_lines
from coinfeed.sinks.jsonl import JsonlSink
from coinfeed.sinks.writer import EncodedBatch, EventChannel, SinkCounters, SinkHub, SinkWriter
from coinfeed.status import ServiceStatus
from tests.helpers import MemorySink, trade


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
        # The batch being retried still counts against the capacity.
        assert sent <= 8 + 1, "the producer must be blocked, not buffered without bound"
        sink.failing = False
        await trio.sleep(10)
        assert writer.status.sink_failures == {}
        assert sent == 500
        writer.channel.close()
    assert len(sink.events) == 500
    uuids = [e.uuid for e in sink.events]  # type: ignore[union-attr]
    assert uuids == sorted(set(uuids)), "retries must neither duplicate nor reorder events"


@attrs.define(eq=False)
class FlakySink(RecordingSink):
    """Fails the write of its ``fail_on``-th batch once (counting from 1)."""

    fail_on: int = 0
    calls: int = 0

    def write_batch(self, events: list[Event]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise ConnectionError("one failure")
        super().write_batch(events)


async def test_one_hand_off_writes_what_waits_in_batches_and_a_retry_resumes_where_it_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = FlakySink(fail_on=3)
    writer = SinkWriter(
        sink, EventChannel(40), ServiceStatus(), SinkCounters(), max_batch=4, flush_interval=1.0
    )
    # 18 events wait before the writer starts: it takes half the channel (20 events at most,
    # whole sends) in one hand-off and writes them as batches of at most 4.
    for start in range(0, 18, 6):
        await writer.channel.send([trade(n) for n in range(start, start + 6)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.sleep(5)
        writer.channel.close()
    assert [len(b) for _, b in sink.batches] == [4, 4, 4, 4, 2]
    assert sink.calls == 6, "the failed third batch is written again, the first two are not"
    uuids = [e.uuid for e in sink.events]  # type: ignore[union-attr]
    assert uuids == [trade(n).uuid for n in range(18)]
    assert writer.counters.events["memory"] == 18
    assert writer.counters.errors["memory"] == 1
    assert writer.status.sink_failures == {}


async def test_a_sender_waits_while_taken_events_are_being_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    channel = EventChannel(10)
    await channel.send([trade(n) for n in range(8)])
    taken = channel.take(8)
    assert sum(map(len, taken)) == 8
    sent = trio.Event()

    async def send() -> None:
        await channel.send([trade(8), trade(9), trade(10)])
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.sleep(1)
        assert not sent.is_set(), "8 taken + 3 new would exceed the capacity of 10"
        channel.release(8)
        await trio.sleep(0.01)
        assert sent.is_set()
    assert channel.statistics().depth == 3


@attrs.define(eq=False)
class BytesSink:
    """A blocking sink that takes encoded lines, like the JSONL sink; fails its first write."""

    name: str = "bytes"
    blocking: bool = True
    encoded_in: list[str] = attrs.field(factory=list)
    written: list[bytes] = attrs.field(factory=list)
    attempts: int = 0

    def encode_batch(self, events: list[Event]) -> bytes:
        self.encoded_in.append(threading.current_thread().name)
        return encode_lines(events)

    def write_encoded(self, data: bytes) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise OSError("disk full")
        self.written.append(data)

    def write_batch(self, events: list[Event]) -> None:  # pragma: no cover - not called
        raise AssertionError("the writer must use encode_batch/write_encoded")

    def close(self) -> None:
        pass


async def test_a_bytes_sink_is_encoded_on_the_event_loop_and_retried_with_the_same_bytes() -> None:
    sink = BytesSink()
    writer = SinkWriter(
        sink, EventChannel(10), ServiceStatus(), SinkCounters(), max_batch=3, flush_interval=0.05
    )
    events = [trade(n) for n in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send(events)
        writer.channel.close()
    # Encoding ran in the event loop's thread (the worker thread only writes bytes)...
    assert set(sink.encoded_in) == {threading.main_thread().name}
    assert len(sink.encoded_in) == 2, "encoded once per batch, not again for the retry"
    # ...and the failed first batch went out again, byte for byte, before the second.
    assert sink.written == [encode_lines(events[:3]), encode_lines(events[3:])]
    assert writer.counters.events["bytes"] == 5


async def test_a_large_batch_is_encoded_in_slices_that_join_into_the_same_lines() -> None:
    sink = BytesSink()
    writer = SinkWriter(
        sink, EventChannel(3000), ServiceStatus(), SinkCounters(), max_batch=3000,
        flush_interval=0.05,
    )  # fmt: skip
    events = [trade(n) for n in range(2500)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send(events)
        writer.channel.close()
    assert len(sink.encoded_in) == 3, "2,500 events: three slices of at most 1,000"
    assert sink.written == [encode_lines(events)]


@attrs.define(eq=False)
class PickySink(MemorySink):
    """Cannot store a sequence above 2**62 (like SQLite's INTEGER): the whole batch raises."""

    blocking: bool = True
    calls: int = 0

    def write_batch(self, events: list[Event]) -> None:
        self.calls += 1
        if any((getattr(e, "sequence", 0) or 0) > 2**62 for e in events):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        super().write_batch(events)


async def test_an_event_the_sink_cannot_store_is_set_aside_and_the_rest_is_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = PickySink()
    counters = SinkCounters()
    status = ServiceStatus()
    writer = SinkWriter(sink, EventChannel(100), status, counters, max_batch=10)
    events: list[Event] = [trade(n) for n in range(1, 13)]
    events[4] = trade(2**63 - 1)  # in place of 5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send(events)
        writer.channel.close()
    assert [e.sequence for e in sink.events] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]  # type: ignore[union-attr]
    assert counters.rejected == {"memory": 1}
    assert counters.events == {"memory": 11}
    assert status.sink_failures == {}
    assert sink.calls < 20  # isolated once, not retried for ever


async def test_a_write_that_never_returns_is_a_stall_and_a_cancel_abandons_it() -> None:
    release = threading.Event()

    @attrs.define(eq=False)
    class HungSink(MemorySink):
        blocking: bool = True

        def write_batch(self, events: list[Event]) -> None:
            release.wait()  # a pipe nobody reads, a server that never answers

    writer = SinkWriter(HungSink(), EventChannel(100), ServiceStatus(), SinkCounters(),
                        max_batch=1, flush_interval=0.01)  # fmt: skip
    hub = SinkHub([writer])
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await hub.send([trade(1)])
            await hub.send([trade(2)])
            await trio.sleep(0.3)
            assert hub.stalled(trio.current_time(), 1.0) == []  # not yet
            await trio.sleep(1.0)
            [(name, held, seconds)] = hub.stalled(trio.current_time(), 1.0)
            assert (name, held) == ("memory", 2) and seconds > 1.0
            nursery.cancel_scope.cancel()  # returns although the thread is still in the write
    finally:
        release.set()
    assert hub.stalled(trio.current_time(), 0.0) == []  # nothing held once given up


async def test_a_partial_batch_waiting_for_its_flush_is_not_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer, _sink = make_writer(batch=100, interval=2.0)
    hub = SinkHub([writer])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await hub.send([trade(1)])
        await trio.sleep(1.5)  # held on purpose until the flush interval has passed
        assert hub.stalled(trio.current_time(), 1.0) == []
        writer.channel.close()


async def test_a_channel_that_encodes_keeps_each_batch_as_its_bytes() -> None:
    # The events are encoded as they are sent and freed with the sender's batch; the channel
    # still counts them against its capacity.
    channel = EventChannel(10, encode=encode_lines)
    events = [trade(n) for n in range(5)]
    await channel.send(events[:3])
    await channel.send(events[3:])
    assert channel.statistics().depth == 5
    assert channel.take(10) == [
        EncodedBatch(encode_lines(events[:3]), 3),
        EncodedBatch(encode_lines(events[3:]), 2),
    ]


async def test_batches_encoded_as_sent_are_written_in_order_and_retried_unchanged() -> None:
    sink = BytesSink()
    [writer] = SinkHub.build(
        [sink], ServiceStatus(), SinkCounters(), capacity=10, batch_size=3, flush_interval=0.05
    ).writers
    events = [trade(n) for n in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for event in events:  # one event per send: joined into writes of at most 3
            await writer.channel.send([event])
        writer.channel.close()
    assert len(sink.encoded_in) == 5, "encoded once as sent, never again for the retry"
    assert sink.written == [encode_lines(events[:3]), encode_lines(events[3:])]
    assert writer.counters.events["bytes"] == 5


async def test_an_event_that_cannot_be_encoded_is_set_aside_when_its_channel_encodes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    counters = SinkCounters()
    [writer] = SinkHub.build(
        [JsonlSink.open(str(path))], ServiceStatus(), counters, capacity=100, flush_interval=0.05
    ).writers
    events: list[Event] = [trade(n) for n in range(1, 5)]
    events[2] = msgspec.structs.replace(trade(3), price=object())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send(events[:2])
        await writer.channel.send(events[2:])
        writer.channel.close()
    lines = path.read_bytes()
    assert lines == encode_lines([events[0], events[1], events[3]])
    assert counters.rejected == {"jsonl:" + str(path): 1}
    assert counters.events == {"jsonl:" + str(path): 3}
