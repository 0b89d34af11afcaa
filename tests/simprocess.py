"""Run the simulator as its own process, for tests that must see only coinfeed in-process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def simulator_process(*args: str) -> AsyncIterator[dict[str, str]]:
    """Start ``coinfeed simulate ARGS``; yield its printed URLs; stop it with SIGTERM."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "coinfeed", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        text = b""
        with trio.fail_after(15):
            while text.count(b"\n") < 3:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the simulator exited before printing its URLs")
                text += chunk
        yield dict(line.split("=", 1) for line in text.decode().splitlines()[:3])
    finally:
        process.terminate()
        with trio.move_on_after(5, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
