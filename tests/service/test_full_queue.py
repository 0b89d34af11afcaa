"""The reader and a full raw queue: by default the overflow is read and dropped at once; with
``queue_full_wait`` a processor that is only briefly busy loses nothing, and a stalled one still
turns the overflow into counted drops without slowing the reader down."""

from __future__ import annotations

import functools

import attrs
import trio
import trio.testing

from coinfeed.connection import Connection
from coinfeed.framequeue import FrameQueue
from coinfeed.status import ServiceStatus
from tests.fakes import FakeTransport, FakeWebSocket

FRAME = b'{"type":"hearbeat"}'


@attrs.define(eq=False)
class BurstingWebSocket(FakeWebSocket):
    """A server writing at full speed: every read returns ``per_read`` frames at once, for
    ``reads`` reads, then the connection stays open and quiet."""

    reads: int = 100
    per_read: int = 50
    served: int = 0

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        await trio.lowlevel.checkpoint()
        if self.reads == 0:
            return await super().receive_batch(room)
        self.reads -= 1
        self.served += self.per_read
        return [FRAME] * self.per_read


def connection(ws: FakeWebSocket, queue: FrameQueue, **settings: float) -> Connection:
    return Connection(
        FakeTransport([ws]), queue, ServiceStatus(), "ws://feed.test/v1/", ("X_SPOT_A_B",),
        ("trade",), "key", **settings,  # type: ignore[arg-type]
    )  # fmt: skip


async def consume(queue: FrameQueue, taken: list[int], *, pause: float) -> None:
    """A processor busy elsewhere (a sink hand-off, a large batch) for ``pause`` per batch."""
    while True:
        items, _drops = await queue.get_batch()
        taken.append(sum(1 for item in items if item == FRAME))  # not the control items
        await trio.sleep(pause)


async def burst(
    *, pause: float, seconds: float, **settings: float
) -> tuple[BurstingWebSocket, FrameQueue, list[int]]:
    """10,000 frames at full speed into a queue of 100, a processor pausing ``pause`` per
    batch; after ``seconds``: the server, the queue, and the frames each batch took."""
    queue = FrameQueue(100)
    ws = BurstingWebSocket(reads=200, per_read=50)
    taken: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection(ws, queue, **settings).run)
        nursery.start_soon(functools.partial(consume, queue, taken, pause=pause))
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return ws, queue, taken


async def test_by_default_a_full_queue_is_read_on_and_dropped_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws, queue, taken = await burst(pause=0.02, seconds=30)
    assert ws.served == 10_000
    assert queue.dropped_total == 10_000 - sum(taken) > 9_000


async def test_with_queue_full_wait_a_briefly_busy_processor_loses_no_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws, queue, taken = await burst(pause=0.02, seconds=30, queue_full_wait=0.1)
    assert ws.served == 10_000
    assert queue.dropped_total == 0
    assert sum(taken) == 10_000


async def test_a_stalled_processor_still_costs_drops_not_a_slower_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Waiting for room is bounded by queue_full_wait, and only once per full queue: after it
    # the reader takes what the server sends and the queue drops it, so pings are answered
    # and the server's send buffer does not fill.
    ws, queue, taken = await burst(pause=60, seconds=1, queue_full_wait=0.1)
    assert ws.served == 10_000, "the whole burst was read within a second"
    assert queue.dropped_total == 10_000 - sum(taken) - queue.statistics().depth
    assert sum(taken) <= 50, "the processor took one read at most before it stalled"
    assert queue.statistics().depth == 100
