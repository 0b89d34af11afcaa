"""The WebSocket library transports: trio-websocket and websockets' native trio client.

The only module that imports a WebSocket library. Both connect inside a nursery the caller owns
(so the library's reader task is supervised) and hand over everything already buffered per
:meth:`~coinfeed.transport.WebSocket.receive_batch`. They stay selectable (``transport``
setting) and pass the same fault tests as the default ``direct`` client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import attrs
import trio
import trio_websocket
import websockets.exceptions
import websockets.trio.client
from websockets.frames import Frame
from websockets.trio.client import ClientConnection
from websockets.trio.messages import Assembler

from coinfeed.transport import (
    ABNORMAL_CLOSURE,
    CLOSE_TIMEOUT,
    TransportClosed,
    TransportError,
    WebSocket,
)

RECEIVE_BUFFER_BYTES = 64 * 1024
LIBRARY_QUEUE_MESSAGES = 256


@attrs.define(slots=True)
class _TrioWebSocket:
    _conn: trio_websocket.WebSocketConnection
    _max_batch: int

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
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
        conn: trio_websocket.WebSocketConnection = await nursery.start(self._hold, url, headers)
        return _TrioWebSocket(conn, self.max_batch)

    async def _hold(
        self,
        url: str,
        headers: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[trio_websocket.WebSocketConnection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the library's reader in a nursery of ours until the connection ends.

        trio-websocket raises a rejected upgrade (HTTP 401/403 with a body) from its reader
        task, not from ``connect_websocket_url``; in the caller's nursery that would crash it.
        """
        try:
            async with trio.open_nursery() as own:
                conn = await trio_websocket.connect_websocket_url(
                    own,
                    url,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                    message_queue_size=LIBRARY_QUEUE_MESSAGES,
                    max_message_size=self.max_message_bytes,
                    receive_buffer_size=RECEIVE_BUFFER_BYTES,
                )
                task_status.started(conn)
        except BaseExceptionGroup as group:
            error = _connect_error(group)
            if error is None:
                raise
            raise error from None


def _connect_error(group: BaseExceptionGroup[BaseException]) -> TransportError | None:
    """The :class:`TransportError` for a failed trio-websocket connect; ``None`` if not one."""
    expected = (trio_websocket.HandshakeError, OSError)
    matched, rest = group.split(expected)
    if matched is None or rest is not None:
        return None
    exc = next(_leaves(matched))
    if isinstance(exc, trio_websocket.ConnectionRejected):
        status = exc.status_code
        return TransportError(f"upgrade rejected with HTTP {status}", status=status)
    if isinstance(exc, OSError):
        return TransportError(f"connect failed: {exc.strerror or exc}")
    return TransportError(f"handshake failed: {type(exc).__name__}")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _closed_from(exc: websockets.exceptions.ConnectionClosed) -> TransportClosed:
    """The close frame received, else the one we sent (e.g. 1009 too big), else 1006."""
    frame = exc.rcvd or exc.sent
    if frame is None:
        return TransportClosed(ABNORMAL_CLOSURE, None)
    return TransportClosed(frame.code, frame.reason)


@attrs.define(slots=True)
class _WebsocketsConnection:
    _conn: ClientConnection
    _max_batch: int
    _buffered: deque[Frame] | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._buffered = _buffered_frames(self._conn.recv_messages)

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        try:
            # Raw bytes: msgspec validates UTF-8 itself, so the library need not decode.
            first = await self._conn.recv(decode=False)
        except websockets.exceptions.ConnectionClosed as exc:
            raise _closed_from(exc) from None
        batch: list[str | bytes] = [first]
        # websockets has no public non-blocking read. Its Assembler queues *frames* in a trio
        # memory channel; every complete single-frame message at the head of that queue is
        # taken with receive_nowait. A fragmented message stops the drain: recv() joins it.
        assembler = self._conn.recv_messages
        buffered = self._buffered
        if buffered:
            receive_nowait = assembler.recv_frames.receive_nowait
            limit = self._max_batch
            while buffered and buffered[0].fin and len(batch) < limit:
                batch.append(bytes(receive_nowait().data))
            # Reading pauses above the high-water mark; resume it as recv() would.
            assembler.maybe_resume()
        return batch

    async def send(self, message: str | bytes) -> None:
        try:
            # CoinAPI's scope messages are JSON text: bytes go out as a text frame too.
            await self._conn.send(message, text=True)
        except websockets.exceptions.ConnectionClosed as exc:
            raise _closed_from(exc) from None

    async def aclose(self) -> None:
        await self._conn.aclose()


def _buffered_frames(assembler: Assembler) -> deque[Frame] | None:
    """The Assembler's frame queue (trio channel internals), or ``None`` if they moved."""
    state = getattr(assembler.send_frames, "_state", None)
    data = getattr(state, "data", None)
    return data if isinstance(data, deque) else None


@attrs.define(slots=True)
class WebsocketsTransport:
    """websockets' native trio client; its reader task lives in the caller's nursery.

    Compression is off by default: whether CoinAPI negotiates permessage-deflate is
    unconfirmed, and inflating costs CPU per frame. We send no keepalive pings (CoinAPI's
    heartbeats and our ``stale_after`` watchdog cover liveness); server pings are answered
    by the library's reader.
    """

    max_message_bytes: int = 8 * 1024 * 1024
    max_batch: int = 1024
    compression: bool = False

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket:
        """Connect and complete the handshake. Bound it with your own ``trio.fail_after``."""
        client = websockets.trio.client.connect(
            url,
            additional_headers=headers,
            compression="deflate" if self.compression else None,
            max_size=self.max_message_bytes,
            # High-water mark in frames: reading pauses above it (see receive_batch).
            max_queue=self.max_batch,
            open_timeout=None,  # the caller's fail_after bounds connect + handshake
            ping_interval=None,
            ping_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            proxy=None,  # like trio-websocket: no proxy taken from the environment
        )
        try:
            # connect.connect(nursery) is what ``async with connect(...)`` runs, with our
            # nursery instead of one the library would open and own.
            conn = await client.connect(nursery)
        except websockets.exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            raise TransportError(f"upgrade rejected with HTTP {status}", status=status) from None
        except websockets.exceptions.WebSocketException as exc:
            raise TransportError(f"handshake failed: {type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise TransportError(f"connect failed: {exc.strerror or exc}") from None
        return _WebsocketsConnection(conn, self.max_batch)
