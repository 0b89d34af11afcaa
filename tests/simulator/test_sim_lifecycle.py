"""Starting and stopping: nothing left behind in-process; the CLI prints URLs and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import trio
from simclient import BTC, closed_reason, collect, connect, scope

from coinfeed.simulator import SimulatorConfig, open_simulator

ROOT = Path(__file__).resolve().parents[2]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_leaving_open_simulator_closes_clients_and_leaves_no_task_socket_or_thread() -> None:
    tasks0 = trio.lowlevel.current_statistics().tasks_living
    threads0, fds0 = threading.active_count(), _fds()
    outcome: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        async with open_simulator(SimulatorConfig(rate=5_000)) as sim:
            ready = trio.Event()

            async def client() -> None:
                async with connect(sim, scope(["trade"], [BTC])) as ws:
                    await collect(ws, count=5)
                    ready.set()
                    _, outcome["code"] = await closed_reason(ws)

            nursery.start_soon(client)
            await ready.wait()
            async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
                assert (await rest.get(f"/v1/trades/{BTC}/latest")).status_code == 200
            ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in (sim.ws_url, sim.rest_url)]
            start = trio.current_time()
        took = trio.current_time() - start
    assert outcome["code"] == 1001  # a clean close frame ("going away"), not a cut
    assert took < 1.5  # the closing handshakes finish; nothing waits out a timeout
    assert trio.lowlevel.current_statistics().tasks_living == tasks0
    assert threading.active_count() == threads0
    assert _fds() == fds0
    for port in ports:
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def _start_cli(*args: str) -> tuple[trio.Process, dict[str, str]]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "coinfeed.simulator", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    buf = b""
    with trio.fail_after(15):
        while len(urls) < 3:
            chunk = await proc.stdout.receive_some()
            assert chunk, "the simulator exited before printing its URLs"
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                name, _, value = line.decode().partition("=")
                urls[name] = value
    return proc, urls


async def test_cli_prints_its_urls_and_stops_after_duration() -> None:
    proc, urls = await _start_cli("--duration", "1.5", "--rate", "1000", "--keys", "k1,k2")
    assert urls["ws_url"].startswith("ws://127.0.0.1:") and urls["ws_url"].endswith("/v1/")
    async with httpx.AsyncClient(base_url=urls["rest_url"]) as rest:
        ok = await rest.get(f"/v1/quotes/{BTC}/current", headers={"X-CoinAPI-Key": "k2"})
        bad = await rest.get(f"/v1/quotes/{BTC}/current", headers={"X-CoinAPI-Key": "x"})
    assert (ok.status_code, bad.status_code) == (200, 401)
    with trio.fail_after(10):
        assert await proc.wait() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_stops_cleanly_on_signal(signum: int) -> None:
    proc, urls = await _start_cli("--rate", "1000", "--faults", "gaps", "--symbols", "3")
    async with httpx.AsyncClient(base_url=urls["rest_url"]) as rest:
        assert (await rest.get(f"/v1/trades/{BTC}/latest")).status_code == 200
    proc.send_signal(signum)
    with trio.fail_after(10):
        assert await proc.wait() == 0


async def test_cli_rejects_a_bad_setting_with_exit_code_2() -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "coinfeed.simulator", "--rate", "-5"],
        cwd=ROOT,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 2
    assert b"rate" in done.stderr
