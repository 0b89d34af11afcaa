"""A real Prometheus server on a free loopback port, and the promtool binary, for these tests.

Tests never skip when they are missing: they fail saying how to install them (``scripts/test``
installs the Debian package ``prometheus``, which provides both).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.servers import free_port, require_binary, stop_process

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "coinfeed.json"
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"


def require_prometheus_binary(name: str) -> str:
    """The path of ``name`` (from the Debian ``prometheus`` package), or a failure saying so."""
    return require_binary(name, package="prometheus", needed_for="the Prometheus rules and scrape")


@attrs.define(eq=False)
class PrometheusServer:
    """``start()`` launches prometheus scraping ``target`` every second; ``stop()`` ends it."""

    directory: Path
    target: str
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = require_prometheus_binary("prometheus")
        config = self.directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\n"
            "scrape_configs:\n  - job_name: coinfeed\n"
            f"    static_configs:\n      - targets: ['{self.target}']\n"
        )
        args = [binary, f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]  # fmt: skip
        with (self.directory / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)

    async def wait_ready(self, client: httpx.AsyncClient, limit: float = 15) -> None:
        with trio.move_on_after(limit):
            while True:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if (await client.get(f"{self.url}/-/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)
        raise AssertionError(f"prometheus did not become ready:\n{self.log()}")

    async def query(self, client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` through ``/api/v1/query`` (fails on a query error)."""
        answer = (await client.get(f"{self.url}/api/v1/query", params={"query": expr})).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (Prometheus shuts down cleanly on it), SIGKILL after 10 s."""
        process, self.process = self.process, None
        stop_process(process, timeout=10)
