"""coinfeed's own WebSocket client (``transport = direct``) against loopback servers whose bytes
the tests write themselves (``tests/wspeer.py``): the upgrade request, the handshake checks,
control frames, closing, read sizing and wss://.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from websockets.frames import Close, Opcode

from coinfeed.transport import CLOSE_TIMEOUT, TransportClosed, TransportError
from coinfeed.transport.direct import MIN_READ_BYTES, DirectTransport, DirectWebSocket
from tests.wspeer import (
    LIMIT,
    Peer,
    accept_for,
    close_frame,
    frame,
    receive_until_closed,
    server_context,
    serving,
    text,
)


async def connect(url: str, **options: object) -> DirectWebSocket:
    """Connect with an API key header, in a nursery that exits at once (the client starts no
    task), so a connection that left a task behind would hang here."""
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(LIMIT):
                transport = DirectTransport(**options)  # type: ignore[arg-type]
                ws = await transport.connect(
                    nursery, url, headers=[("X-CoinAPI-Key", "secret-key")]
                )
        except Exception as exc:  # raised outside the nursery, not wrapped in a group
            failure = exc
    if failure is not None:
        raise failure
    return ws


# --- the upgrade request --------------------------------------------------------------------


async def test_the_upgrade_request_is_an_rfc_6455_handshake_with_the_callers_headers() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(then=text("welcome"))
        await peer.close_when_asked()

    async with serving(script) as server:
        for _ in range(2):
            ws = await connect(f"ws://127.0.0.1:{server.port}/v1/?x=1&y=2")
            assert await ws.receive_batch() == [b"welcome"]
            await ws.aclose()
        await server.wait_done(2)
    first, second = (peer.request for peer in server.peers)
    assert first is not None and second is not None
    assert (first.method, first.target, first.version) == ("GET", "/v1/?x=1&y=2", "HTTP/1.1")
    assert first.value("Host") == f"127.0.0.1:{server.port}"
    assert first.value("Upgrade").lower() == "websocket"
    assert "upgrade" in first.value("Connection").lower()
    assert first.value("Sec-WebSocket-Version") == "13"
    assert first.value("X-CoinAPI-Key") == "secret-key"
    assert first.values("Sec-WebSocket-Extensions") == []  # no compression offered
    assert first.values("Sec-WebSocket-Protocol") == []
    keys = [request.value("Sec-WebSocket-Key") for request in (first, second)]
    assert all(len(base64.b64decode(key, validate=True)) == 16 for key in keys)
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    ("url", "host_header"),
    [
        ("ws://feed.example/v1/", "feed.example"),
        ("ws://feed.example:80/v1/", "feed.example"),
        ("ws://feed.example:8080/v1/", "feed.example:8080"),
        ("ws://[::1]:8080/", "[::1]:8080"),
        ("ws://[::1]/", "[::1]"),
    ],
)
async def test_the_host_header_names_the_port_only_when_it_is_not_the_default(
    url: str, host_header: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialled: list[tuple[str, int]] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.close_when_asked()

    async with serving(script) as server:
        real_open = trio.open_tcp_stream

        async def open_tcp_stream(host: str, port: int) -> trio.SocketStream:
            dialled.append((host, port))
            return await real_open("127.0.0.1", server.port)

        monkeypatch.setattr(trio, "open_tcp_stream", open_tcp_stream)
        ws = await connect(url)
        await ws.aclose()
        await server.wait_done()
    [peer] = server.peers
    assert peer.request is not None
    assert peer.request.value("Host") == host_header
    assert dialled[0][1] == (8080 if ":8080" in url else 80)


# --- the answer -----------------------------------------------------------------------------


async def test_frames_in_the_same_segment_as_the_101_are_delivered() -> None:
    pongs: list[bytes] = []

    async def script(peer: Peer) -> None:
        await peer.accept(
            then=text("first")
            + frame(0x2, b"\x00binary\xff")
            + frame(0x9, b"early ping")
            + frame(0x1, b"frag", fin=False)
        )
        pong = await peer.next_frame()
        assert pong is not None and pong.opcode is Opcode.PONG
        pongs.append(bytes(pong.data))
        await peer.send(frame(0x0, b"mented"))
        await peer.close_when_asked()

    async with serving(script) as server:
        ws = await connect(server.url)
        assert await ws.receive_batch() == [b"first", b"\x00binary\xff"]
        with trio.fail_after(LIMIT):
            assert await ws.receive_batch() == [b"fragmented"]
        assert pongs == [b"early ping"]
        await ws.aclose()
        await server.wait_done()


async def test_a_close_in_the_same_segment_as_the_101_follows_the_messages_before_it() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(then=text("bye soon") + close_frame(1001, "going away"))
        echo = await peer.next_frame()
        assert echo is not None and Close.parse(echo.data).code == 1001
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url)
        received, closed = await receive_until_closed(ws)
        assert received == [b"bye soon"]
        assert (closed.code, closed.reason) == (1001, "going away")
        await server.wait_done()


async def test_a_violation_in_the_same_segment_as_the_101_closes_with_1002() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(then=frame(0x1, b"masked", mask=b"abcd"))
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1002
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url)  # a FrameViolation must not escape connect
        received, closed = await receive_until_closed(ws)
        assert received == []
        assert closed.code == 1002
        await server.wait_done()


BAD_ANSWERS: dict[str, tuple[Callable[[Peer], bytes], int | None]] = {
    "wrong accept": (lambda peer: peer.answer(accept=accept_for("dGhlIHNhbXBsZSBub25jZQ==")), None),
    "accept of the key itself": (
        lambda peer: peer.answer(accept=peer.request.value("Sec-WebSocket-Key")),  # type: ignore[union-attr]
        None,
    ),
    "accept twice": (
        lambda peer: peer.answer(extra=f"Sec-WebSocket-Accept: {accept_for('x')}\r\n"),
        None,
    ),
    "no Upgrade header": (
        lambda peer: peer.answer().replace(b"Upgrade: websocket\r\n", b""),
        None,
    ),
    "Upgrade: h2c": (
        lambda peer: peer.answer().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        None,
    ),
    "no Connection header": (
        lambda peer: peer.answer().replace(b"Connection: Upgrade\r\n", b""),
        None,
    ),
    "an extension": (
        lambda peer: peer.answer(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        None,
    ),
    "a subprotocol": (lambda peer: peer.answer(extra="Sec-WebSocket-Protocol: chat\r\n"), None),
    "not HTTP": (lambda peer: b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n\r\n", None),
    "200 instead of 101": (lambda peer: b"HTTP/1.0 200 OK\r\n\r\n<html>hello</html>", 200),
}


@pytest.mark.parametrize(("make_answer", "status"), BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
async def test_a_bad_handshake_answer_is_a_transport_error_and_the_socket_is_closed(
    make_answer: Callable[[Peer], bytes], status: int | None
) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(make_answer(peer) + text("never seen"))
        assert await peer.rest_until_eof() == b""  # no frame sent, then the client hung up

    async with serving(script) as server:
        with pytest.raises(TransportError) as failed:
            await connect(server.url)
        assert failed.value.status == status
        await server.wait_done()


@pytest.mark.parametrize(
    "sent",
    [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", b"\x00\x01"],
    ids=["nothing", "half the headers", "two binary bytes"],
)
async def test_eof_during_the_handshake_is_a_transport_error(sent: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(sent)

    async with serving(script) as server:
        with pytest.raises(TransportError) as failed:
            await connect(server.url)
        assert failed.value.status is None
        await server.wait_done()


@pytest.mark.parametrize("status", [429, 401, 503])
async def test_an_http_rejection_carries_its_status(status: int) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        body = b'{"error":"Too many requests"}'
        await peer.send(
            f"HTTP/1.1 {status} Nope\r\nRetry-After: 5\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        with pytest.raises(TransportError) as rejected:
            await connect(server.url)
        assert rejected.value.status == status
        await server.wait_done()


# --- control frames and closing -------------------------------------------------------------


async def test_a_server_ping_is_answered_with_a_masked_pong_of_the_same_payload() -> None:
    pongs: list[bytes] = []

    async def script(peer: Peer) -> None:
        await peer.accept(then=frame(0x9, b"hb-1"))
        for payload in (b"hb-2", b"\x00" * 125, b""):
            pong = await peer.next_frame()
            assert pong is not None and pong.opcode is Opcode.PONG
            pongs.append(bytes(pong.data))
            await peer.send(frame(0x9, payload))
        pong = await peer.next_frame()
        assert pong is not None and pong.opcode is Opcode.PONG
        pongs.append(bytes(pong.data))
        await peer.send(text("after the pings"))
        await peer.close_when_asked()

    async with serving(script) as server:
        ws = await connect(server.url)
        with trio.fail_after(LIMIT):
            assert await ws.receive_batch() == [b"after the pings"]
        assert pongs == [b"hb-1", b"hb-2", b"\x00" * 125, b""]
        await ws.aclose()
        await server.wait_done()


async def test_a_server_close_is_echoed_and_the_messages_before_it_come_first() -> None:
    connected = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()  # read by receive_batch, not with the 101
        await peer.send(text("one") + text("two") + close_frame(1001, "going away") + text("x"))
        echo = await peer.next_frame()
        assert echo is not None and echo.opcode is Opcode.CLOSE
        assert Close.parse(echo.data).code == 1001
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url)
        connected.set()
        received, closed = await receive_until_closed(ws)
        assert received == [b"one", b"two"]
        assert (closed.code, closed.reason) == (1001, "going away")
        with pytest.raises(TransportClosed):
            await ws.send("too late")
        with pytest.raises(TransportClosed) as again:
            await ws.receive_batch()
        assert again.value.code == 1001
        await ws.aclose()  # after the close: a no-op, not an error
        await server.wait_done()


@pytest.mark.parametrize(
    ("payload", "reported", "echoed"),
    [
        (b"", 1005, 1000),
        (b"\x03", 1002, 1002),
        (b"\x03\xe8\xff\xfe", 1007, 1007),
        (b"\x03\xee", 1002, 1002),
    ],
    ids=["no code", "1-byte payload", "reason not UTF-8", "code 1006 sent"],
)
async def test_an_odd_close_frame_gets_the_right_code(
    payload: bytes, reported: int, echoed: int
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(then=frame(0x8, payload))
        echo = await peer.next_frame()
        assert echo is not None and Close.parse(echo.data).code == echoed
        await peer.rest_until_eof()

    async with serving(script) as server:
        ws = await connect(server.url)
        received, closed = await receive_until_closed(ws)
        assert (received, closed.code) == ([], reported)
        await server.wait_done()


VIOLATIONS = {
    "masked frame": (frame(0x1, b"{}", mask=b"\x01\x02\x03\x04"), 1002),
    "reserved bit": (bytes([0x80 | 0x40 | 0x1, 2]) + b"{}", 1002),
    "opcode 0x3": (frame(0x3, b"{}"), 1002),
    "continuation first": (frame(0x0, b"{}"), 1002),
    "1 GiB frame header only": (b"\x82\x7f" + struct.pack("!Q", 1 << 30), 1009),
    "text not UTF-8": (text(b'{"type":"trade","symbol_id":"CAF\xc9"}'), 1007),
    "fragmented text not UTF-8": (frame(0x1, b"\xe2\x82", fin=False) + frame(0x0, b"!"), 1007),
}


@pytest.mark.parametrize(("bad", "code"), VIOLATIONS.values(), ids=VIOLATIONS.keys())
async def test_a_protocol_violation_sends_a_close_with_its_code_and_drops_the_connection(
    bad: bytes, code: int
) -> None:
    delivered = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept(then=text("fine"))
        await delivered.wait()  # "fine" came in a read of its own
        await peer.send(bad)
        close = await peer.next_frame()
        assert close is not None and close.opcode is Opcode.CLOSE
        assert Close.parse(close.data).code == code
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url, max_message_bytes=64 * 1024)
        assert await ws.receive_batch() == [b"fine"]
        delivered.set()
        received, closed = await receive_until_closed(ws)
        assert received == []
        assert closed.code == code
        assert closed.reason
        await server.wait_done()


FLOOD = b"".join(text(b'{"type":"trade","n":%d}' % i + b" " * 1000) for i in range(1024))
"""About 1 MiB of valid frames: the client has not read them when it fails the connection."""


async def flood_after(peer: Peer, violation: bytes, code: int, *, tls: bool) -> None:
    """Send ``violation`` then FLOOD while reading the client's close frame: it must arrive with
    ``code``, and neither side's reads nor writes may meet a reset."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.send, violation + FLOOD)
        close = await peer.next_frame()
        assert close is not None and close.opcode is Opcode.CLOSE
        assert Close.parse(close.data).code == code
        if not tls:  # a TLS client cannot half-close: it waits for us to hang up
            assert await peer.rest_until_eof() == b""  # its FIN, not a reset


