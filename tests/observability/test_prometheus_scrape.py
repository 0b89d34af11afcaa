"""A real Prometheus server scrapes a running coinfeed and answers queries over its series."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.simulator import SimulatorConfig
from tests.deploy.promserver import DASHBOARD, PrometheusServer
from tests.helpers import SlowSink, running


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables filled in."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    return [re.sub(r"\$__rate_interval", "1m", expr).replace("$instance", ".*") for expr in exprs]


async def test_prometheus_scrapes_coinfeed_and_sees_drops_under_overload(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    sink = SlowSink(delay=0.02)
    async with (
        running(
            make_settings,
            SimulatorConfig(rate=6000, seed=21),
            sink=sink,
            http=ListenAddress("127.0.0.1", 0),
            queue_capacity=20,
            sink_queue_capacity=50,
        ) as (_sim, service, _),
        httpx.AsyncClient(timeout=5) as client,
    ):
        prometheus = PrometheusServer(tmp_path, urlsplit(str(service.http_url)).netloc)
        prometheus.start()
        try:
            await prometheus.wait_ready(client)
            dropped: list[dict[str, Any]] = []
            with trio.move_on_after(20):
                while not dropped:
                    await trio.sleep(0.25)
                    dropped = await prometheus.query(
                        client, 'coinfeed_frames_dropped_total{job="coinfeed"} > 0'
                    )
            assert dropped, f"no scrape saw a drop:\n{prometheus.log()}"
            assert 0 < float(dropped[0]["value"][1]) <= service.queue.dropped_total
            sink.delay = 0

            async def value(expr: str) -> float:
                result = await prometheus.query(client, expr)
                assert len(result) == 1, (expr, result)
                return float(result[0]["value"][1])

            assert await value('up{job="coinfeed"}') == 1
            assert await value("coinfeed_connected") == 1
            assert await value('coinfeed_messages_received_total{type="trade"}') > 0
            assert await value('coinfeed_queue_capacity{queue="raw"}') == 20
            assert await value("process_resident_memory_bytes") > 0
            assert await value("coinfeed_memory_limit_bytes") >= 0
            assert await value("coinfeed_ready") in (0, 1)
            # Prometheus loaded the alerting rules and every dashboard query is valid PromQL.
            rules = (await client.get(f"{prometheus.url}/api/v1/rules")).json()["data"]
            loaded = [r for g in rules["groups"] for r in g["rules"]]
            assert len(loaded) >= 10
            assert all(r["health"] != "err" for r in loaded), loaded
            for expr in dashboard_queries():
                await prometheus.query(client, expr)
        finally:
            prometheus.stop()
