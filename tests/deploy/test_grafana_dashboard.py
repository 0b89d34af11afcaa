"""The Grafana dashboard is valid JSON and queries only metrics that a running coinfeed exports;
so do the alerting rules."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import ListenAddress, Settings
from coinfeed.simulator import SimulatorConfig
from tests.deploy.promserver import ALERTS, DASHBOARD
from tests.helpers import SYMBOLS, running, wait_for

METRIC_NAME = re.compile(r"\b((?:coinfeed|process)_[a-z0-9_]+)\b")
PANELS_SHOWN = {
    "coinfeed_messages_received_total", "coinfeed_frames_dropped_total",
    "coinfeed_gaps_detected_total", "coinfeed_recoveries_total",
    "coinfeed_recovery_seconds_bucket", "coinfeed_reconnects_total", "coinfeed_queue_depth",
    "coinfeed_queue_capacity", "process_resident_memory_bytes", "coinfeed_memory_limit_bytes",
    "coinfeed_ready",
}  # fmt: skip


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


async def exported_sample_names(make_settings: Callable[..., Settings]) -> set[str]:
    """Sample names of /metrics after a gap, its recovery and a reconnect (labelled families
    have no sample until their first event)."""
    async with (
        running(
            make_settings, SimulatorConfig(rate=3000, seed=4), http=ListenAddress("127.0.0.1", 0)
        ) as (sim, service, _),
        httpx.AsyncClient(base_url=str(service.http_url), timeout=5) as client,
    ):
        counters = service.processor.counters
        # Skipping a stream's first frames is no gap: let every trade stream start first.
        await wait_for(lambda: counters.received.get("trade", 0) > 100, 10, "trades")
        sim.faults.skip_next("trade", SYMBOLS[0], 2)
        await wait_for(lambda: bool(counters.recoveries), 10, "a recovered gap")
        sim.send_reconnect_all(within_seconds=1)
        await wait_for(lambda: bool(service.connection.counters.reconnects), 10, "a reconnect")
        await wait_for(lambda: service.status.connected, 10, "connected again")
        text = (await client.get("/metrics")).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_dashboard_is_valid_json_with_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "coinfeed" and dashboard["uid"] == "coinfeed"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = {m for e in dashboard_expressions(dashboard) for m in METRIC_NAME.findall(e)}
    assert queried >= PANELS_SHOWN, PANELS_SHOWN - queried


async def test_every_metric_the_dashboard_and_alerts_query_is_exported(
    make_settings: Callable[..., Settings],
) -> None:
    exported = await exported_sample_names(make_settings)
    dashboard = json.loads(DASHBOARD.read_text())
    for source, exprs in (
        (DASHBOARD.name, dashboard_expressions(dashboard)),
        (ALERTS.name, alert_expressions()),
    ):
        queried = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
        assert queried, source
        missing = queried - exported
        assert not missing, f"{source} queries metrics that /metrics does not export: {missing}"
