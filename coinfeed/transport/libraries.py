"""The WebSocket library transports: trio-websocket and websockets' native trio client.

The only module that imports a WebSocket library, and it uses their public API only. Both run
the library's reader in the nursery the caller passes (so it is supervised) and behave like the
default ``direct`` client at the seam (tests/transport/test_transport_faults.py runs the same
faults against all three):

- Every failure to connect is a :class:`~coinfeed.transport.TransportError` whose message names
  the cause (:func:`coinfeed.tls.describe_error`): refused, DNS, TLS, a bad or rejected upgrade.
  A redirect is refused, not followed (the API key would go to a host nobody configured).
- After connecting, ``receive_batch`` ends with :class:`~coinfeed.transport.TransportClosed`
  carrying the close code as soon as the server's close frame is in, even if the server keeps
  TCP open.
- ``wss://`` uses the transport's ``ssl_context`` (the service passes one shared context), else
  :func:`coinfeed.tls.client_context`.

Neither library has a public non-blocking read, so each connection runs a *pump* task that moves
messages from the library's blocking read into a channel of ours; ``receive_batch`` waits for
one message there and takes every other one already there without waiting. A burst still comes
back in one call, but the pump pays a task switch per message (reading the library's queue
directly, as before, paid none). Measured on loopback it is lost in the noise: the libraries'
own cost per message (about 9 and 17 us of CPU) dwarfs it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import cast

import attrs
import h11
import trio
import trio_websocket
import websockets.exceptions
import websockets.trio.client
from websockets.protocol import State
from websockets.trio.client import ClientConnection

from coinfeed.tls import MAX_CAUSES, client_context, describe_error
from coinfeed.transport import (
    ABNORMAL_CLOSURE,
    CLOSE_TIMEOUT,
    Target,
    TransportClosed,
    TransportError,
    WebSocket,
)

RECEIVE_BUFFER_BYTES = 64 * 1024
LIBRARY_QUEUE_MESSAGES = 256
"""Messages (trio-websocket) or frames (websockets) the library buffers before the pump."""
CLOSE_POLL = 0.05
"""Seconds between looks at a websockets connection's state (see ``watch_close``)."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})


# --- shared by both ---------------------------------------------------------------------------


async def _open_tcp(target: Target) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(target.host, target.port)
    except OSError as exc:
        raise TransportError(f"connect failed: {describe_error(exc, target.host)}") from exc


def _rejected(status: int, location: str | None) -> TransportError:
    """The error for a final answer that is not the 101 (a redirect names where it points)."""
    if status not in REDIRECTS:
        return TransportError(f"upgrade rejected with HTTP {status}", status=status)
    if location is None:
        return TransportError(f"upgrade redirected with HTTP {status}, no Location", status=status)
    shown = repr(location[:300])
    return TransportError(
        f"upgrade redirected with HTTP {status} to {shown} (not followed)", status=status
    )


