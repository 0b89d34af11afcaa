"""The same connection-level faults against every transport: ``direct``, ``websockets`` and
``trio-websocket`` must fail the same way, so the connection task can treat them alike.

Expectations: a failure to connect is a :class:`TransportError` whose message names the cause
(and leaves no task behind in the caller's nursery); a failure after connecting ends
``receive_batch`` with :class:`TransportClosed` and the right close code. The servers are raw
loopback sockets whose bytes the tests write, so every fault is exactly the one named; the
server reads the client's frames with websockets' server-side sans-I/O parser.

Each test runs once per transport: ids end in [direct], [websockets] or [trio-websocket].
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from websockets.frames import Close, Opcode

from coinfeed.config import TRANSPORTS
from coinfeed.transport import (
    CLOSE_TIMEOUT,
    Transport,
    TransportClosed,
    TransportError,
)
from coinfeed.transport.direct import DirectTransport
from coinfeed.transport.libraries import TrioWebSocketTransport, WebsocketsTransport
from tests import wspeer
from tests.pki import Pki
from tests.wspeer import (
    LIMIT,
    Peer,
    accept_for,
    as_bytes,
    close_frame,
    frame,
    receive_until_closed,
    refuse_quietly,
    server_context,
    text,
)

PROMPT = 0.5  # seconds: "at once" for a close the server announced, well below stale_after

TRANSPORT_CLASSES: dict[str, Callable[..., Transport]] = {
    "direct": DirectTransport,
    "websockets": WebsocketsTransport,
    "trio-websocket": TrioWebSocketTransport,
}
assert set(TRANSPORT_CLASSES) == set(TRANSPORTS), "a transport has no fault tests"


@pytest.fixture(params=TRANSPORTS)
def make_transport(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    return TRANSPORT_CLASSES[request.param]


serving = partial(wspeer.serving, script_limit=LIMIT)


async def connect_fails(transport: Transport, url: str) -> TransportError:
    """The TransportError connecting raised, in a nursery that must then exit at once: a
    failed connect leaves no library task behind (it would hang the nursery here)."""
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(TransportError) as failed:
                await transport.connect(nursery, url, headers=[("X-CoinAPI-Key", "k")])
    return failed.value


# --- failures to connect: TransportError naming the cause --------------------------------------


async def test_a_refused_port(make_transport: Callable[..., Transport]) -> None:
    with trio.socket.socket() as sock:  # bound, never listening: connecting is refused
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        failed = await connect_fails(make_transport(), f"ws://127.0.0.1:{port}/v1/")
    assert failed.status is None
    assert "refused" in str(failed).lower(), failed


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/v1/", "ws:///v1/", "ws://127.0.0.1:99999/v1/", "ws://[::1/v1/"],
    ids=["http", "no host", "port out of range", "bad IPv6 literal"],
)
async def test_a_url_that_is_not_a_websocket_url(
    make_transport: Callable[..., Transport], url: str
) -> None:
    failed = await connect_fails(make_transport(), url)
    assert failed.status is None


async def test_a_host_that_does_not_resolve(make_transport: Callable[..., Transport]) -> None:
    failed = await connect_fails(make_transport(), "wss://coinfeed-test.invalid/v1/")
    assert failed.status is None
    assert "cannot resolve host 'coinfeed-test.invalid'" in str(failed), failed


async def test_an_http_403_answer(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        body = b'{"error":"Forbidden"}'
        await peer.send(
            f"HTTP/1.1 403 Forbidden\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )

    async with serving(script) as server:
        failed = await connect_fails(make_transport(), server.url)
        await server.wait_done()
    assert failed.status == 403
    assert "403" in str(failed), failed


async def test_a_redirect_is_not_followed(make_transport: Callable[..., Transport]) -> None:
    """Following it would send the API key header to a host nobody configured."""
    followed: list[bool] = []

    async def elsewhere(peer: Peer) -> None:
        followed.append(True)
        await peer.accept()

    async with serving(elsewhere) as other:

        async def script(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(
                b"HTTP/1.1 301 Moved Permanently\r\n"
                + f"Location: {other.url}\r\nContent-Length: 0\r\n\r\n".encode()
            )

        async with serving(script) as server:
            failed = await connect_fails(make_transport(), server.url)
            await server.wait_done()
    assert failed.status == 301
    assert other.url in str(failed), failed
    assert followed == []


MALFORMED: dict[str, tuple[Callable[[Peer], bytes], str]] = {
    # answer -> what the message must mention
    "wrong accept": (lambda peer: peer.answer(accept=accept_for("another key")), "accept"),
    "no Upgrade header": (
        lambda peer: peer.answer().replace(b"Upgrade: websocket\r\n", b""),
        "upgrade",
    ),
    "not HTTP": (lambda peer: b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n\r\n", ""),
    "101 cut short": (lambda peer: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs", ""),
}


@pytest.mark.parametrize(("make_answer", "mentions"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_101_answer(
    make_transport: Callable[..., Transport], make_answer: Callable[[Peer], bytes], mentions: str
) -> None:
    """The server hangs up after its answer: a client that waits for more would wait for ever
    (until its caller's timeout) instead of reporting the bad answer."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(make_answer(peer) + text("never seen"))

    async with serving(script) as server:
        failed = await connect_fails(make_transport(), server.url)
        await server.wait_done()
    assert failed.status is None
    assert "handshake" in str(failed), failed
    assert mentions in str(failed).lower(), failed


async def test_a_malformed_101_answer_on_a_connection_kept_open(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(peer.answer(accept=accept_for("another key")))
        await peer.next_frame()  # nothing: the client hangs up

    async with serving(script) as server:
        failed = await connect_fails(make_transport(), server.url)
        await server.wait_done()
    assert failed.status is None
    assert "accept" in str(failed).lower(), failed


# --- TLS -----------------------------------------------------------------------------------


def make_certificate(directory: Path, name: str, alt_names: str) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for ``alt_names``, made by the openssl CLI."""
    pair = Pki.in_directory(directory, "wss://").self_signed(name, names=alt_names)
    return pair.cert, pair.key


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Self-signed, for another host name only."""
    directory = tmp_path_factory.mktemp("tls")
    return make_certificate(directory, "other", "DNS:other.example")


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts ``certificate`` (and nothing else)."""
    return ssl.create_default_context(cafile=str(certificate[0]))


async def test_tls_with_a_self_signed_certificate(
    make_transport: Callable[..., Transport], certificate: tuple[Path, Path]
) -> None:
    async with serving(refuse_quietly, ssl_context=server_context(certificate)) as server:
        # The default context: the system's trust store, which does not hold this certificate.
        failed = await connect_fails(make_transport(), server.url_for("wss"))
        await server.wait_done()
    assert failed.status is None
    assert "certificate verify failed: self-signed certificate" in str(failed), failed


async def test_tls_with_a_certificate_for_another_host(
    make_transport: Callable[..., Transport], other_certificate: tuple[Path, Path]
) -> None:
    transport = make_transport(ssl_context=trusting(other_certificate))
    async with serving(refuse_quietly, ssl_context=server_context(other_certificate)) as server:
        failed = await connect_fails(transport, server.url_for("wss", host="localhost"))
        await server.wait_done()
    assert failed.status is None
    assert "certificate verify failed: Hostname mismatch" in str(failed), failed


async def test_a_plaintext_server_on_a_wss_url(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.stream.receive_some(65536)  # a TLS ClientHello, not HTTP
        await peer.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    async with serving(script) as server:
        failed = await connect_fails(make_transport(), server.url_for("wss"))
        await server.wait_done()
    assert failed.status is None
    assert "is the server speaking TLS on this port?" in str(failed), failed


async def test_wss_with_the_ssl_context_given(
    make_transport: Callable[..., Transport], certificate: tuple[Path, Path]
) -> None:
    """The transport's ``ssl_context`` (here one trusting the test's certificate) is used."""

    async def script(peer: Peer) -> None:
        await peer.accept()
        got = await peer.next_frame()
        assert got is not None and got.opcode is Opcode.TEXT
        await peer.send(text("echo: " + bytes(got.data).decode()))
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1000
        await peer.send(close_frame(1000))

    transport = make_transport(ssl_context=trusting(certificate))
    async with serving(script, ssl_context=server_context(certificate)) as server:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                ws = await transport.connect(nursery, server.url_for("wss"), headers=[])
                await ws.send('{"type":"hello"}')
                assert as_bytes(await ws.receive_batch()) == [b'echo: {"type":"hello"}']
                await ws.aclose()
        await server.wait_done()


# --- failures after connecting: TransportClosed with the right code ---------------------------


async def test_the_server_closes_tcp_without_a_close_frame(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(text("last words"))

    async with serving(script) as server:
        async with trio.open_nursery() as nursery:
            ws = await make_transport().connect(nursery, server.url, headers=[])
            received, closed = await receive_until_closed(ws)
            assert received == [b"last words"]
            assert closed.code == 1006
            await ws.aclose()  # after the end: no error
            nursery.cancel_scope.cancel()
        await server.wait_done()


async def test_a_close_frame_while_the_server_keeps_tcp_open(
    make_transport: Callable[..., Transport],
) -> None:
    """The close is reported at once (not when a watchdog finds the connection silent), the
    client answers the close frame as RFC 6455 asks, and TCP is gone after aclose at the latest.
    """
    echoed: list[int] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(text("reconnect now") + close_frame(1001, "maintenance"))
        echo = await peer.next_frame()
        assert echo is not None and echo.opcode is Opcode.CLOSE
        echoed.append(Close.parse(echo.data).code)
        assert await peer.next_frame() is None  # the server never closes TCP: the client does

    async with serving(script) as server, trio.open_nursery() as nursery:
        ws = await make_transport().connect(nursery, server.url, headers=[])
        started = trio.current_time()
        received, closed = await receive_until_closed(ws)
        elapsed = trio.current_time() - started
        assert received == [b"reconnect now"]
        assert (closed.code, closed.reason) == (1001, "maintenance")
        assert elapsed < PROMPT
        with trio.fail_after(2 * CLOSE_TIMEOUT):
            await ws.aclose()
        await server.wait_done()
        nursery.cancel_scope.cancel()
    assert echoed == [1001]


async def test_a_message_over_max_message_bytes_is_1009(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(text("small") + text("x" * 5000))
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1009
        await peer.send(close_frame(1009))

    async with serving(script) as server:
        async with trio.open_nursery() as nursery:
            transport = make_transport(max_message_bytes=4096)
            ws = await transport.connect(nursery, server.url, headers=[])
            received, closed = await receive_until_closed(ws)
            assert received == [b"small"]
            assert closed.code == 1009
            nursery.cancel_scope.cancel()
        await server.wait_done()


async def test_a_normal_exchange(make_transport: Callable[..., Transport]) -> None:
    """Messages both ways (one in fragments), a server ping answered, then a close with 1000
    both ways."""

    async def script(peer: Peer) -> None:
        await peer.accept()
        hello = await peer.next_frame()
        assert hello is not None and hello.opcode is Opcode.TEXT
        assert bytes(hello.data) == b'{"type":"hello"}'
        fragmented = frame(0x1, b"tw", fin=False) + frame(0x9, b"hb") + frame(0x0, b"o")
        await peer.send(text("one") + fragmented)
        pong = await peer.next_frame()
        assert pong is not None and pong.opcode is Opcode.PONG and bytes(pong.data) == b"hb"
        close = await peer.next_frame()
        assert close is not None and Close.parse(close.data).code == 1000
        await peer.send(close_frame(1000))
        assert await peer.next_frame() is None  # the client hung up

    async with serving(script) as server:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                ws = await make_transport().connect(nursery, server.url, headers=[])
                await ws.send('{"type":"hello"}')
                received: list[bytes] = []
                while len(received) < 2:
                    received += as_bytes(await ws.receive_batch())
                assert received == [b"one", b"two"]
                await ws.aclose()
                with pytest.raises(TransportClosed):
                    await ws.send("after close")
        await server.wait_done()
