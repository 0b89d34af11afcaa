"""The raw frame queue between the connection and the processor: coinfeed's one drop point.

How this works: the reader appends frames with :meth:`FrameQueue.put_frames_nowait`, which never
blocks. Capacity is counted in frames; a frame that does not fit is dropped, counted, and
summarised per stream (``type``, ``symbol_id``: min/max sequence, latest ``time_exchange``) from
a minimal decode, so the processor can mark that stream for repair at once instead of waiting
for a successor that may not come for minutes.

Ordering argument: frames are only dropped while the queue is full, and the processor always
drains the whole queue, so every frame taken by one :meth:`get_batch` precedes every drop
recorded before that call returned. ``get_batch`` hands over the frames and the drop summary
together; the processor handles the frames first, then the drops.

Control items (connection opened/lost, resubscribed, recovered data) travel in the same ordered
deque, outside the frame capacity: they are few, bounded by their producers, and never dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs
import trio

from coinfeed.core.controls import ControlItem
from coinfeed.core.decoding import peek_frame

QueueItem = str | bytes | ControlItem
"""A raw frame as read from the socket, or a control item in order with the frames."""

MAX_DROPPED_STREAMS = 10_000
"""Streams summarised between two drains at most; further drops count as unidentified."""


@attrs.define(slots=True)
class DroppedStream:
    """What was dropped of one (connection, type, symbol) stream since the last drain."""

    connection_id: int
    data_type: str
    symbol_id: str
    count: int = 0
    min_sequence: int | None = None
    max_sequence: int | None = None
    last_time_exchange: str | None = None
    """The latest ``time_exchange`` among the dropped frames (fixed-width text sorts by time)."""


@attrs.frozen
class QueueStatistics:
    """Frames in the queue, its capacity and the highest depth seen, plus drop totals."""

    depth: int
    capacity: int
    peak: int
    dropped: int
    control_items: int


@attrs.define(slots=True, eq=False)
class FrameQueue:
    """Bounded (in frames) queue of raw frames plus ordered, never-dropped control items."""

    capacity: int
    _items: deque[QueueItem] = attrs.field(factory=deque, init=False)
    _frames: int = attrs.field(default=0, init=False)
    _controls: int = attrs.field(default=0, init=False)
    peak: int = attrs.field(default=0, init=False)
    dropped_total: int = attrs.field(default=0, init=False)
    unidentified_drops: int = attrs.field(default=0, init=False)
    dropped_by_type: dict[str, int] = attrs.field(factory=dict, init=False)
    """Dropped frames by their peeked ``type`` (they were received: metrics count them)."""
    _drops: dict[tuple[int, str, str], DroppedStream] = attrs.field(factory=dict, init=False)
    _lot: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)
    _control_writers: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False
    )
    _room_waiters: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False
    )
    _closed: bool = attrs.field(default=False, init=False)
    keep_reads: bool = attrs.field(default=False, init=False)
    """Whether to keep when each read's frames came (the recording wants them)."""
    _reads: list[tuple[int, int, float]] = attrs.field(factory=list, init=False)
    taken_reads: list[tuple[int, int, float]] = attrs.field(factory=list, init=False)
    """With ``keep_reads``, for the items the last take handed over: ``(index, wall ns, trio
    clock)`` of each socket read, ``index`` being its first frame's place among them."""

    def put_frames_nowait(
        self,
        connection_id: int,
        frames: list[str | bytes],
        received: tuple[int, float] | None = None,
    ) -> int:
        """Enqueue what fits, drop and summarise the rest; return the number dropped.
        ``received`` is when the read that brought them returned (wall ns, trio clock)."""
        if self.keep_reads and received is not None and self._frames < self.capacity:
            self._reads.append((len(self._items), *received))
        room = self.capacity - self._frames
        if room >= len(frames):
            self._items.extend(frames)
            accepted = len(frames)
            dropped = 0
        else:
            accepted = max(room, 0)
            if accepted:
                self._items.extend(frames[:accepted])
            dropped = len(frames) - accepted
            self._record_drops(connection_id, frames[accepted:])
        if accepted:
            self._frames += accepted
            if self._frames > self.peak:
                self.peak = self._frames
            if self._lot:
                self._lot.unpark_all()
        return dropped

    def room(self) -> int:
        """Frames that fit now."""
        return max(self.capacity - self._frames, 0)

    async def wait_for_room(self) -> None:
        """Until the processor has taken the queued frames (or the queue is closed)."""
        while self._frames >= self.capacity and not self._closed:
            await self._room_waiters.park()
        await trio.lowlevel.checkpoint()

    def put_control_nowait(self, item: ControlItem) -> None:
        """Enqueue a control item in order with the frames; it is never dropped."""
        self._items.append(item)
        self._controls += 1
        if self._lot:
            self._lot.unpark_all()

    async def wait_control_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` control items are queued (producers of bulky
        control items, like recovered trades, use it so they never pile up here)."""
        while self._controls >= limit and not self._closed:
            await self._control_writers.park()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """No more input: :meth:`get_batch` returns what is left, then raises EndOfChannel."""
        self._closed = True
        self._lot.unpark_all()
        self._control_writers.unpark_all()
        self._room_waiters.unpark_all()

    async def get_batch(self) -> tuple[list[QueueItem], list[DroppedStream]]:
        """Wait for input; take everything queued (frames and controls) and the drop summary."""
        while not self._items and not self._drops:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        return self.take_nowait()

    def take_nowait(self) -> tuple[list[QueueItem], list[DroppedStream]]:
        """Everything queued and dropped so far, without waiting (may be empty)."""
        items = list(self._items)
        self._items.clear()
        if self.keep_reads:
            self.taken_reads, self._reads = self._reads, []
        self._frames = 0
        self._controls = 0
        if self._control_writers:
            self._control_writers.unpark_all()
        if self._room_waiters:
            self._room_waiters.unpark_all()
        drops = list(self._drops.values())
        self._drops.clear()
        return items, drops

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            depth=self._frames,
            capacity=self.capacity,
            peak=self.peak,
            dropped=self.dropped_total,
            control_items=self._controls,
        )

    def _record_drops(self, connection_id: int, frames: Iterable[str | bytes]) -> None:
        for frame in frames:
            self.dropped_total += 1
            head = peek_frame(frame)
            if head is None or not head.type:
                self.unidentified_drops += 1
                continue
            kind = head.type if len(self.dropped_by_type) < MAX_DROPPED_STREAMS else "other"
            self.dropped_by_type[kind] = self.dropped_by_type.get(kind, 0) + 1
            key = (connection_id, head.type, head.symbol_id)
            summary = self._drops.get(key)
            if summary is None:
                if len(self._drops) >= MAX_DROPPED_STREAMS:
                    self.unidentified_drops += 1
                    continue
                summary = self._drops[key] = DroppedStream(connection_id, head.type, head.symbol_id)
            summary.count += 1
            seq = head.sequence
            if seq is not None:
                if summary.min_sequence is None or seq < summary.min_sequence:
                    summary.min_sequence = seq
                if summary.max_sequence is None or seq > summary.max_sequence:
                    summary.max_sequence = seq
            latest = summary.last_time_exchange
            if head.time_exchange is not None and (latest is None or head.time_exchange > latest):
                summary.last_time_exchange = head.time_exchange
        if self._lot:
            self._lot.unpark_all()
