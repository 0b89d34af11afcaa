"""Helpers for tests that run ``coinfeed`` as a child process and scrape its endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sized
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from coinfeed.simulator import Simulator
from tests.helpers import SYMBOLS

KEY = "sekrit-key-4711"
"""The CoinAPI key child processes get (tests check it appears nowhere)."""
ENDPOINTS = ("/health", "/ready", "/metrics", "/api/debug/memory", f"/api/books/{SYMBOLS[0]}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def answers(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        return [(await client.get(path)).text for path in ENDPOINTS]


def child_environment(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "COINAPI_KEY" and not name.startswith("COINFEED_")
    }
    # No checkpoint: children run side by side, from the repository's directory.
    return {**env, "COINAPI_KEY": KEY, "COINFEED_STATE_DIR": "off", **extra}


async def run_coinfeed(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "coinfeed", "run", "--log-format", "json", *args],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def run_coinfeed_scraped(
    *args: str, env: dict[str, str], seen: list[str]
) -> subprocess.CompletedProcess[bytes]:
    """Run coinfeed with ``--http 127.0.0.1:0``; once its log names the port it bound, scrape
    every endpoint while it runs. No port is guessed in advance, so none can be taken first."""
    command = [sys.executable, "-m", "coinfeed", "run", "--log-format", "json", *args]
    command += ["--http", "127.0.0.1:0"]
    stderr = bytearray()
    stdout = bytearray()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # Started in the nursery: trio kills the process if the test fails or times out.
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None and process.stderr is not None
            output, errors = process.stdout, process.stderr
            found: list[str] = []
            listening = trio.Event()

            async def drain_stdout() -> None:
                async for chunk in output:
                    stdout.extend(chunk)

            async def drain_stderr() -> None:
                # Read to the end, also while scraping: a full pipe would block the child.
                async for chunk in errors:
                    stderr.extend(chunk)
                    if not found and (url := listening_url(stderr)) is not None:
                        found.append(url)
                        listening.set()
                listening.set()  # the child is gone

            nursery.start_soon(drain_stdout)
            nursery.start_soon(drain_stderr)
            await listening.wait()
            assert found, f"coinfeed never listened:\n{stderr.decode()}"
            await trio.sleep(1.0)  # a few connect failures first
            seen.extend(await answers(found[0]))
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, bytes(stdout), bytes(stderr))


def listening_url(stderr: bytes | bytearray) -> str | None:
    complete = bytes(stderr).rpartition(b"\n")[0]  # a line still being written is not parsed
    for line in complete.splitlines():
        if b'"http listening"' in line:
            url: str = json.loads(line)["url"]
            return url
    return None


async def start_coinfeed(args: list[str], log: Path) -> trio.Process:
    """``coinfeed run ARGS`` as a child process, its log appended to ``log``."""
    env = {**os.environ, "COINAPI_KEY": "test-key"}
    stderr = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "coinfeed", "run", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    finally:
        os.close(stderr)


async def stop_gracefully(process: trio.Process, log: Path) -> None:
    """SIGTERM, and exit code 0 within 15 s (the log's tail in the message if not)."""
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        code = await process.wait()
    if code != 0:
        tail = (await trio.Path(log).read_text())[-3000:]
        raise AssertionError(f"coinfeed exited {code}:\n{tail}")


@attrs.frozen
class RestartRun:
    """What :func:`kill_and_restart` saw: the ground truth and the trades stored at the kill."""

    truth: dict[str, str]
    """uuid -> time_exchange of every trade the simulator made for :data:`SYMBOLS`."""
    stored_at_kill: Any
    """What ``stored()`` returned right after the kill."""


async def kill_and_restart(
    sim: Simulator,
    sink: str,
    tmp_path: Path,
    *,
    stored: Callable[[], Sized],
    recovered: Callable[[], bool],
    outage: float,
) -> RestartRun:
    """``coinfeed run`` (trades of :data:`SYMBOLS`, into ``sink``, a state_dir) until ``stored()``
    holds 500 trades and a checkpoint exists, SIGKILL (no shutdown, no final checkpoint),
    ``outage`` seconds of market without it, then the same command again until ``recovered()``
    (its restart gaps closed); the market pauses, the last trades arrive, it stops cleanly."""
    state, log = tmp_path / "state", tmp_path / "coinfeed.log"
    args = [
        "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--symbols", ",".join(SYMBOLS),
        "--types", "trade", "--sink", sink, "--http", "off", "--state-dir", str(state),
        "--recovery-pause", "0.01", "--log-format", "json",
    ]  # fmt: skip
    first = await start_coinfeed(args, log)
    try:
        with trio.fail_after(20):
            while len(stored()) < 500 or not await trio.Path(state / "checkpoint.json").exists():
                await trio.sleep(0.1)
        await trio.sleep(1.5)  # a checkpoint newer than the first trades
    finally:
        first.kill()
        await first.wait()
    stored_at_kill = stored()
    await trio.sleep(outage)  # the market goes on
    second = await start_coinfeed(args, log)
    try:
        with trio.fail_after(30):
            while not recovered():
                await trio.sleep(0.2)
        await trio.sleep(1.5)
        sim.pause_market()
        await trio.sleep(1.5)  # the last live trades reach the sink
        await stop_gracefully(second, log)
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    truth = {t.uuid.lower(): t.time_exchange for s in SYMBOLS for t in sim.truth.trades(s)}
    return RestartRun(truth, stored_at_kill)
