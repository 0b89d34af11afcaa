"""A loopback WebSocket server whose bytes the tests write themselves, for the transport tests.

The server side reads the client's frames with websockets' server-side sans-I/O parser, which
insists on masking, so every client frame a test reads is also checked to be masked.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext, suppress
from functools import partial
from pathlib import Path

import attrs
import trio
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from coinfeed.transport import TransportClosed, WebSocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LIMIT = 5.0  # seconds: every wait in these tests is bounded


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A frame as a server writes it (unmasked unless ``mask``: a violation)."""
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes([(0x80 if fin else 0) | opcode, mask_bit | length])
    elif length < 1 << 16:
        header = bytes([(0x80 if fin else 0) | opcode, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([(0x80 if fin else 0) | opcode, mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(payload: str | bytes) -> bytes:
    return frame(0x1, payload.encode() if isinstance(payload, str) else payload)


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason.encode())


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


@attrs.define
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def value(self, name: str) -> str:
        [value] = self.values(name)
        return value


@attrs.define(eq=False)
class Peer:
    """The server's end of one connection."""

    stream: trio.abc.Stream
    buffer: bytes = b""
    parser: Protocol = attrs.field(factory=lambda: Protocol(Side.SERVER, state=State.OPEN))
    request: Request | None = None

    async def read_request(self) -> Request:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, "EOF before the whole upgrade request"
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        method, target, version = request_line.split(" ")
        headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]
        self.request = Request(method, target, version, headers)
        return self.request

    def answer(self, *, extra: str = "", accept: str | None = None) -> bytes:
        """A correct 101 for the request read (``extra``: more header lines, CRLF-ended; or
        one with the ``accept`` given)."""
        assert self.request is not None
        key = self.request.value("Sec-WebSocket-Key")
        return (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept or accept_for(key)}\r\n"
            f"{extra}\r\n"
        ).encode()

    async def accept(self, then: bytes = b"") -> Request:
        """Read the request, answer 101, and send ``then`` in the same write."""
        request = await self.read_request()
        await self.stream.send_all(self.answer() + then)
        return request

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_frame(self) -> Frame | None:
        """The client's next frame (checked to be masked), or ``None`` at EOF."""
        if self.buffer:
            self.parser.receive_data(self.buffer)
            self.buffer = b""
        while True:
            assert self.parser.parser_exc is None, f"bad client frame: {self.parser.parser_exc}"
            events = self.parser.events_received()
            if events:
                [event] = events  # one frame at a time is all these tests send
                assert isinstance(event, Frame)
                return event
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is an EOF too
                return None
            if not data:
                return None
            self.parser.receive_data(data)

    async def close_when_asked(self) -> None:
        """Answer the client's close frame (as a server does) and wait for it to hang up."""
        with trio.fail_after(LIMIT):
            while (got := await self.next_frame()) is not None:
                if got.opcode is Opcode.CLOSE:
                    await self.send(frame(0x8, bytes(got.data)))
                    break
        await self.rest_until_eof()

    async def rest_until_eof(self) -> bytes:
        """Everything the client still sends until it closes the connection."""
        rest = b""
        with trio.fail_after(LIMIT):
            while data := await self.stream.receive_some(65536):
                rest += data
        return rest


Script = Callable[[Peer], Awaitable[None]]


@attrs.define(eq=False)
class Server:
    port: int = 0
    scripts_done: int = 0
    peers: list[Peer] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return self.url_for()

    def url_for(self, scheme: str = "ws", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/v1/"

    async def wait_done(self, count: int = 1) -> None:
        """Wait until ``count`` server scripts ran to their end (their asserts passed)."""
        with trio.fail_after(LIMIT):
            while self.scripts_done < count:
                await trio.sleep(0.005)


@asynccontextmanager
async def serving(
    script: Script,
    *,
    ssl_context: ssl.SSLContext | None = None,
    script_limit: float | None = None,
) -> AsyncIterator[Server]:
    """A loopback server running ``script`` per connection (TLS with ``ssl_context``; each
    script failing after ``script_limit`` seconds when given)."""
    server = Server()

    async def handler(stream: trio.abc.Stream) -> None:
        peer = Peer(stream)
        server.peers.append(peer)
        with trio.fail_after(script_limit) if script_limit is not None else nullcontext():
            await script(peer)
        server.scripts_done += 1

    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            server.port = listeners[0].socket.getsockname()[1]
        else:
            serve_tls = partial(trio.serve_ssl_over_tcp, handler, 0, ssl_context, host="127.0.0.1")
            tls_listeners = await nursery.start(serve_tls)
            server.port = tls_listeners[0].transport_listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def as_bytes(messages: list[str | bytes]) -> list[bytes]:
    """trio-websocket hands over text frames as ``str``, the others as raw ``bytes``."""
    return [m.encode() if isinstance(m, str) else m for m in messages]


async def receive_until_closed(ws: WebSocket) -> tuple[list[bytes], TransportClosed]:
    received: list[bytes] = []
    with trio.fail_after(LIMIT):
        while True:
            try:
                received += as_bytes(await ws.receive_batch())
            except TransportClosed as closed:
                return received, closed


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The peer's TLS side for ``serving(..., ssl_context=...)``: it serves ``certificate``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def refuse_quietly(peer: Peer) -> None:
    """The server's side of a TLS handshake the client gives up."""
    with suppress(trio.BrokenResourceError, AssertionError):  # refused, or EOF
        await peer.read_request()
