"""The WebSocket endpoint ``/v1/`` (trio-websocket server side) and the blackhole listener.

How this works: each accepted TCP stream is wrapped in a :class:`GuardedStream` and handed to
trio-websocket's ``wrap_server_stream`` (its documented low-level server entry: the handshake,
client frames, pings and the closing handshake stay trio-websocket's). Per connection three
tasks run: the reader applies hello/subscribe/unsubscribe, the writer drains the session's send
queue, and the deadline task enforces planned closes and cuts connections that hang.

The writer does not call ``send_message`` per frame: it frames a whole batch of queued messages
itself (server frames are unmasked, so a frame is a 2-10 byte header plus the text) and writes
it with one ``send_all``. The guarded stream serializes that with trio-websocket's own writes
(pongs, close), so frames never interleave. This is what lets one connection carry >50k
frames/s. Keeping the raw stream is also what makes an abrupt TCP close (no WebSocket close)
possible as a fault.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections import deque
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec
import trio
from loguru import logger
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from coinfeed.core.protocol import Heartbeat, decode_scope_message, encode
from coinfeed.simulator.config import SimulatorConfig
from coinfeed.simulator.hub import Hub
from coinfeed.simulator.scope import ScopeError, validate
from coinfeed.simulator.session import ClientSession

HEARTBEAT_FRAME = encode(Heartbeat())
"""``{"type":"hearbeat"}``: CoinAPI's spelling."""
INVALID_KEY = "Invalid API key"
_BATCH_BYTES = 4 * 1024 * 1024
_SNDBUF = 1024 * 1024
_SMALL_HEADERS = [bytes((0x81, n)) for n in range(126)]
_EXPECTED = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed)


def frame_batch(queue: deque[bytes], max_bytes: int = _BATCH_BYTES) -> bytes:
    """Pop messages off ``queue`` (up to about ``max_bytes``) as unmasked WebSocket text frames."""
    parts: list[bytes] = []
    size = 0
    while queue and size < max_bytes:
        frame = queue.popleft()
        n = len(frame)
        if n < 126:
            parts.append(_SMALL_HEADERS[n])
        elif n < 65_536:
            parts.append(b"\x81\x7e" + n.to_bytes(2, "big"))
        else:
            parts.append(b"\x81\x7f" + n.to_bytes(8, "big"))
        parts.append(frame)
        size += n
    return b"".join(parts)


class GuardedStream(trio.abc.Stream):
    """A socket stream whose writes are serialized, with an abrupt :meth:`abort`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._lock = trio.StrictFIFOLock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write, one writer at a time (trio-websocket's writes go through here too)."""
        async with self._lock:
            await self._stream.send_all(data)

    async def send_frames(self, data: bytes, ws: WebSocketConnection) -> None:
        """Write pre-framed messages unless the WebSocket is already closing."""
        async with self._lock:
            if ws.closed is None:
                await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the socket stream."""
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Delegate to the socket stream."""
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close the TCP connection."""
        await self._stream.aclose()

    def abort(self) -> None:
        """Close the socket now (FIN, no WebSocket close); blocked readers/writers wake up."""
        self._stream.socket.close()


def upgrade_key(request_target: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key of an upgrade: ``X-CoinAPI-Key`` header, ``?apikey=`` or an APIKEY- segment."""
    for name, value in headers:
        if name.lower() == b"x-coinapi-key":
            return value.decode("latin-1")
    parts = urlsplit(request_target)
    keys = parse_qs(parts.query).get("apikey")
    if keys:
        return keys[0]
    for segment in parts.path.split("/"):
        if segment.startswith("APIKEY-"):
            return segment[len("APIKEY-") :]
    return None


def endpoint_path_ok(request_target: str) -> bool:
    """``/v1/`` (the SDKs), ``/`` (the C# SDK), ignoring an ``APIKEY-<key>`` segment."""
    path = urlsplit(request_target).path
    segments = [s for s in path.split("/") if s and not s.startswith("APIKEY-")]
    return segments in ([], ["v1"])


