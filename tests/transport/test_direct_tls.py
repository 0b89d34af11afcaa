"""Why a ``direct`` connection failed, in the :class:`TransportError`'s message: each certificate
problem, a server that does not speak TLS on a ``wss://`` port, a host name that does not
resolve, a refused connection (the text comes from :func:`coinfeed.tls.describe_error`).

The certificates are made by the ``openssl`` command in a temporary directory: a CA the client
trusts and certificates it signed (good, expired, for another name), a second CA the client does
not trust, and a self-signed certificate. ``openssl ca`` sets the expired one's dates (``-days``
cannot be negative).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from coinfeed.tls import client_context
from coinfeed.transport import TransportError
from coinfeed.transport.direct import DirectTransport, DirectWebSocket
from tests.pki import Certificates, KeyPair, make_certificates
from tests.wspeer import LIMIT, accept_for


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory)


async def upgrade(stream: trio.abc.Stream) -> None:
    """Answer one upgrade request with a correct 101, then the client's close frame with 1000."""
    request = b""
    while b"\r\n\r\n" not in request:
        data = await stream.receive_some(65536)
        if not data:
            return
        request += data
    [key] = re.findall(rb"(?im)^sec-websocket-key:\s*(\S+)", request)
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_for(key.decode()).encode() + b"\r\n\r\n"
    )
    if await stream.receive_some(65536):  # the close frame (the only frame the tests send)
        await stream.send_all(b"\x88\x02\x03\xe8")


async def tls_handler(stream: trio.abc.Stream) -> None:
    try:
        with trio.move_on_after(LIMIT):
            await upgrade(stream)
    except trio.BrokenResourceError:
        pass  # the client refused the certificate (what most tests here expect)


@asynccontextmanager
async def tls_server(pair: KeyPair) -> AsyncIterator[int]:
    """A wss:// upgrade server on 127.0.0.1 presenting ``pair``; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_ssl_over_tcp, tls_handler, 0, context, host="127.0.0.1")
        [listener] = await nursery.start(serve)
        yield listener.transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def connect(url: str, context: ssl.SSLContext | None = None) -> DirectWebSocket:
    """Connect; what connect() raised is raised as it is (not in the nursery's group)."""
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(LIMIT):
                transport = DirectTransport(ssl_context=context)
                ws = await transport.connect(nursery, url, headers=[])
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    return ws


async def refused_because(url: str, context: ssl.SSLContext | None = None) -> str:
    with pytest.raises(TransportError) as failed:
        await connect(url, context)
    assert failed.value.status is None
    return str(failed.value)


async def test_a_certificate_of_the_trusted_ca_connects(certificates: Certificates) -> None:
    """The control: the same server and client context connect when nothing is wrong."""
    async with tls_server(certificates.good) as port:
        ws = await connect(f"wss://127.0.0.1:{port}/", client_context(certificates.trusted_ca.cert))
        await ws.aclose()


async def test_a_self_signed_certificate_is_named(certificates: Certificates) -> None:
    async with tls_server(certificates.self_signed) as port:
        why = await refused_because(f"wss://127.0.0.1:{port}/", client_context())
    assert re.search(r"certificate verify failed: self[- ]signed certificate", why), why


async def test_a_certificate_for_another_host_name_is_named(certificates: Certificates) -> None:
    async with tls_server(certificates.other_name) as port:
        context = client_context(certificates.trusted_ca.cert)
        why = await refused_because(f"wss://localhost:{port}/", context)
    assert "certificate verify failed: Hostname mismatch" in why, why
    assert "'localhost'" in why


async def test_an_expired_certificate_is_named(certificates: Certificates) -> None:
    async with tls_server(certificates.expired) as port:
        context = client_context(certificates.trusted_ca.cert)
        why = await refused_because(f"wss://127.0.0.1:{port}/", context)
    assert "certificate verify failed: certificate has expired" in why, why


async def test_a_certificate_of_an_unknown_ca_is_named(certificates: Certificates) -> None:
    async with tls_server(certificates.unknown_ca_signed) as port:
        context = client_context(certificates.trusted_ca.cert)
        why = await refused_because(f"wss://127.0.0.1:{port}/", context)
    assert "certificate verify failed: unable to get local issuer certificate" in why, why


async def test_a_plaintext_server_on_a_wss_url_is_named() -> None:
    """An HTTP server answers the ClientHello with a 400 in plain text, then hangs up."""

    async def plain_http(stream: trio.SocketStream) -> None:
        with trio.move_on_after(LIMIT):
            await stream.receive_some(65536)
            await stream.send_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, plain_http, 0, host="127.0.0.1")
        [listener] = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        why = await refused_because(f"wss://127.0.0.1:{port}/", client_context())
        nursery.cancel_scope.cancel()
    assert "is the server speaking TLS on this port?" in why, why
    assert why.startswith("connect failed: TLS handshake failed: "), why


class NoSuchHost(trio.abc.HostnameResolver):
    """Answers every lookup as glibc does for a name that does not exist (deterministic, and
    no DNS traffic from a test)."""

    async def getaddrinfo(self, host: bytes | None, *args: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: object) -> tuple[str, str]:
        raise NotImplementedError


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_a_host_name_that_does_not_resolve_is_named(scheme: str) -> None:
    trio.socket.set_custom_hostname_resolver(NoSuchHost())  # for this test's trio.run only
    why = await refused_because(f"{scheme}://nonexistent.invalid/v1/", client_context())
    assert "cannot resolve host 'nonexistent.invalid': Name or service not known" in why, why


async def test_a_refused_connection_is_named() -> None:
    with socket.socket() as unused:  # bound, not listening: connecting to it is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        why = await refused_because(f"ws://127.0.0.1:{port}/")
    assert "Connection refused" in why, why