FAILURES = {
    "1002 masked frame": (frame(0x1, b"{}", mask=b"abcd"), 1002),
    "1007 text not UTF-8": (text(b"\xff"), 1007),
    "1009 frame too large": (b"\x82\x7f" + struct.pack("!Q", 1 << 30), 1009),
}


@pytest.mark.parametrize(("violation", "code"), FAILURES.values(), ids=FAILURES.keys())
async def test_failing_the_connection_with_unread_data_lets_the_server_read_the_close_code(
    violation: bytes, code: int
) -> None:
    """Closing a socket with unread data makes the kernel send RST, which can destroy the close
    frame before the server reads it. The client half-closes and drains first (bounded)."""
    connected = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()
        await flood_after(peer, violation, code, tls=False)

    async with serving(script) as server:
        ws = await connect(server.url, max_message_bytes=64 * 1024)
        connected.set()
        received, closed = await receive_until_closed(ws)
        assert (received, closed.code) == ([], code)
        await server.wait_done()


async def test_failing_a_wss_connection_with_unread_data_lets_the_server_read_the_close_code(
    certificate: tuple[Path, Path],
) -> None:
    """TLS has no half-close: the client stops writing and drains until the server hangs up."""
    connected = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()
        await flood_after(peer, frame(0x1, b"{}", mask=b"abcd"), 1002, tls=True)

    client_context = ssl.create_default_context(cafile=str(certificate[0]))
    async with serving(script, ssl_context=server_context(certificate)) as server:
        url = f"wss://127.0.0.1:{server.port}/v1/"
        ws = await connect(url, ssl_context=client_context)
        connected.set()
        received, closed = await receive_until_closed(ws)
        assert (received, closed.code) == ([], 1002)
        await server.wait_done()


