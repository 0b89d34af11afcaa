"""A real ``redis-server`` on a free loopback port, for the Redis sink tests.

Tests never skip when it is missing: they fail with how to install it (``scripts/test`` installs
the Debian package ``redis-server``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import attrs
import redis

from tests.servers import free_port, require_binary, stop_process


@attrs.define(eq=False)
class RedisServer:
    """``start()`` launches redis-server (no persistence) and waits for PING; ``stop()`` ends it."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        binary = require_binary("redis-server", package="redis-server", needed_for="the Redis sink")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        _, err = self.process.communicate(timeout=5)
                        self.process = None
                        raise RuntimeError(f"redis-server did not start: {err.decode()}") from None
                    time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout=5)
        if process is not None and process.stderr is not None:
            process.stderr.close()