@attrs.define(eq=False)
class WsServer:
    """Serves ``/v1/`` on a TCP listener and feeds connections from the :class:`Hub`."""

    config: SimulatorConfig
    hub: Hub

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:ws_port`` and report the bound port, then serve until cancelled."""
        listeners = await trio.open_tcp_listeners(self.config.ws_port, host=self.config.host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        with contextlib.suppress(OSError):  # bigger writes per scheduling round
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
        guarded = GuardedStream(stream)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._serve(nursery, guarded, _peer_ip(stream))
                finally:
                    nursery.cancel_scope.cancel()
        except* _EXPECTED:
            pass
        finally:
            guarded.abort()

    async def _serve(self, nursery: trio.Nursery, stream: GuardedStream, ip: str) -> None:
        request = None
        with trio.move_on_after(self.config.handshake_timeout):
            request = await wrap_server_stream(nursery, stream)
        if request is None:
            return
        if not endpoint_path_ok(request.path):
            await request.reject(404, body=b"Not found")
            return
        key = upgrade_key(request.path, request.headers)
        ws = await request.accept()
        session = self.hub.open_session(ip)
        session.abort_transport = stream.abort
        cid = session.connection_id
        logger.info("ws connected connection_id={} remote={}", cid, ip)
        try:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(self._reader, ws, session, key, tasks.cancel_scope)
                tasks.start_soon(self._writer, ws, stream, session, tasks.cancel_scope)
                tasks.start_soon(self._deadlines, session, tasks.cancel_scope)
        finally:
            with trio.move_on_after(self.config.close_timeout, shield=True):
                if not session.aborted:
                    await ws.aclose(session.close_code or 1000)
            self.hub.close_session(session)  # after the closing handshake: exit waits for it
            logger.info(
                "ws closed connection_id={} how={}",
                cid,
                "abort" if session.aborted else session.error_message or "close",
            )

    # -- the three tasks of a connection ------------------------------------------------------

    async def _reader(
        self, ws: WebSocketConnection, s: ClientSession, key: str | None, scope: trio.CancelScope
    ) -> None:
        try:
            while not s.closing:
                self._on_message(s, await ws.get_message(), key)
        except ConnectionClosed:
            scope.cancel()

    async def _writer(
        self,
        ws: WebSocketConnection,
        stream: GuardedStream,
        s: ClientSession,
        scope: trio.CancelScope,
    ) -> None:
        interval = self.config.heartbeat_interval
        last_send = trio.current_time()
        try:
            while not s.aborted:
                if s.error_message is not None:
                    await stream.send_frames(frame_batch(deque([s.error_frame()])), ws)
                    break
                if trio.current_time() < s.stall_until:
                    with trio.move_on_at(s.stall_until):
                        await s.wait_control()
                    last_send = trio.current_time()
                    continue
                if s.queue:
                    await stream.send_frames(frame_batch(s.queue), ws)
                    last_send = trio.current_time()
                    continue
                if s.close_code is not None:
                    break
                deadline = last_send + interval if s.heartbeat else math.inf
                with trio.move_on_at(deadline) as idle:
                    await s.wait_work()
                if idle.cancelled_caught and trio.current_time() >= s.stall_until:
                    s.queue.append(HEARTBEAT_FRAME)
                    s.counters.heartbeats += 1
        except _EXPECTED:
            pass
        scope.cancel()

    async def _deadlines(self, s: ClientSession, scope: trio.CancelScope) -> None:
        while True:
            now = trio.current_time()
            if s.aborted or now >= s.abort_at:
                s.abort()
                scope.cancel()
                return
            if now >= s.close_at:
                s.begin_close(now=now)
            with trio.move_on_at(min(s.abort_at, s.close_at)):
                await s.wait_control()

    # -- client messages ----------------------------------------------------------------------

    def _on_message(self, s: ClientSession, raw: str | bytes, key: str | None) -> None:
        now = trio.current_time()
        try:
            message = decode_scope_message(raw)
        except msgspec.MsgspecError as exc:
            s.fail(f"Invalid message: {str(exc)[:120]}", now=now)
            return
        cfg = self.config
        if not s.authorized:
            if message.type == "unsubscribe":
                s.fail("The first message must be hello or subscribe.", now=now)
                return
            keys = cfg.keys
            if keys is not None and not (key in keys or message.apikey in keys):
                s.fail(INVALID_KEY, now=now)
                return
            s.authorized = True
        if message.type != "unsubscribe" and not self.hub.hello_allowed(s.remote_ip):
            logger.warning("hello rate exceeded connection_id={}", s.connection_id)
            if cfg.hello_rate_action == "error":
                limit, window = cfg.hello_rate_limit, cfg.hello_rate_window
                s.fail(
                    f"Too many hello/subscribe messages (limit {limit} per {window:g} s).", now=now
                )
                return
        try:
            validate(message)
        except ScopeError as exc:
            s.fail(str(exc), now=now)
            return
        s.scope.apply(message)
        if message.type == "hello":
            s.heartbeat = message.heartbeat
        elif message.heartbeat:
            s.heartbeat = True
        self.hub.apply_scope(s)
        self.hub.stats.scope_messages += 1
        s.wake()


async def serve_blackhole(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Accept TCP and read forever without ever answering (a WebSocket upgrade that hangs)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_swallow, listeners)


async def _swallow(stream: trio.SocketStream) -> None:
    try:
        async with stream:
            async for _ in stream:
                pass
    except trio.BrokenResourceError:
        pass


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"