async def test_draining_after_a_failure_is_bounded_when_the_server_keeps_sending(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A server that never stops sending and never hangs up: the client gives up within
    CLOSE_TIMEOUT (and a byte cap) and drops the connection."""
    connected = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()
        with contextlib.suppress(trio.BrokenResourceError):
            await peer.send(frame(0x1, b"{}", mask=b"abcd"))
            while True:
                await peer.send(FLOOD)
                await trio.sleep(0.01)

    async with serving(script) as server, trio.open_nursery() as nursery:
        ws = await DirectTransport().connect(nursery, server.url, headers=[])
        connected.set()
        started = trio.current_time()
        with pytest.raises(TransportClosed) as closed:
            while True:
                await ws.receive_batch()
        assert closed.value.code == 1002
        assert trio.current_time() - started <= CLOSE_TIMEOUT + 0.1


async def test_messages_before_a_violation_in_the_same_read_are_delivered_first() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(text("one") + text("two") + frame(0x1, b"masked", mask=b"abcd"))
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1002
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url)
        received, closed = await receive_until_closed(ws)
        assert received == [b"one", b"two"]
        assert closed.code == 1002
        await server.wait_done()


async def test_eof_without_a_close_frame_is_1006_after_the_messages() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(then=text("last words"))

    async with serving(script) as server:
        ws = await connect(server.url)
        received, closed = await receive_until_closed(ws)
        assert received == [b"last words"]
        assert closed.code == 1006
        await server.wait_done()


async def test_a_ping_from_a_server_that_has_gone_is_1006_not_a_crash() -> None:
    """The pong cannot be sent (broken pipe): receive_batch reports a closed connection."""
    connected, gone = trio.Event(), trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()  # the ping is not read with the 101 (and answered at once)
        await peer.send(frame(0x9, b"are you there"))
        await peer.stream.aclose()
        gone.set()

    async with serving(script) as server:
        ws = await connect(server.url)
        connected.set()
        await gone.wait()
        await ws.send("hello")  # reaches a closed socket: the server's kernel answers RST
        await trio.sleep(0.1)  # the RST arrives; the ping is still waiting to be read
        received, closed = await receive_until_closed(ws)
        assert received == []
        assert closed.code == 1006
        await server.wait_done()


# --- sending and closing from our side ------------------------------------------------------


async def test_send_writes_masked_text_frames_the_server_can_read() -> None:
    received: list[tuple[Opcode, bytes]] = []
    big = "x" * 70_000

    async def script(peer: Peer) -> None:
        await peer.accept()
        for _ in range(3):
            got = await peer.next_frame()
            assert got is not None and got.fin
            received.append((got.opcode, bytes(got.data)))
        await peer.close_when_asked()

    async with serving(script) as server:
        ws = await connect(server.url)
        await ws.send('{"type":"hello","apikey":"k"}')
        await ws.send(b'{"type":"subscribe"}')
        await ws.send(big)
        await ws.aclose()
        await server.wait_done()
    assert received == [
        (Opcode.TEXT, b'{"type":"hello","apikey":"k"}'),
        (Opcode.TEXT, b'{"type":"subscribe"}'),
        (Opcode.TEXT, big.encode()),
    ]


async def test_aclose_completes_the_closing_handshake_with_1000() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1000
        await peer.send(close_frame(1000))
        assert await peer.rest_until_eof() == b""

    async with serving(script) as server:
        ws = await connect(server.url)
        await ws.aclose()
        with pytest.raises(TransportClosed):
            await ws.send("after close")
        with pytest.raises(TransportClosed):
            await ws.receive_batch()
        await server.wait_done()


async def test_aclose_is_bounded_when_the_server_never_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        close = await peer.next_frame()
        assert close is not None and close.opcode is Opcode.CLOSE
        assert Close.parse(close.data).code == 1000
        await peer.send(text("still talking"))  # no close frame, ever; the socket stays open
        assert await peer.rest_until_eof() == b""  # the client hung up on its own

    async with serving(script) as server:
        async with trio.open_nursery() as nursery:
            ws = await DirectTransport().connect(nursery, server.url, headers=[])
            started = trio.current_time()
            await ws.aclose()
            elapsed = trio.current_time() - started
        assert elapsed <= 2 * CLOSE_TIMEOUT  # sending the close, then waiting for the answer
        await server.wait_done()


# --- read sizing ----------------------------------------------------------------------------


async def test_with_no_room_the_socket_is_still_read() -> None:
    big = b"y" * (3 * MIN_READ_BYTES)
    connected = trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()  # sent after the handshake's read: receive_batch reads it
        await peer.send(text("small"))
        await trio.sleep(0.01)
        await peer.send(text(big))
        await peer.close_when_asked()

    async with serving(script) as server:
        ws = await connect(server.url)
        connected.set()
        received: list[bytes] = []
        with trio.fail_after(LIMIT):
            while len(received) < 2:
                batch = await ws.receive_batch(room=0)
                assert batch
                received += [m.encode() if isinstance(m, str) else m for m in batch]
        assert received == [b"small", big]
        await ws.aclose()
        await server.wait_done()


MESSAGES = [f'{{"type":"trade","n":{i}}}'.encode() for i in range(600)]


async def burst_batches(room: int, first: list[bytes] | None = None) -> list[list[bytes]]:
    """The batches receive_batch(room) returns for 600 small messages sent in one write (after
    the ``first`` messages, sent alone)."""
    connected, sent = trio.Event(), trio.Event()

    async def script(peer: Peer) -> None:
        await peer.accept()
        await connected.wait()  # not read with the 101, whose read is not sized by room
        for message in first or []:
            await peer.send(text(message))
        await peer.send(b"".join(text(m) for m in MESSAGES))
        sent.set()
        await peer.close_when_asked()

    batches: list[list[bytes]] = []
    async with serving(script) as server:
        ws = await connect(server.url)
        connected.set()
        with trio.fail_after(LIMIT):
            await sent.wait()
            while sum(map(len, batches)) < len(MESSAGES) + len(first or []):
                batch = await ws.receive_batch(room=room)
                batches.append([m.encode() if isinstance(m, str) else m for m in batch])
        await ws.aclose()
        await server.wait_done()
    assert [m for batch in batches for m in batch] == [*(first or []), *MESSAGES]
    return batches


async def test_a_burst_comes_back_in_few_calls_when_there_is_room() -> None:
    batches = await burst_batches(room=10_000)
    assert len(batches) <= 3


async def test_a_burst_is_read_in_small_bites_when_there_is_little_room() -> None:
    batches = await burst_batches(room=1)
    frame_bytes = min(len(text(m)) for m in MESSAGES)
    assert max(map(len, batches)) <= MIN_READ_BYTES // frame_bytes + 1
    assert len(batches) >= len(MESSAGES) * frame_bytes // MIN_READ_BYTES


async def test_after_large_messages_a_burst_still_comes_back_within_the_room() -> None:
    # Book snapshots inflate the running estimate of the message size, so the next reads ask
    # for more bytes than the room is worth: what does not fit waits for the next call instead
    # of being handed over only for the queue to drop it.
    batches = await burst_batches(room=50, first=[b"s" * 40_000] * 3)
    assert max(map(len, batches)) <= 50


# --- wss:// ---------------------------------------------------------------------------------


async def test_wss_round_trip_with_a_trusted_certificate(certificate: tuple[Path, Path]) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        got = await peer.next_frame()
        assert got is not None and got.opcode is Opcode.TEXT
        await peer.send(text(b"echo: " + bytes(got.data)) + frame(0x9, b"tls ping"))
        pong = await peer.next_frame()
        assert pong is not None and bytes(pong.data) == b"tls ping"
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1000
        await peer.send(close_frame(1000))

    client_context = ssl.create_default_context(cafile=str(certificate[0]))
    async with serving(script, ssl_context=server_context(certificate)) as server:
        url = f"wss://127.0.0.1:{server.port}/v1/"
        ws = await connect(url, ssl_context=client_context)
        await ws.send('{"type":"hello"}')
        with trio.fail_after(LIMIT):
            assert await ws.receive_batch() == [b'echo: {"type":"hello"}']
        await ws.aclose()
        await server.wait_done()
    [peer] = server.peers
    assert peer.request is not None and peer.request.value("Host") == f"127.0.0.1:{server.port}"


async def test_wss_to_an_untrusted_certificate_is_a_transport_error(
    certificate: tuple[Path, Path],
) -> None:
    refused: list[bool] = []

    async def script(peer: Peer) -> None:
        try:
            await peer.read_request()
        except trio.BrokenResourceError:  # the client refused our certificate
            refused.append(True)

    async with serving(script, ssl_context=server_context(certificate)) as server:
        with pytest.raises(TransportError) as failed:
            await connect(f"wss://127.0.0.1:{server.port}/v1/")  # the system's trust store
        assert failed.value.status is None
        await server.wait_done()
    assert refused == [True]