@attrs.define(slots=True, eq=False)
class _Batches:
    """The pump's channel: messages the library handed over, and how the connection ended."""

    max_batch: int
    _send: trio.MemorySendChannel[str | bytes] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[str | bytes] = attrs.field(init=False)
    closed: TransportClosed | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        # Bounded: when the reader falls behind, the pump waits, the library's queue fills and
        # the library stops reading the socket (TCP backpressure), as before.
        self._send, self._receive = trio.open_memory_channel[str | bytes](self.max_batch)

    async def put(self, message: str | bytes) -> None:
        try:
            self._send.send_nowait(message)  # no task switch while there is room
        except trio.WouldBlock:
            await self._send.send(message)

    def end(self, closed: TransportClosed) -> None:
        """No more messages: ``take`` raises the first ``closed`` once the rest are taken."""
        if self.closed is None:
            self.closed = closed
        self._send.close()

    async def take(self) -> list[str | bytes]:
        """Wait for one message; return it with every message already in the channel."""
        try:
            batch = [await self._receive.receive()]
        except trio.EndOfChannel:
            raise self.closed or TransportClosed(ABNORMAL_CLOSURE, None) from None
        receive_nowait = self._receive.receive_nowait
        limit = self.max_batch
        try:
            while len(batch) < limit:
                batch.append(receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            pass  # EndOfChannel: the next call raises the close
        return batch


def _single_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The first error of a group of errors; ``None`` if it holds anything else (Cancelled)."""
    matched, rest = group.split(Exception)
    if matched is None or rest is not None:
        return None
    leaf = next(_leaves(matched))
    assert isinstance(leaf, Exception)
    return leaf


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


# --- trio-websocket -----------------------------------------------------------------------------


class _WatchedStream(trio.abc.Stream):
    """The stream as trio-websocket sees it, telling us when the library stops using it.

    When the server hangs up (or the stream breaks) before the 101, trio-websocket's reader ends
    quietly and ``wrap_client_stream`` waits for ever: seeing the library's reads and writes end
    is the only public way to know. ``on_end`` is called once, with the error if there was one.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.on_end: Callable[[BaseException | None], object] | None = None

    def _ended(self, error: BaseException | None) -> None:
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(error)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except Exception as exc:
            self._ended(exc)
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except Exception as exc:
            self._ended(exc)
            raise
        if not data:
            self._ended(None)
        return data

    async def aclose(self) -> None:
        self._ended(None)
        await self.inner.aclose()


def _closed_by(exc: trio_websocket.ConnectionClosed) -> TransportClosed:
    reason = exc.reason
    if reason is None:
        return TransportClosed(ABNORMAL_CLOSURE, None)
    return TransportClosed(reason.code, reason.reason)


@attrs.define(slots=True, eq=False)
class _TrioWebSocket:
    _conn: trio_websocket.WebSocketConnection
    _stream: trio.abc.Stream
    batches: _Batches

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        return await self.batches.take()

    async def send(self, message: str | bytes) -> None:
        try:
            await self._conn.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_by(exc) from None

    async def aclose(self) -> None:
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._conn.aclose()
        finally:
            # After the server's close frame trio-websocket's aclose returns at once and leaves
            # TCP to the server: one that keeps it open must not keep it open for ever.
            await trio.aclose_forcefully(self._stream)

    async def pump(self) -> None:
        """Move messages from the library into ``batches`` until the connection ends."""
        batches = self.batches
        try:
            while True:
                await batches.put(await self._conn.get_message())
        except trio_websocket.ConnectionClosed as exc:
            batches.end(_closed_by(exc))
        finally:
            batches.end(TransportClosed(ABNORMAL_CLOSURE, None))


def _trio_websocket_error(
    group: BaseExceptionGroup[BaseException], host: str
) -> TransportError | None:
    """The :class:`TransportError` for an upgrade trio-websocket's reader failed; ``None`` if
    the group holds more than errors (a cancellation goes on as it is)."""
    exc = _single_error(group)
    if exc is None:
        return None
    if isinstance(exc, trio_websocket.ConnectionRejected):
        locations = [value for name, value in exc.headers if name.lower() == b"location"]
        location = locations[0].decode("utf-8", "backslashreplace") if locations else None
        return _rejected(exc.status_code, location)
    cause: BaseException = exc
    if isinstance(exc, h11.LocalProtocolError):
        # trio-websocket answers a bad answer by sending a rejection, which h11 refuses; the
        # cause is the error it was handling: the first of the chain.
        for _ in range(MAX_CAUSES):
            if cause.__context__ is None:
                break
            cause = cause.__context__
    return TransportError(f"handshake failed: {describe_error(cause, host)}")


@attrs.define(slots=True)
class TrioWebSocketTransport:
    """trio-websocket client with a 64 KiB receive buffer and a bounded library queue."""

    max_message_bytes: int = 8 * 1024 * 1024
    max_batch: int = 1024
    ssl_context: ssl.SSLContext | None = None

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket:
        """Connect and complete the handshake. Bound it with your own ``trio.fail_after``."""
        target = Target.parse(url)
        ws: _TrioWebSocket = await nursery.start(self._hold, target, headers)
        return ws

    async def _open_stream(self, target: Target) -> trio.abc.Stream:
        """TCP, plus TLS with its handshake done here: trio-websocket would do it lazily, in
        its reader, swallow the error and wait for ever."""
        tcp = await _open_tcp(target)
        if not target.secure:
            return tcp
        context = self.ssl_context or client_context()
        stream = trio.SSLStream(tcp, context, server_hostname=target.host, https_compatible=True)
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await trio.aclose_forcefully(stream)
            raise TransportError(f"connect failed: {describe_error(exc, target.host)}") from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _hold(
        self,
        target: Target,
        headers: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[_TrioWebSocket] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the library's reader and our pump in a nursery of ours until the connection ends.

        trio-websocket raises a rejected or malformed upgrade from its reader task, not from
        ``wrap_client_stream``: in the caller's nursery that would crash it. Before ``started``
        every failure is raised from ``connect`` as TransportError; after it, ``receive_batch``
        reports the end (1006) and nothing reaches the caller's nursery.
        """
        stream = await self._open_stream(target)
        watched = _WatchedStream(stream)
        ended: list[BaseException | None] = []
        ws: _TrioWebSocket | None = None
        error: TransportError | None = None
        try:
            async with trio.open_nursery() as own:
                with trio.CancelScope() as handshaking:

                    def end_handshake(failure: BaseException | None) -> None:
                        ended.append(failure)
                        handshaking.cancel()

                    watched.on_end = end_handshake
                    conn = await trio_websocket.wrap_client_stream(
                        own,
                        # Documented as any trio Stream ("wrap an arbitrary stream"); the
                        # annotation is narrower than the docstring.
                        cast(trio.SocketStream, watched),
                        target.host_header,
                        target.resource,
                        extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                        message_queue_size=LIBRARY_QUEUE_MESSAGES,
                        max_message_size=self.max_message_bytes,
                        receive_buffer_size=RECEIVE_BUFFER_BYTES,
                    )
                watched.on_end = None
                if handshaking.cancelled_caught:
                    failure = ended[0] if ended else None
                    why = describe_error(failure, target.host) if failure else None
                    error = TransportError(
                        f"handshake failed: {why or 'the server closed the connection'}"
                    )
                    own.cancel_scope.cancel()
                else:
                    ws = _TrioWebSocket(conn, stream, _Batches(self.max_batch))
                    own.start_soon(ws.pump)
                    task_status.started(ws)
        except BaseExceptionGroup as group:
            if ws is None:
                error = _trio_websocket_error(group, target.host)
                if error is None:
                    raise
            else:  # after connect: the connection ended abnormally
                failed = _single_error(group)
                if failed is None:
                    raise
                ws.batches.end(TransportClosed(ABNORMAL_CLOSURE, describe_error(failed)))
        finally:
            await trio.aclose_forcefully(stream)
        if error is not None:
            raise error


# --- websockets ---------------------------------------------------------------------------------


def _closed_from(exc: websockets.exceptions.ConnectionClosed) -> TransportClosed:
    """The close frame of whoever closed first (the server's, or ours, e.g. 1009 too big);
    1006 if none was exchanged."""
    rcvd, sent = exc.rcvd, exc.sent
    frame = rcvd if rcvd is not None and (sent is None or exc.rcvd_then_sent) else sent
    if frame is None:
        return TransportClosed(ABNORMAL_CLOSURE, None)
    return TransportClosed(frame.code, frame.reason or None)


def _websockets_error(exc: Exception, host: str) -> TransportError:
    """The :class:`TransportError` for what entering websockets' ``connect`` raised: TLS errors
    (trio.BrokenResourceError), a rejected or malformed upgrade, InvalidURI, ..."""
    # A redirect it cannot follow (we pass the stream) comes as ValueError from InvalidStatus.
    status = exc if isinstance(exc, websockets.exceptions.InvalidStatus) else exc.__cause__
    if isinstance(status, websockets.exceptions.InvalidStatus):
        response = status.response
        return _rejected(response.status_code, response.headers.get("Location"))
    stage = "handshake" if isinstance(exc, websockets.exceptions.InvalidHandshake) else "connect"
    return TransportError(f"{stage} failed: {describe_error(exc, host)}")


@attrs.define(slots=True, eq=False)
class _WebsocketsConnection:
    _conn: ClientConnection
    batches: _Batches
    _closing: bool = attrs.field(default=False, init=False)

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        return await self.batches.take()

    async def send(self, message: str | bytes) -> None:
        try:
            # CoinAPI's scope messages are JSON text: bytes go out as a text frame too.
            await self._conn.send(message, text=True)
        except websockets.exceptions.ConnectionClosed as exc:
            raise _closed_from(exc) from None

    async def aclose(self) -> None:
        self._closing = True  # ours: watch_close leaves the closing handshake to aclose
        await self._conn.aclose()

    async def pump(self) -> None:
        """Move messages from the library into ``batches`` until the connection ends."""
        batches = self.batches
        try:
            while True:
                # Raw bytes: msgspec validates UTF-8 itself, so the library need not decode.
                await batches.put(await self._conn.recv(decode=False))
        except websockets.exceptions.ConnectionClosed as exc:
            batches.end(_closed_from(exc))
        finally:
            batches.end(TransportClosed(ABNORMAL_CLOSURE, None))

    async def watch_close(self) -> None:
        """Drop TCP once a close frame went either way without an aclose of ours, as ``direct``.

        After the server's close frame (or its own, e.g. 1009) websockets' trio client answers
        it, then waits for the server to close TCP: its close timeout is only enforced when we
        send, so a server that keeps TCP open would leave ``recv`` waiting until the caller's
        ``stale_after``. The state is the only public sign of a close frame, hence the polling
        (one timer per connection, nothing on the wire).
        """
        conn = self._conn
        while conn.state is State.OPEN:  # noqa: ASYNC110  (no public event to wait for)
            await trio.sleep(CLOSE_POLL)
        if conn.state is State.CLOSING and not self._closing:
            # aclose() cancelled closes the stream at once (trio's AsyncResource contract); the
            # reader then ends and recv() raises ConnectionClosed with the frames exchanged.
            await trio.aclose_forcefully(conn)


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
    ssl_context: ssl.SSLContext | None = None

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket:
        """Connect and complete the handshake. Bound it with your own ``trio.fail_after``."""
        target = Target.parse(url)
        ws: _WebsocketsConnection = await nursery.start(self._hold, url, target, headers)
        return ws

    async def _hold(
        self,
        url: str,
        target: Target,
        headers: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[_WebsocketsConnection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold ``async with connect(...)`` (the library's public way to connect; it runs its
        reader in a nursery of its own) open until the connection ends, with our pump and close
        watch beside it.

        We open the TCP stream and pass it: websockets then cannot follow a redirect (it would
        send the API key header to the new host). Failures before ``started`` are raised from
        ``connect`` as TransportError (entering ``connect`` raises one exception, never a
        group); none after it reaches the caller's nursery.
        """
        tcp = await _open_tcp(target)
        ws: _WebsocketsConnection | None = None
        try:
            client = websockets.trio.client.connect(
                url,
                stream=tcp,
                # websockets refuses an ssl argument for a ws:// URL.
                ssl=(self.ssl_context or client_context()) if target.secure else None,
                additional_headers=headers,
                compression="deflate" if self.compression else None,
                max_size=self.max_message_bytes,
                max_queue=LIBRARY_QUEUE_MESSAGES,  # frames; reading pauses above it
                open_timeout=None,  # the caller's fail_after bounds connect + handshake
                ping_interval=None,
                ping_timeout=None,
                close_timeout=CLOSE_TIMEOUT,
            )
            async with client as conn:
                ws = _WebsocketsConnection(conn, _Batches(self.max_batch))
                async with trio.open_nursery() as ours:
                    ours.start_soon(ws.watch_close)
                    task_status.started(ws)
                    await ws.pump()
                    ours.cancel_scope.cancel()
        except Exception as exc:
            if ws is None:
                raise _websockets_error(exc, target.host) from exc
            # After connect (a bug of ours or the library's): the connection ended abnormally,
            # and nothing reaches the caller's nursery.
            ws.batches.end(TransportClosed(ABNORMAL_CLOSURE, describe_error(exc)))
        finally:
            await trio.aclose_forcefully(tcp)  # closed already, unless connect() failed early
