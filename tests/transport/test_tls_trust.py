"""One trust store for the WebSocket and REST, and TLS failures that say why (REST side; the
WebSocket transports have theirs in the transport fault tests)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import trio

from coinfeed.config import ConfigError, Settings
from coinfeed.rest import RestRetryable, open_rest_client
from coinfeed.service import Service
from coinfeed.tls import client_context
from tests.pki import Certificates, KeyPair, make_certificates
from tests.sinks.redisserver import TlsFiles

SYM = "BITSTAMP_SPOT_BTC_USD"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"), name="rest")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory)


@asynccontextmanager
async def https_server(files: TlsFiles | KeyPair) -> AsyncIterator[str]:
    """An HTTPS server on loopback answering every request with an empty trade list."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)

    async def answer(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(4096)
            await stream.send_all(ANSWER)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client refused our certificate

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            partial(trio.serve_ssl_over_tcp, answer, 0, context, host="127.0.0.1")
        )
        yield f"https://127.0.0.1:{listener.transport_listener.socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def fetch(url: str, context: ssl.SSLContext | None = None) -> list[object]:
    client = open_rest_client(url, "test-key", ssl_context=context)
    try:
        now = datetime.now(UTC)
        return list(await client.trades_history(SYM, now, now, limit=10))
    finally:
        await client.aclose()


async def test_rest_names_the_certificate_problem_it_refused(tls_files: TlsFiles) -> None:
    async with https_server(tls_files) as url:
        with pytest.raises(RestRetryable) as refused:
            await fetch(url)  # the system store never signed this server
    message = str(refused.value)
    assert "certificate verify failed: unable to get local issuer certificate" in message


async def test_rest_trusts_the_ca_file_the_websocket_trusts(tls_files: TlsFiles) -> None:
    async with https_server(tls_files) as url:
        assert await fetch(url, client_context(str(tls_files.ca))) == []


async def test_rest_honours_ssl_cert_file_as_the_websocket_does(
    tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca))
    async with https_server(tls_files) as url:
        assert await fetch(url) == []
    # The WebSocket transports get their context from the same function.
    assert client_context().get_ca_certs()[0]["subject"] == ((("commonName", "coinfeed rest CA"),),)


async def test_rest_names_the_host_that_did_not_resolve() -> None:
    with pytest.raises(RestRetryable) as failed:
        await fetch("https://nonexistent.invalid")
    assert "cannot resolve host 'nonexistent.invalid'" in str(failed.value)


def test_a_ca_file_that_is_not_pem_names_the_setting(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as refused:
        Service.build(make_settings(ca_file=str(bad)), handle_signals=False)
    assert refused.value.setting == "ca_file"


@pytest.mark.parametrize(
    ("presented", "host", "cause"),
    [
        ("self_signed", "127.0.0.1", "certificate verify failed: self-signed certificate"),
        ("other_name", "localhost", "certificate verify failed: Hostname mismatch"),
        ("expired", "127.0.0.1", "certificate verify failed: certificate has expired"),
        ("unknown_ca_signed", "127.0.0.1", "unable to get local issuer certificate"),
    ],
)
async def test_rest_names_each_certificate_problem(
    certificates: Certificates, presented: str, host: str, cause: str
) -> None:
    pair: KeyPair = getattr(certificates, presented)
    context = client_context(str(certificates.trusted_ca.cert))
    async with https_server(pair) as url:
        with pytest.raises(RestRetryable) as refused:
            await fetch(url.replace("127.0.0.1", host), context)
    assert cause in str(refused.value)


async def test_rest_names_a_plaintext_server_behind_an_https_url() -> None:
    async def plain_http(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, plain_http, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with pytest.raises(RestRetryable) as refused:
            await fetch(f"https://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
    assert "is the server speaking TLS on this port?" in str(refused.value)
