"""TLS at the service: a certificate problem is logged with its cause and retried (never an exit),
and the CA the operator names (``ca_file``, ``SSL_CERT_FILE``) is trusted by every transport."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from loguru import logger

from coinfeed.config import TRANSPORTS, Settings
from coinfeed.service import Service
from tests.helpers import MemorySink, wait_for
from tests.wspeer import LIMIT, Peer, refuse_quietly, server_context, serving

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


async def accept_and_listen(peer: Peer) -> None:
    await peer.accept()
    while await peer.next_frame() is not None:
        pass


async def test_a_certificate_problem_is_logged_with_its_cause_and_retried(
    make_settings: Callable[..., Settings], transport: str, certificate: tuple[Path, Path]
) -> None:
    failures: list[dict[str, Any]] = []
    handler = logger.add(
        lambda m: (
            failures.append(m.record["extra"]) if m.record["message"] == "connect failed" else None
        )
    )
    try:
        async with serving(
            refuse_quietly, ssl_context=server_context(certificate), script_limit=LIMIT
        ) as server:
            settings = make_settings(
                ws_url=server.url_for("wss"), transport=transport, backoff_max=0.2
            )
            service = Service.build(settings, sinks=[MemorySink()], handle_signals=False)
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                await wait_for(lambda: len(failures) >= 3, 10, "three connect attempts")
                service.status.request_shutdown("test over")
    finally:
        logger.remove(handler)
    assert service.status.fatal is None  # retried with backoff, not a reason to stop
    for failure in failures:
        assert "certificate verify failed: self-signed certificate" in failure["error"]


@pytest.mark.parametrize("trust", ["ca_file", "SSL_CERT_FILE"])
async def test_the_ca_the_operator_names_is_trusted(
    make_settings: Callable[..., Settings],
    transport: str,
    certificate: tuple[Path, Path],
    trust: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(
        accept_and_listen, ssl_context=server_context(certificate), script_limit=LIMIT
    ) as server:
        overrides: dict[str, object] = {"ws_url": server.url_for("wss"), "transport": transport}
        if trust == "ca_file":
            overrides["ca_file"] = str(certificate[0])
        else:
            monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        service = Service.build(
            make_settings(**overrides), sinks=[MemorySink()], handle_signals=False
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.subscribed, 10, "subscribed over wss")
            service.status.request_shutdown("test over")
