"""In-memory fakes for the transport seam, scripted per connection attempt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from coinfeed.transport import TransportClosed, TransportError, WebSocket


@attrs.define(eq=False)
class FakeWebSocket:
    """A connection the test drives: ``feed`` frames in, ``close`` ends it; ``sent`` records."""

    sent: list[bytes | str] = attrs.field(factory=list)
    sent_at: list[float] = attrs.field(factory=list)
    _send: trio.MemorySendChannel[list[str | bytes] | None] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[list[str | bytes] | None] = attrs.field(init=False)
    closed: bool = False

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(1000)

    def feed(self, *frames: str | bytes) -> None:
        self._send.send_nowait(list(frames))

    def close(self) -> None:
        self._send.send_nowait(None)

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        batch = await self._receive.receive()
        if batch is None:
            self.closed = True
            raise TransportClosed(1006, "fake close")
        return batch

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise TransportClosed(1006, "fake closed")
        self.sent.append(message)
        self.sent_at.append(trio.current_time())

    async def aclose(self) -> None:
        self.closed = True


Script = Callable[[int], Any]


@attrs.define(eq=False)
class FakeTransport:
    """``behaviours[i]`` decides attempt i: a FakeWebSocket, ``"stall"``, or an exception."""

    behaviours: list[Any]
    attempts: list[float] = attrs.field(factory=list)
    headers: list[list[tuple[str, str]]] = attrs.field(factory=list)
    connected: trio.Event = attrs.field(factory=trio.Event)

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket:
        index = len(self.attempts)
        self.attempts.append(trio.current_time())
        self.headers.append(headers)
        behaviour = self.behaviours[min(index, len(self.behaviours) - 1)]
        if behaviour == "stall":
            await trio.sleep_forever()
        if behaviour == "refuse":
            raise TransportError("connect failed: refused")
        if isinstance(behaviour, int):
            raise TransportError(f"upgrade rejected with HTTP {behaviour}", status=behaviour)
        if callable(behaviour):
            behaviour = behaviour()
        self.connected.set()
        assert isinstance(behaviour, FakeWebSocket)
        return behaviour
