"""The debug endpoints: who may read them off loopback, and what /api/debug/memory shows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from loguru import logger

from coinfeed.config import ListenAddress, Secret, Settings
from coinfeed.observability.http import is_loopback, serve_api
from coinfeed.service import Service
from tests.fakes import FakeTransport, FakeWebSocket
from tests.helpers import MemorySink, wait_for

TOKEN = "debug-token-0b7e"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("2001:db8::1", False),
        ("coinfeed.internal", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@asynccontextmanager
async def exposed_api(settings: Settings) -> AsyncIterator[tuple[Service, str]]:
    """The service with its API served as if bound off loopback (the test still uses 127.0.0.1)."""
    service = Service.build(
        settings,
        transport=FakeTransport([FakeWebSocket()]),
        sinks=[MemorySink()],
        handle_signals=False,
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        url = await nursery.start(serve_api, service.view, "127.0.0.1", 0, stop)
        exposed = await nursery.start(
            lambda task_status: serve_api(
                service.view, "127.0.0.1", 0, stop, exposed=True, task_status=task_status
            )
        )
        assert url and exposed
        yield service, str(exposed)
        stop.set()
        service.status.request_shutdown("test over")


async def test_off_loopback_debug_needs_the_bearer_token_and_the_rest_stays_open(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(debug_token=Secret(TOKEN))
    async with exposed_api(settings) as (_service, url), httpx.AsyncClient(base_url=url) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            refused = await client.get("/api/debug/memory", headers=headers)
            assert refused.status_code == 403, headers
            assert refused.json() == {"error": "forbidden"}
            assert TOKEN not in refused.text
        assert (await client.get("/api/debug/anything")).status_code == 403
        allowed = await client.get(
            "/api/debug/memory", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert allowed.status_code == 200 and "queues" in allowed.json()
        assert TOKEN not in allowed.text
        assert (
            await client.get("/api/debug/memory", headers={"Authorization": f"bearer  {TOKEN}"})
        ).status_code == 200
        for path in ("/health", "/metrics"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/ready")).status_code in (200, 503)
        assert (await client.get("/api/books/BITSTAMP_SPOT_BTC_USD")).status_code == 404


async def test_off_loopback_without_a_token_debug_is_refused_and_the_log_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    lines: list[str] = []
    handler = logger.add(lines.append, format="{message}", level="INFO")
    try:
        async with (
            exposed_api(make_settings()) as (_service, url),
            httpx.AsyncClient(base_url=url) as client,
        ):
            assert (await client.get("/api/debug/memory")).status_code == 403
            assert (
                await client.get("/api/debug/memory", headers={"Authorization": "Bearer x"})
            ).status_code == 403
            assert (await client.get("/metrics")).status_code == 200
    finally:
        logger.remove(handler)
    assert any("debug endpoints disabled off-loopback" in line for line in lines), lines


async def test_on_loopback_debug_needs_no_token(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(http=ListenAddress("127.0.0.1", 0), debug_token=Secret(TOKEN))
    service = Service.build(
        settings,
        transport=FakeTransport([FakeWebSocket()]),
        sinks=[MemorySink()],
        handle_signals=False,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        async with httpx.AsyncClient(base_url=str(service.http_url)) as client:
            assert (await client.get("/api/debug/memory")).status_code == 200
        service.status.request_shutdown("test over")


async def test_tracemalloc_top_allocations_only_when_enabled(
    make_settings: Callable[..., Settings],
) -> None:
    import tracemalloc

    for enabled in (True, False):
        ws = FakeWebSocket()
        settings = make_settings(http=ListenAddress("127.0.0.1", 0), debug_tracemalloc=enabled)
        service = Service.build(
            settings, transport=FakeTransport([ws]), sinks=[MemorySink()], handle_signals=False
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert tracemalloc.is_tracing() is enabled
            ws.feed(*['{"type":"hearbeat"}'] * 100)
            await wait_for(
                lambda service=service: (
                    service.processor.counters.received.get("hearbeat", 0) == 100
                ),
                5,
                "the heartbeats",
            )
            async with httpx.AsyncClient(base_url=str(service.http_url)) as client:
                memory = (await client.get("/api/debug/memory")).json()
            service.status.request_shutdown("test over")
        assert not tracemalloc.is_tracing(), "tracing must stop with the API"
        if not enabled:
            assert "tracemalloc" not in memory
            continue
        report = memory["tracemalloc"]
        top = report["top"]
        assert 0 < len(top) <= 20
        sizes = [entry["size_bytes"] for entry in top]
        assert sizes == sorted(sizes, reverse=True)
        for entry in top:
            path, _, line = entry["where"].rpartition(":")
            assert path and line.isdigit() and entry["count"] > 0
            assert "tracemalloc" not in path
        assert report["traced_bytes"] >= sum(sizes) > 0
