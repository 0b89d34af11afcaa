"""coinfeed's own WebSocket client: h11 for the handshake, :mod:`.frames` for the frames.

How this works: :meth:`DirectTransport.connect` opens a trio TCP (or TLS, for ``wss://``) stream,
sends the upgrade request and checks the answer (101, ``Upgrade``, ``Connection``, the
``Sec-WebSocket-Accept`` digest, no extension or subprotocol we did not offer), skipping 1xx
answers before it and refusing redirects (named, not followed). Bytes that came after the 101 are
frames. Whatever the answer or the failure, connect raises :class:`TransportError` and nothing
else, its message saying why (:func:`coinfeed.tls.describe_error`).

There is no background task: :meth:`DirectWebSocket.receive_batch` reads the socket itself, and
returns every message the read completed, so one await is paid per socket read. Pings are
answered and close frames echoed from inside ``receive_batch``, so a connection nobody reads from
answers nothing, and the reader keeps reading (docs/architecture.md). Sends are serialised by a
lock (the reader's pongs and the scope writer's messages share the stream).

Failing the connection (a protocol violation: 1002, 1007, 1009) sends the close frame,
half-closes, and reads what the server still sends until it hangs up (bounded) before dropping
TCP: closing with unread data would make the kernel send RST, which can destroy the close frame
before the server reads its code.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import ssl

import attrs
import h11
import trio

from coinfeed import __version__
from coinfeed.tls import client_context, describe_error
from coinfeed.transport import (
    ABNORMAL_CLOSURE,
    CLOSE_TIMEOUT,
    Target,
    TransportClosed,
    TransportError,
)
from coinfeed.transport.frames import (
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ControlFrame,
    FrameReader,
    FrameViolation,
    close_payload,
    encode_frame,
    parse_close,
)

READ_BYTES = 64 * 1024
"""Most bytes asked of the socket per read: about 250 CoinAPI frames, one batch for the queue."""
MIN_READ_BYTES = 1024
"""Fewest bytes asked per read, even with no room: the socket is never left unread."""
HANDSHAKE_MAX_BYTES = 64 * 1024
MAX_INFORMATIONAL = 16
"""Most 1xx answers skipped before the 101 (RFC 9110 §15.2 allows any number; a server that
sends them forever must not keep connect() busy until its timeout)."""
DRAIN_MAX_BYTES = 4 * 1024 * 1024
"""Most bytes read and discarded after failing the connection, while waiting for the server to
hang up (with ``CLOSE_TIMEOUT``): enough for what was in flight, not a way to be kept busy."""
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_digest(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + ACCEPT_GUID).digest()).decode()


@attrs.define(slots=True, eq=False)
class DirectWebSocket:
    """An open connection (see module docstring)."""

    _stream: trio.abc.Stream
    _reader: FrameReader
    _pending: list[bytes]
    _send_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    _closed: TransportClosed | None = attrs.field(default=None, init=False)
    _close_sent: bool = attrs.field(default=False, init=False)
    _message_bytes: int = attrs.field(default=256, init=False)

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        """Every message completed by the next socket read (at least one); raises
        :class:`TransportClosed` once the connection is closed and nothing is left.

        ``room``: how many messages the caller can take now. The read asks for about that many
        messages' worth of bytes (by the average message size so far), between
        ``MIN_READ_BYTES`` and ``READ_BYTES``: the socket is always read, but no faster than the
        caller can take in, so a burst waits in the kernel's buffer instead of being dropped.
        At most ``room`` messages are returned when it is 1 or more; the rest of the read (the
        estimate was off: small messages after large ones) is kept for the next call. With
        ``room`` 0 or None everything read is returned.
        """
        if self._pending:
            return self._within(room)
        while self._closed is None:
            size = READ_BYTES
            if room is not None:
                # 7/8: a read that completes a few more messages than estimated still fits.
                size = min(READ_BYTES, max(MIN_READ_BYTES, room * self._message_bytes * 7 // 8))
            try:
                data = await self._stream.receive_some(size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if type(data) is not bytes:
                data = bytes(data)
            if not data:
                await self._drop(TransportClosed(ABNORMAL_CLOSURE, None))
                break
            messages = await self._take(data)
            if messages:
                # A running estimate (bytes read per message) that follows a changing mix.
                estimate = len(data) // len(messages)
                self._message_bytes = (7 * self._message_bytes + max(estimate, 16)) // 8
                self._pending = messages
                return self._within(room)
        assert self._closed is not None
        raise self._closed

    def _within(self, room: int | None) -> list[str | bytes]:
        """The pending messages, or the first ``room`` of them (kept: the rest)."""
        batch = self._pending
        if room and len(batch) > room:
            batch, self._pending = batch[:room], batch[room:]
        else:
            self._pending = []
        return batch  # type: ignore[return-value]  # list is invariant

    async def _take(self, data: bytes) -> list[bytes]:
        """Parse one read and answer its control frames; a violation fails the connection."""
        try:
            messages = self._reader.feed(data)
        except FrameViolation as violation:
            await self._fail(violation.code, violation.reason)
            return []
        if self._reader.controls:
            await self._answer_controls()
        held = self._reader.violation
        if held is not None and self._closed is None:
            # The messages before it were valid: they are returned, the next call raises.
            await self._fail(held.code, held.reason)
        return messages

    async def _answer_controls(self) -> None:
        controls = self._reader.controls
        taken: list[ControlFrame] = controls[:]
        controls.clear()
        for frame in taken:
            if frame.opcode == OP_PING:
                try:
                    await self._send_frame(OP_PONG, frame.payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The server is gone (a reset, a broken pipe): as if the read found EOF.
                    await self._drop(TransportClosed(ABNORMAL_CLOSURE, None))
                    return
            elif frame.opcode == OP_CLOSE:
                try:
                    code, reason = parse_close(frame.payload)
                except FrameViolation as violation:
                    await self._fail(violation.code, violation.reason)
                    return
                # Echo the code (RFC 6455 §5.5.1), then the server closes TCP; we need not wait.
                await self._send_close(code if code != CLOSE_NO_STATUS else CLOSE_NORMAL)
                await self._drop(TransportClosed(code, reason or None))
                return
            # pongs answer pings we never send: ignored

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame with ``code``, then stop writing
        and wait (bounded) for the server to hang up, then drop TCP."""
        closed = self._closed = TransportClosed(code, reason)  # nothing more is parsed
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._send_close(code, reason)
                await self._linger()
        finally:
            await self._drop(closed)

    async def _linger(self) -> None:
        """Half-close, then read and discard until the server's EOF (at most DRAIN_MAX_BYTES):
        a socket closed with unread data sends RST, and the server may then lose our close
        frame, or read it and still see a reset instead of a clean end (RFC 6455 §7.1.1 wants
        the server to close TCP first)."""
        stream = self._stream
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            if isinstance(stream, trio.abc.HalfCloseableStream):  # TCP; TLS has no half-close
                async with self._send_lock:  # a pong or scope message may be mid-write
                    await stream.send_eof()
            drained = 0
            while drained < DRAIN_MAX_BYTES:
                data = await stream.receive_some(READ_BYTES)
                if not data:
                    return
                drained += len(data)

    async def _drop(self, closed: TransportClosed) -> None:
        """Record how the connection ended, then drop TCP: nothing more is read or sent."""
        self._closed = closed
        await trio.aclose_forcefully(self._stream)

    async def send(self, message: str | bytes) -> None:
        """Send a text frame (CoinAPI's scope messages are JSON text, bytes included)."""
        if self._closed is not None or self._close_sent:
            raise TransportClosed(self._closed.code if self._closed else CLOSE_NORMAL, None)
        payload = message.encode() if isinstance(message, str) else message
        try:
            await self._send_frame(OP_TEXT, payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed(ABNORMAL_CLOSURE, None) from None

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload)
        async with self._send_lock:
            await self._stream.send_all(frame)

    async def _send_close(self, code: int, reason: str = "") -> None:
        """Best effort: a close frame once, bounded in time; a dead socket is no error here."""
        if self._close_sent:
            return
        self._close_sent = True
        with trio.move_on_after(CLOSE_TIMEOUT):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send_frame(OP_CLOSE, close_payload(code, reason))

    async def aclose(self) -> None:
        """Close with 1000: send the close frame, wait (bounded) for the server's, drop TCP."""
        if self._closed is not None:
            return
        try:
            await self._send_close(CLOSE_NORMAL)
            with trio.move_on_after(CLOSE_TIMEOUT):
                while self._closed is None:
                    try:
                        await self.receive_batch()
                    except TransportClosed:
                        break
        finally:
            await self._drop(self._closed or TransportClosed(CLOSE_NORMAL, None))


