"""``coinfeed_ready`` agrees with /ready, and the memory figures include the cgroup limit."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio
from prometheus_client import generate_latest

from coinfeed.config import ListenAddress, Settings
from coinfeed.simulator import SimulatorConfig
from tests.helpers import running, samples


async def scrape_ready(client: httpx.AsyncClient) -> float | None:
    return samples((await client.get("/metrics")).text).get(("coinfeed_ready", ()))


async def test_ready_gauge_follows_the_ready_endpoint(
    make_settings: Callable[..., Settings],
) -> None:
    async with (
        running(
            make_settings,
            SimulatorConfig(rate=500, seed=8),
            stale_after=1.5,
            http=ListenAddress("127.0.0.1", 0),
        ) as (sim, service, _),
        httpx.AsyncClient(base_url=str(service.http_url), timeout=5) as client,
    ):
        with trio.fail_after(5):
            while (await client.get("/ready")).status_code != 200:
                await trio.sleep(0.05)
        assert await scrape_ready(client) == 1
        sim.stall(4)
        with trio.fail_after(4):
            while (await client.get("/ready")).status_code == 200:
                await trio.sleep(0.05)
        assert await scrape_ready(client) == 0
        with trio.fail_after(10):
            while (await client.get("/ready")).status_code != 200:
                await trio.sleep(0.05)
        assert await scrape_ready(client) == 1
    # The HTTP API has stopped: nothing answers readiness, so the gauge is no longer exported.
    assert service.readiness.listeners == 0
    assert "coinfeed_ready" not in generate_latest(service.metrics.registry).decode()


async def test_memory_endpoint_reports_the_limit_and_the_share_of_it(
    make_settings: Callable[..., Settings],
) -> None:
    async with (
        running(
            make_settings, SimulatorConfig(rate=100, seed=9), http=ListenAddress("127.0.0.1", 0)
        ) as (_sim, service, _),
        httpx.AsyncClient(base_url=str(service.http_url), timeout=5) as client,
    ):
        report = (await client.get("/api/debug/memory")).json()
        exported = samples((await client.get("/metrics")).text)
    limit = report["memory_limit_bytes"]
    if limit is None:
        assert report["rss_percent_of_limit"] is None
        assert exported[("coinfeed_memory_limit_bytes", ())] == 0
    else:
        assert report["rss_percent_of_limit"] == round(100 * report["rss_bytes"] / limit, 1)
        assert exported[("coinfeed_memory_limit_bytes", ())] == limit
