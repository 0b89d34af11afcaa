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
from prometheus_client.samples import Sample

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
    "coinfeed_ready", "coinfeed_latency_seconds_bucket", "coinfeed_latency_seconds_count",
}  # fmt: skip
GRID_COLUMNS = 24


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level panels and those inside a collapsed row."""
    return [p for panel in dashboard["panels"] for p in (panel, *panel.get("panels", ()))]


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for panel in all_panels(dashboard) for t in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


async def exported_samples(make_settings: Callable[..., Settings]) -> list[Sample]:
    """The samples of /metrics after a gap, its recovery and a reconnect, with frames of the
    subscribed symbols measured for latency (labelled families have no sample until their first
    event; ``coinfeed_latency_seconds`` none until a frame with ``time_coinapi`` is sampled)."""
    async with (
        running(
            make_settings, SimulatorConfig(rate=3000, seed=4), http=ListenAddress("127.0.0.1", 0)
        ) as (sim, service, _),
        httpx.AsyncClient(base_url=str(service.http_url), timeout=5) as client,
    ):
        counters = service.processor.counters
        # Skipping a stream's first frames is no gap: let every trade stream start first.
        await wait_for(lambda: counters.received.get("trade", 0) > 100, 10, "trades")
        latency = service.processor.latency
        assert latency is not None
        stages = {"exchange_to_coinapi", "coinapi_to_coinfeed"}
        await wait_for(
            lambda: {stage for stage, _ in latency.histograms} == stages, 10, "latency samples"
        )
        sim.faults.skip_next("trade", SYMBOLS[0], 2)
        await wait_for(lambda: bool(counters.recoveries), 10, "a recovered gap")
        sim.send_reconnect_all(within_seconds=1)
        await wait_for(lambda: bool(service.connection.counters.reconnects), 10, "a reconnect")
        await wait_for(lambda: service.status.connected, 10, "connected again")
        text = (await client.get("/metrics")).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_dashboard_is_valid_json_with_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "coinfeed" and dashboard["uid"] == "coinfeed"
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = {m for e in dashboard_expressions(dashboard) for m in METRIC_NAME.findall(e)}
    assert queried >= PANELS_SHOWN, PANELS_SHOWN - queried


def test_dashboard_panels_tile_the_grid_and_the_latency_row_follows_the_others() -> None:
    """No panel overlaps another or leaves the 24 columns; the Latency row spans the width below
    every other panel, and its panels chart the two stages and the clock skew in seconds and
    shares."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    rows = [i for i, panel in enumerate(panels) if panel["type"] == "row"]
    assert [panels[i]["title"] for i in rows] == ["Latency"]
    row = panels[rows[0]]
    assert row["gridPos"]["x"] == 0 and row["gridPos"]["w"] == GRID_COLUMNS
    above, below = panels[: rows[0]], panels[rows[0] + 1 :]
    assert max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in above) == row["gridPos"]["y"]
    assert min(p["gridPos"]["y"] for p in below) == row["gridPos"]["y"] + 1
    exprs = {
        target["expr"]: panel["fieldConfig"]["defaults"]["unit"]
        for panel in below
        for target in panel["targets"]
    }
    for stage in ("coinapi_to_coinfeed", "exchange_to_coinapi"):
        for q in ("0.5", "0.99"):
            expr = (
                f"histogram_quantile({q}, sum by (le, exchange) (rate(coinfeed_latency_seconds_"
                f'bucket{{instance=~"$instance", stage="{stage}"}}[$__rate_interval])))'
            )
            assert exprs.get(expr) == "s", expr
    skew = [e for e in exprs if 'le="0.0"' in e]
    assert len(skew) == 1 and exprs[skew[0]] == "percentunit"
    for panel in below:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all('instance=~"$instance"' in t["expr"] for t in panel["targets"])


async def test_every_metric_the_dashboard_and_alerts_query_is_exported(
    make_settings: Callable[..., Settings],
) -> None:
    samples = await exported_samples(make_settings)
    exported = {sample.name for sample in samples}
    # The clock skew panel divides the le="0.0" bucket (negative values) by the count.
    bounds = {
        s.labels["le"]
        for s in samples
        if s.name == "coinfeed_latency_seconds_bucket"
        and s.labels["stage"] == "coinapi_to_coinfeed"
    }
    assert "0.0" in bounds, bounds
    dashboard = json.loads(DASHBOARD.read_text())
    for source, exprs in (
        (DASHBOARD.name, dashboard_expressions(dashboard)),
        (ALERTS.name, alert_expressions()),
    ):
        queried = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
        assert queried, source
        missing = queried - exported
        assert not missing, f"{source} queries metrics that /metrics does not export: {missing}"
