"""The recording side of the processor: what it takes, the answers it gets, what is sent.

How this works: the processor calls :class:`Recorder` as it handles each batch (the
:class:`~coinfeed.processor.InputRecorder` interface): every control item is encoded the moment
it is handled (its state then, which a later page of the same trade window depends on), and
:class:`RecordedRecovery` notes each answer recovery gives the gap ledger while the batch is
handled (whether a resync was accepted, a window retried, which windows were unfinished): those
answers depend on REST timing, so a replay takes them from the recording instead. After the batch
the whole record goes into the recording writer's bounded channel, before any event goes to the
sinks; ``send`` waits while the channel is full, which is the same backpressure as any sink's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import attrs
import msgspec
import trio

from coinfeed.core.controls import ControlItem, TradeWindow
from coinfeed.core.events import Event
from coinfeed.framequeue import DroppedStream, QueueItem
from coinfeed.logs import redact
from coinfeed.recording.format import (
    END,
    SENT,
    encode_batch,
    encode_clocked,
    encode_control,
    wall_ns,
    window_answer,
)
from coinfeed.recovery import RecoveryScheduler
from coinfeed.sinks.writer import EventChannel

_encode_json = msgspec.json.Encoder().encode


@attrs.define(slots=True, eq=False)
class Recorder:
    """Encodes the processor's input batch by batch into the recording writer's channel."""

    channel: EventChannel
    secrets: Sequence[str] = ()
    """Never recorded: the API key, should the hello carry it."""
    batches: int = 0
    _controls: list[bytes] = attrs.field(factory=list, init=False)
    _answers: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    _sent: list[bytes] = attrs.field(factory=list, init=False)

    def control(self, item: ControlItem) -> None:
        self._controls.append(encode_control(item))

    def answer(self, call: str, value: object) -> None:
        self._answers.append({"call": call, "value": value})

    def sent(self, text: str) -> None:
        """A message sent to CoinAPI: recorded ahead of the next batch (never waits)."""
        body = redact(text, self.secrets).encode()
        now = datetime.now(UTC)
        self._sent.append(encode_clocked(SENT, wall_ns(now), trio.current_time(), body))

    async def batch(
        self,
        items: list[QueueItem],
        drops: list[DroppedStream],
        wall: datetime,
        now: float,
        reads: list[tuple[int, int, float]],
    ) -> None:
        extra: dict[str, object] = {}
        if reads:
            extra["reads"] = reads
        if drops:
            extra["drops"] = [msgspec.to_builtins(dropped) for dropped in drops]
        if self._answers:
            extra["answers"], self._answers = self._answers, []
        parts = encode_batch(items, self._controls, extra, wall_ns(wall), now)
        self._controls = []
        if self._sent:
            parts[:0], self._sent = self._sent, []
        self.batches += 1
        await self._send(parts, self.batches)

    async def end(self, wall: datetime, now: float) -> None:
        answers, self._answers = self._answers, []
        body = _encode_json({"answers": answers})
        parts = [*self._sent, encode_clocked(END, wall_ns(wall), now, body)]
        self._sent = []
        await self._send(parts, self.batches + 1)

    async def _send(self, parts: list[bytes], number: int) -> None:
        # The sinks' channel and writer, carrying record parts instead of events: their bound,
        # backpressure, retries and failure reports are exactly a sink's.
        await self.channel.send(cast("list[Event]", parts), number)


@attrs.define(slots=True, eq=False)
class RecordedRecovery:
    """The recovery scheduler as the gap ledger sees it, with every answer recorded."""

    scheduler: RecoveryScheduler
    recorder: Recorder

    @property
    def resync_timeout(self) -> float:
        return self.scheduler.resync_timeout

    def request_backfill_nowait(self, window: TradeWindow) -> None:
        self.scheduler.request_backfill_nowait(window)

    def request_resync_nowait(self, symbol_id: str) -> bool:
        accepted = self.scheduler.request_resync_nowait(symbol_id)
        self.recorder.answer("resync", accepted)
        return accepted

    def retry_incomplete(self, window: TradeWindow) -> bool:
        retried = self.scheduler.retry_incomplete(window)
        self.recorder.answer("retry", retried)
        return retried

    def unfinished_windows(self) -> list[TradeWindow]:
        windows = self.scheduler.unfinished_windows()
        self.recorder.answer("unfinished", window_answer(windows))
        return windows

    def book_synced(self, symbol_id: str) -> None:
        self.scheduler.book_synced(symbol_id)

    def connection_reset(self) -> None:
        self.scheduler.connection_reset()
