"""Graceful shutdown: SIGTERM under load in a real process, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from coinfeed.config import TRANSPORTS, ListenAddress, Settings
from coinfeed.observability.process import live_task_count, open_fd_count
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.simprocess import simulator_process

SYMBOLS = "BITSTAMP_SPOT_BTC_USD,COINBASE_SPOT_ETH_USD,BITSTAMP_SPOT_BTC_USDT"

# Both tests run once per WebSocket library; ids end in [trio-websocket] or [websockets].
pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


def coinfeed_threads() -> set[str]:
    # trio keeps idle worker threads in a process-wide cache ("Trio thread N"); they run no
    # coinfeed code once a to_thread call has returned, so they are not counted.
    return {t.name for t in threading.enumerate() if not t.name.startswith("Trio thread")}


async def test_sigterm_under_load_exits_0_in_time_with_complete_sink(
    tmp_path: Path, transport: str
) -> None:
    events_file = tmp_path / "events.jsonl"
    async with open_simulator(SimulatorConfig(rate=8000, seed=11, faults="gaps")) as sim:
        env = {**os.environ, "COINAPI_KEY": "test-key", "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable, "-m", "coinfeed", "run",
            "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--symbols", SYMBOLS,
            "--sink", f"jsonl:{events_file}", "--http", "off", "--shutdown-timeout", "5",
            "--log-format", "json", "--transport", transport,
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            with trio.fail_after(20):
                while not events_file.exists() or events_file.stat().st_size < 200_000:
                    await trio.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            started = trio.current_time()
            with trio.fail_after(10):
                code = await process.wait()
            elapsed = trio.current_time() - started
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.stderr is not None
        stderr = b""
        with trio.move_on_after(2):
            while chunk := await process.stderr.receive_some(65536):
                stderr += chunk
    assert code == 0, stderr.decode()[-3000:]
    assert elapsed < 5
    records = [json.loads(line) for line in stderr.decode().splitlines()]
    assert any(
        r["message"] == "shutting down" and r["reason"] == "SIGTERM received" for r in records
    )
    assert "stopped cleanly" in [r["message"] for r in records]
    raw = events_file.read_bytes()
    assert raw.endswith(b"\n"), "the sink ended with a partial line"
    events = [json.loads(line) for line in raw.splitlines()]
    uuids = [e["uuid"] for e in events if e["kind"] == "trade"]
    assert uuids and len(uuids) == len(set(uuids))
    assert "test-key" not in stderr.decode()


async def test_nothing_of_coinfeed_outlives_the_root_nursery(
    tmp_path: Path, make_settings: Callable[..., Settings], transport: str
) -> None:
    # The simulator runs in its own process so every task, fd and thread here is coinfeed's.
    async with simulator_process("--rate", "3000", "--seed", "12", "--faults", "gaps") as urls:
        tasks, fds, threads = live_task_count(), open_fd_count(), coinfeed_threads()
        settings = make_settings(
            ws_url=urls["ws_url"],
            rest_url=urls["rest_url"],
            symbols=tuple(SYMBOLS.split(",")),
            sinks=(f"jsonl:{tmp_path / 'out.jsonl'}",),
            http=ListenAddress("127.0.0.1", 0),
            recovery_pause=0.01,
            transport=transport,
        )
        service = Service.build(settings, handle_signals=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert service.http_url is not None
            async with httpx.AsyncClient(base_url=service.http_url) as client:
                assert (await client.get("/health")).status_code == 200
            await trio.sleep(1.5)
            assert live_task_count() > tasks + 5
            assert service.recovery.counters.rest_calls > 0, "the gaps profile should need REST"
            service.status.request_shutdown("test over")
        assert live_task_count() == tasks
        assert open_fd_count() == fds
        assert coinfeed_threads() == threads
    assert (tmp_path / "out.jsonl").read_bytes().endswith(b"\n")
