"""A sink that stops moving is reported, and shutdown still ends on time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.helpers import SYMBOLS

SHUTDOWN_TIMEOUT = 3.0


def log_records(log: Path) -> list[dict[str, object]]:
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


async def test_a_pipe_nobody_reads_is_a_stalled_sink_and_sigterm_still_ends_in_time(
    tmp_path: Path,
) -> None:
    log = tmp_path / "coinfeed.log"
    async with open_simulator(SimulatorConfig(rate=3000, seed=5)) as sim:
        command = [
            sys.executable, "-m", "coinfeed", "run", "--ws-url", sim.ws_url,
            "--rest-url", sim.rest_url, "--symbols", ",".join(SYMBOLS), "--sink", "jsonl:-",
            "--http", "127.0.0.1:0", "--log-format", "json", "--state-dir", "off",
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT), "--sink-stall-after", "2",
        ]  # fmt: skip
        stderr = os.open(log, os.O_WRONLY | os.O_CREAT)
        try:
            # stdout is a pipe this test never reads: after 64 KiB every write blocks.
            process = await trio.lowlevel.open_process(
                command,
                env={**os.environ, "COINAPI_KEY": "test-key"},
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        finally:
            os.close(stderr)
        try:
            with trio.fail_after(20):
                while not (urls := [r["url"] for r in log_records(log) if "url" in r]):
                    await trio.sleep(0.1)
            reasons: list[str] = []
            async with httpx.AsyncClient(base_url=str(urls[0])) as client:
                with trio.fail_after(20):
                    while not any(r.startswith("sink jsonl:- stalled") for r in reasons):
                        await trio.sleep(0.2)
                        answer = await client.get("/ready")
                        reasons = answer.json().get("reasons", [])
                assert answer.status_code == 503
            process.send_signal(signal.SIGTERM)
            started = trio.current_time()
            with trio.fail_after(SHUTDOWN_TIMEOUT + 5):
                code = await process.wait()
            elapsed = trio.current_time() - started
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()
    assert code == 1
    assert elapsed < SHUTDOWN_TIMEOUT + 1.5, f"took {elapsed:.1f} s after SIGTERM"
    records = log_records(log)
    [unwritten] = [r for r in records if str(r["message"]).startswith("sink did not finish")]
    assert unwritten["sink"] == "jsonl:-" and int(str(unwritten["events"])) > 0
    assert any(r["message"].startswith("sink stalled") for r in records)  # type: ignore[union-attr]
