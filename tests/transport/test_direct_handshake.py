"""The ``direct`` client's upgrade handshake against answers no well-behaved server sends: bytes
that are not UTF-8 in the checked headers, informational (1xx) answers before the 101,
redirects, and a fuzzer that mutates a correct 101 at random.

Whatever the answer, :meth:`DirectTransport.connect` either succeeds or raises
:class:`TransportError`: a malformed answer fails the connection, never the process.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from coinfeed.transport import TransportError
from coinfeed.transport.direct import DirectTransport, DirectWebSocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LIMIT = 5.0  # seconds: every wait in these tests is bounded

Answer = Callable[[str], bytes]
"""Builds the server's answer from the ``Sec-WebSocket-Accept`` the request asks for."""


def accept_for(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def upgrade(
    accept: str | bytes, *, upgrade: bytes = b"websocket", connection: bytes = b"Upgrade"
) -> bytes:
    """A 101 answer; bytes are sent as they are, so a test can put any byte in a value."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: " + upgrade + b"\r\n"
        b"Connection: " + connection + b"\r\n"
        b"Sec-WebSocket-Accept: "
        + (accept.encode() if isinstance(accept, str) else accept)
        + b"\r\n\r\n"
    )


@attrs.define(eq=False)
class Server:
    """Answers every upgrade request with ``answer(accept)`` and then hangs up."""

    answer: Answer
    port: int = 0
    sent: list[tuple[str, bytes]] = attrs.field(factory=list)
    """(the accept digest the request asked for, the answer sent) per connection"""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/"

    async def handle(self, stream: trio.SocketStream) -> None:
        request = b""
        with trio.move_on_after(LIMIT):
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(65536)
                if not data:
                    return
                request += data
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        answer = self.answer(accept_for(key))
        self.sent.append((accept_for(key), answer))
        try:
            await stream.send_all(answer)
            await stream.send_eof()  # a truncated answer ends here, not at the client's timeout
            with trio.move_on_after(LIMIT):  # until the client hangs up
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client reset the connection: its business


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[Server]:
    server = Server(answer)
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def connect(url: str) -> DirectWebSocket:
    """Connect; what connect() raised is raised as it is (not in the nursery's group)."""
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(LIMIT):
                ws = await DirectTransport().connect(nursery, url, headers=[])
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    return ws


# --- bytes that are not UTF-8 ---------------------------------------------------------------

NOT_UTF8 = {
    "Upgrade": lambda accept: upgrade(accept, upgrade=b"websocket\xff"),
    "Upgrade, only that byte": lambda accept: upgrade(accept, upgrade=b"\xff"),
    "Connection": lambda accept: upgrade(accept, connection=b"Upgrade\xe9"),
    "Sec-WebSocket-Accept": lambda accept: upgrade(accept.encode()[:-1] + b"\xff"),
    "Sec-WebSocket-Accept, twice": lambda accept: upgrade(accept).replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Accept: \x80\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", NOT_UTF8.values(), ids=NOT_UTF8.keys())
async def test_a_header_byte_that_is_not_utf8_is_a_transport_error(answer: Answer) -> None:
    """h11 accepts any byte 0x80-0xff in a field value (obs-text); the checks must too."""
    async with serving(answer) as server:
        with pytest.raises(TransportError) as failed:
            await connect(server.url)
        assert failed.value.status is None
        assert "handshake failed" in str(failed.value)


async def test_a_connection_header_with_another_token_that_is_not_utf8_still_upgrades() -> None:
    """Tokens are compared as bytes: an unknown one, whatever its bytes, is no reason to fail."""
    answer = partial(upgrade, connection=b"keep-alive\xa0, Upgrade")
    async with serving(answer) as server:
        ws = await connect(server.url)
        await ws.aclose()


# --- 1xx and redirects ----------------------------------------------------------------------


async def test_informational_answers_before_the_101_are_skipped() -> None:
    """RFC 9110 §15.2: a client must accept any number of 1xx answers before the final one."""

    def answer(accept: str) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </v1/>; rel=preconnect\r\n\r\n"
            b"HTTP/1.1 199 Misc\r\n\r\n" + upgrade(accept) + b"\x81\x05hello"
        )

    async with serving(answer) as server:
        ws = await connect(server.url)
        with trio.fail_after(LIMIT):
            assert await ws.receive_batch() == [b"hello"]
        await ws.aclose()


async def test_an_endless_stream_of_informational_answers_is_a_transport_error() -> None:
    async with serving(lambda accept: b"HTTP/1.1 100 Continue\r\n\r\n" * 5000) as server:
        with pytest.raises(TransportError) as failed:
            await connect(server.url)
    assert "informational" in str(failed.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_refused_and_names_its_location(status: int) -> None:
    location = b"wss://ws-emea.example/v1/?region=eu"

    def answer(accept: str) -> bytes:
        return (
            f"HTTP/1.1 {status} Moved\r\n".encode()
            + b"Location: "
            + location
            + b"\r\nContent-Length: 0\r\n\r\n"
        )

    async with serving(answer) as server:
        with pytest.raises(TransportError) as refused:
            await connect(server.url)
    assert refused.value.status == status
    message = str(refused.value)
    assert f"HTTP {status}" in message
    assert location.decode() in message
    assert "not followed" in message


async def test_a_redirect_without_a_location_or_with_odd_bytes_in_it_is_still_reported() -> None:
    async with serving(lambda accept: b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n") as server:
        with pytest.raises(TransportError) as refused:
            await connect(server.url)
    assert refused.value.status == 302
    assert "no Location" in str(refused.value)

    odd = b"HTTP/1.1 301 Moved\r\nLocation: wss://h\xffst/\x1b[31m\r\nContent-Length: 0\r\n\r\n"
    async with serving(lambda accept: odd) as server:
        with pytest.raises(TransportError) as refused:
            await connect(server.url)
    assert refused.value.status == 301
    assert "\x1b" not in str(refused.value)  # shown escaped: a log line stays one clean line


# --- fuzzing --------------------------------------------------------------------------------

LINES = [
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 103 Early Hints",
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 301 Moved",
    b"HTTP/1.0 101 OK",
    b"HTTP/2 101",
    b"Upgrade: websocket",
    b"Upgrade: \xffwebsocket",
    b"Connection: Upgrade",
    b"Connection: \xc3\x28",
    b"Sec-WebSocket-Accept: \xed\xa0\x80",
    b"Sec-WebSocket-Extensions: permessage-deflate",
    b"Sec-WebSocket-Protocol: chat",
    b"Location: \xfe",
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Transfer-Encoding: chunked",
    b"X: " + b"y" * 70_000,
    b"",
    b"\x00",
]


@st.composite
def mutations(draw: st.DrawFn) -> Answer:
    """A correct 101 (maybe after 1xx answers, maybe with frames after it) changed at random:
    bytes replaced (mostly by ones that are not UTF-8), inserted or deleted, lines swapped for
    odd ones, the answer cut short; or bytes that are not HTTP at all."""
    if draw(st.integers(0, 9)) == 0:
        junk = draw(st.binary(max_size=300))
        return lambda accept: junk
    prefix = b"".join(
        draw(st.lists(st.sampled_from([b"HTTP/1.1 100 Continue\r\n\r\n"]), max_size=2))
    )
    after = draw(st.sampled_from([b"", b"\x81\x02hi", b"\x81\x01\xff", b"\x88\x00"]))
    byte = st.one_of(st.integers(0x80, 0xFF), st.integers(0, 0xFF))
    edits = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("replace"), st.integers(0, 400), byte),
                st.tuples(
                    st.just("insert"), st.integers(0, 400), st.binary(min_size=1, max_size=4)
                ),
                st.tuples(st.just("delete"), st.integers(0, 400), st.integers(1, 8)),
                st.tuples(st.just("line"), st.integers(0, 8), st.sampled_from(LINES)),
                st.tuples(st.just("cut"), st.integers(0, 400), st.just(0)),
            ),
            max_size=4,
        )
    )

    def answer(accept: str) -> bytes:
        data = bytearray(prefix + upgrade(accept) + after)
        for kind, at, what in edits:
            position = at % (len(data) + 1)
            if kind == "replace" and position < len(data):
                data[position] = what
            elif kind == "insert":
                data[position:position] = what
            elif kind == "delete":
                del data[position : position + what]
            elif kind == "line":
                lines = bytes(data).split(b"\r\n")
                lines[at % len(lines)] = what
                data = bytearray(b"\r\n".join(lines))
            elif kind == "cut":
                del data[position:]
        return bytes(data)

    return answer


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=mutations())
@example(answer=lambda accept: upgrade(accept, upgrade=b"websocket\xff"))
@example(answer=lambda accept: upgrade(accept, connection=b"\xffUpgrade"))
@example(answer=lambda accept: upgrade(accept.encode() + b"\xff"))
async def test_a_mutated_answer_connects_or_is_a_transport_error(answer: Answer) -> None:
    async with serving(answer) as server:
        try:
            ws = await connect(server.url)
        except TransportError as failed:
            event(f"refused: {str(failed).split(':')[0]}")  # see --hypothesis-show-statistics
            return
        event("connected")
        [(accept, sent)] = server.sent
        # It connected: the answer held a 101 with the digest this connection asked for.
        assert b" 101 " in sent
        assert accept.encode() in sent
        await ws.aclose()


# --- the URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/v1/", "ws:///v1/", "ws://h:99999/", "ws://h:port/", "ws://[::1/v1/"],
    ids=["http", "no host", "port out of range", "port not a number", "bad IPv6 literal"],
)
async def test_a_url_that_is_not_a_websocket_url_is_a_transport_error(url: str) -> None:
    with pytest.raises(TransportError) as failed:
        await connect(url)
    assert failed.value.status is None
    assert "URL" in str(failed.value)