@attrs.define(slots=True)
class DirectTransport:
    """Opens :class:`DirectWebSocket` connections; no compression, no proxy, no pings sent
    (CoinAPI's heartbeats and the ``stale_after`` watchdog cover liveness)."""

    max_message_bytes: int = 8 * 1024 * 1024
    ssl_context: ssl.SSLContext | None = None

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> DirectWebSocket:
        """Connect and complete the handshake. Bound it with your own ``trio.fail_after``.

        ``nursery`` is unused: this client runs no background task.
        """
        target = Target.parse(url)
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            raise TransportError(f"connect failed: {describe_error(exc, target.host)}") from None
        try:
            if target.secure:
                # The TLS handshake here, not lazily in the first send: its failure is then
                # told apart from the upgrade's, and says which certificate problem it was.
                context = self.ssl_context or client_context()
                stream = trio.SSLStream(stream, context, server_hostname=target.host)
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    why = describe_error(exc, target.host)
                    raise TransportError(f"connect failed: {why}") from None
            leftover = await _handshake(stream, target, headers)
            ws = DirectWebSocket(stream, FrameReader(self.max_message_bytes), [])
            if leftover:  # frames that came with the 101; a violation there fails ws, not connect
                ws._pending = await ws._take(leftover)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return ws


async def _handshake(
    stream: trio.abc.Stream, target: Target, headers: list[tuple[str, str]]
) -> bytes:
    """Send the upgrade request, check the 101; return the bytes that followed it."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = h11.Request(
        method="GET",
        target=target.resource,
        headers=[
            ("Host", target.host_header),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            ("User-Agent", f"coinfeed/{__version__}"),
            *headers,
        ],
    )
    http = h11.Connection(h11.CLIENT, max_incomplete_event_size=HANDSHAKE_MAX_BYTES)
    informational = 0
    try:
        data = http.send(request)
        assert data is not None
        await stream.send_all(data)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(bytes(await stream.receive_some(READ_BYTES)))
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    _check_upgrade(event, key)
                    leftover, _closed = http.trailing_data
                    return bytes(leftover)
                # 100 Continue, 103 Early Hints, ...: interim, the final answer follows.
                informational += 1
                if informational > MAX_INFORMATIONAL:
                    raise TransportError(
                        f"handshake failed: over {MAX_INFORMATIONAL} informational answers"
                    )
                continue
            if isinstance(event, h11.Response):
                raise _rejected(event)
            raise TransportError(f"handshake failed: unexpected {type(event).__name__}")
    except h11.RemoteProtocolError as exc:
        raise TransportError(f"handshake failed: bad HTTP answer ({exc})") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise TransportError(f"handshake failed: {describe_error(exc, target.host)}") from None


REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _rejected(response: h11.Response) -> TransportError:
    """The error for a final answer that is not the 101; a redirect names where it points (not
    followed: the key would go to a host nobody configured)."""
    status = response.status_code
    if status not in REDIRECTS:
        return TransportError(f"upgrade rejected with HTTP {status}", status=status)
    locations = [value for name, value in response.headers if name == b"location"]
    if not locations:
        return TransportError(f"upgrade redirected with HTTP {status}, no Location", status=status)
    # repr: any byte the server sent shows escaped, so the log line stays one clean line.
    shown = repr(locations[0][:300].decode("utf-8", "backslashreplace"))
    return TransportError(
        f"upgrade redirected with HTTP {status} to {shown} (not followed)", status=status
    )


def _check_upgrade(response: h11.InformationalResponse, key: str) -> None:
    # Compared as bytes, never decoded: h11 passes any byte 0x80-0xff in a value (obs-text),
    # and such a byte must fail the handshake, not raise UnicodeDecodeError out of connect.
    fields: dict[bytes, list[bytes]] = {}
    for name, value in response.headers:
        fields.setdefault(name.lower(), []).append(value)

    def tokens(name: bytes) -> set[bytes]:
        return {t.strip().lower() for v in fields.get(name, []) for t in v.split(b",")}

    if b"websocket" not in tokens(b"upgrade"):
        raise TransportError("handshake failed: no 'Upgrade: websocket' in the answer")
    if b"upgrade" not in tokens(b"connection"):
        raise TransportError("handshake failed: no 'Connection: Upgrade' in the answer")
    accept = fields.get(b"sec-websocket-accept", [])
    if [a.strip() for a in accept] != [accept_digest(key).encode()]:
        raise TransportError("handshake failed: wrong Sec-WebSocket-Accept")
    for offered_none in (b"sec-websocket-extensions", b"sec-websocket-protocol"):
        if offered_none in fields:
            raise TransportError(f"handshake failed: server chose {offered_none.decode()}")
