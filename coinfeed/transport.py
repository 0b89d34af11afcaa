"""The WebSocket seam: the only module that imports a WebSocket library.

The service talks to :class:`Transport` / :class:`WebSocket`; tests may pass fakes. The
trio-websocket implementation connects inside a nursery the caller owns (so the connection's
reader task is supervised), and :meth:`WebSocket.receive_batch` hands over every message that
is already buffered in one call, so one await (one task switch) is paid per socket read rather
than per frame.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio
import trio_websocket

RECEIVE_BUFFER_BYTES = 64 * 1024
LIBRARY_QUEUE_MESSAGES = 256


class TransportError(Exception):
    """Connecting failed (refused, reset, bad handshake). ``status`` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportClosed(Exception):
    """The connection is closed; ``code`` is the WebSocket close code (1006 = abnormal)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed code={code} reason={reason or ''}")
        self.code = code
        self.reason = reason


class WebSocket(Protocol):
    """An open WebSocket connection."""

    async def receive_batch(self) -> list[str | bytes]:
        """Wait for at least one message; return it with every message already buffered."""
        ...

    async def send(self, message: str | bytes) -> None: ...

    async def aclose(self) -> None:
        """Close with code 1000; must be called shielded when the caller is cancelled."""
        ...


class Transport(Protocol):
    """Opens WebSocket connections whose background tasks live in ``nursery``."""

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket: ...


@attrs.define(slots=True)
class _TrioWebSocket:
    _conn: trio_websocket.WebSocketConnection
    _max_batch: int

    async def receive_batch(self) -> list[str | bytes]:
        conn = self._conn
        try:
            first = await conn.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            raise TransportClosed(
                getattr(reason, "code", None), getattr(reason, "reason", None)
            ) from None
        batch = [first]
        # trio-websocket has no public non-blocking read; its buffered messages sit in a memory
        # channel. Draining it here keeps its reader (and its ping answers) running.
        channel = getattr(conn, "_recv_channel", None)
        if channel is not None:
            receive_nowait = channel.receive_nowait
            limit = self._max_batch
            try:
                while len(batch) < limit:
                    batch.append(receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass
        return batch

    async def send(self, message: str | bytes) -> None:
        try:
            await self._conn.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            raise TransportClosed(
                getattr(reason, "code", None), getattr(reason, "reason", None)
            ) from None

    async def aclose(self) -> None:
        await self._conn.aclose()


@attrs.define(slots=True)
class TrioWebSocketTransport:
    """trio-websocket client with a 64 KiB receive buffer and a bounded library queue."""

    max_message_bytes: int = 8 * 1024 * 1024
    max_batch: int = 1024

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket:
        """Connect and complete the handshake. Bound it with your own ``trio.fail_after``."""
        try:
            conn = await trio_websocket.connect_websocket_url(
                nursery,
                url,
                extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                message_queue_size=LIBRARY_QUEUE_MESSAGES,
                max_message_size=self.max_message_bytes,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
        except trio_websocket.ConnectionRejected as exc:
            raise TransportError(
                f"upgrade rejected with HTTP {exc.status_code}", status=exc.status_code
            ) from None
        except trio_websocket.HandshakeError as exc:
            raise TransportError(f"handshake failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise TransportError(f"connect failed: {exc.strerror or exc}") from None
        return _TrioWebSocket(conn, self.max_batch)
