"""A real ``redis-server`` on a free loopback port, for the Redis sink tests.

Tests never skip when it is missing: they fail with how to install it (``scripts/test`` installs
the Debian package ``redis-server``). A server can require a login (an ACL user, or
``requirepass``) and speak TLS only, with a throwaway CA made by the ``openssl`` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import redis

from tests.pki import Pki
from tests.servers import free_port, require_binary, stop_process


def stream(kind: str, symbol_id: str) -> str:
    """The key of the stream of ``kind`` events of ``symbol_id`` (docs/sinks.md)."""
    return f"coinfeed:{kind}:{{{symbol_id}}}"


@attrs.frozen
class TlsFiles:
    """A CA and a server certificate it signed (for 127.0.0.1 and localhost), PEM files."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(
        cls, directory: Path, *, name: str = "test", names: str = "IP:127.0.0.1, DNS:localhost"
    ) -> TlsFiles:
        """A new CA and a server certificate for ``names`` (subjectAltName) in ``directory``,
        valid for two days."""
        pki = Pki.in_directory(directory, "Redis over TLS")
        ca = pki.ca(f"{name}-ca", common_name=f"coinfeed {name} CA")
        server = pki.issue(ca, f"{name}-server", names=names)
        return cls(ca.cert, server.cert, server.key)


@attrs.define(eq=False)
class RedisServer:
    """``start()`` launches redis-server (no persistence) and waits for PING; ``stop()`` ends it.

    With ``user``, that ACL user (all rights, password ``password``) is the only one who can log
    in (the ``default`` user is off); with only ``password``, it is the ``requirepass``. With
    ``tls``, the port speaks TLS only (clients need no certificate).
    """

    directory: Path
    port: int = attrs.field(factory=free_port)
    user: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The sink spec to reach it, credentials included."""
        scheme = "redis" if self.tls is None else "rediss"
        user = quote(self.user or "", safe="")
        password = f":{quote(self.password, safe='')}" if self.password else ""
        userinfo = f"{user}{password}@" if user or password else ""
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        tls: dict[str, Any] = {}
        if self.tls is not None:
            # The CA is checked, not the name: a test may serve a certificate for another name.
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca), "ssl_check_hostname": False}
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=self.user,
            password=self.password,
            socket_timeout=5,
            **tls,
        )

    def start(self) -> None:
        binary = require_binary("redis-server", package="redis-server", needed_for="the Redis sink")
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]  # fmt: skip
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            files = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                     "--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key),
                     "--tls-ca-cert-file", str(files.ca)]  # fmt: skip
        if self.user is not None:
            args += ["--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all",
                     "--user", "default", "off"]  # fmt: skip
        elif self.password is not None:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.process.kill()
                        _, err = self.process.communicate(timeout=5)
                        self.process = None
                        raise RuntimeError(f"redis-server did not start: {err.decode()}") from None
                    time.sleep(0.02)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The server hung (SIGSTOP): connections are accepted, nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout=5)
        if process is not None and process.stderr is not None:
            process.stderr.close()
