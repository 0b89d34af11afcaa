"""Helpers for tests that run real server binaries on loopback (Redis, Prometheus)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, *, package: str, needed_for: str) -> str:
    """The path of ``name``, or a test failure saying how to install it (tests never skip)."""
    binary = shutil.which(name)
    if binary is None:
        pytest.fail(
            f"{name} is not installed, so {needed_for} cannot be tested: run scripts/test "
            f"(it installs it) or `apt-get install -y {package}`",
            pytrace=False,
        )
    return binary


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
