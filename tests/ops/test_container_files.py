"""The Dockerfile and the Kubernetes manifest, checked as text (no daemon or cluster here)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import httpx
import trio

from coinfeed.api import is_loopback
from coinfeed.config import ListenAddress, Settings, load_settings, unknown_environment
from coinfeed.service import Service
from tests.service.conftest import MemorySink
from tests.service.fakes import FakeTransport

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    pairs = instructions()
    last_from = max(i for i, (word, _) in enumerate(pairs) if word == "FROM")
    return pairs[last_from:]


def test_image_runs_coinfeed_as_pid_1_as_a_non_root_user() -> None:
    stage = dict(final_stage())
    assert stage["FROM"] == "python:3.11-slim"
    assert json.loads(stage["ENTRYPOINT"]) == ["coinfeed"]  # exec form: SIGTERM reaches it
    assert json.loads(stage["CMD"]) == ["run"]
    user = stage["USER"].split(":")[0]
    assert user not in ("", "root", "0")
    assert stage["EXPOSE"] == "8080"
    assert "COINFEED_HTTP=0.0.0.0:8080" in stage["ENV"].split()
    assert not is_loopback("0.0.0.0"), "so /api/debug/* needs the token in the container"
    assert "COINAPI_KEY" not in (ROOT / "Dockerfile").read_text().replace("-e COINAPI_KEY", "")


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for pattern in (".venv", ".git", ".pytest_cache", "tests"):
        assert pattern in ignored
    copied = [
        source
        for word, args in instructions()
        if word == "COPY" and "--from" not in args
        for source in args.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch(source, pattern) for pattern in ignored), source


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthcheck_command_passes_against_health_and_fails_without_it() -> None:
    healthcheck = dict(final_stage())["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python" and "http://127.0.0.1:8080/health" in command[-1]
    port = free_port()
    probe = [sys.executable, *command[1:-1], command[-1].replace(":8080/", f":{port}/")]

    async def exit_code() -> int:
        done = await trio.run_process(probe, check=False, stderr=subprocess.DEVNULL)
        return done.returncode

    assert await exit_code() != 0  # nothing listens yet
    settings = Settings(symbols=("BITSTAMP_SPOT_BTC_USD",), http=ListenAddress("127.0.0.1", port))
    service = Service.build(
        settings, transport=FakeTransport(["stall"]), sinks=[MemorySink()], handle_signals=False
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert await exit_code() == 0  # alive even while not connected (liveness, not readiness)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{service.http_url}/ready")).status_code == 503
        service.status.request_shutdown("test over")


MANIFEST = ROOT / "deploy" / "kubernetes.yaml"


def manifest_env() -> dict[str, str]:
    """Plain ``- name: X`` / ``value: "Y"`` pairs of the container's environment."""
    pairs = re.findall(r'- name: (\S+)\n\s+value: "?([^"\n]*)"?', MANIFEST.read_text())
    return dict(pairs)


def block(text: str, key: str) -> str:
    """The lines indented under ``key:`` (a tiny YAML reader, enough for this manifest)."""
    match = re.search(rf"^( *){re.escape(key)}:\n((?:\1  .*\n)+)", text, re.MULTILINE)
    assert match, f"{key} not found"
    return match.group(2)


def test_manifest_probes_resources_and_security() -> None:
    text = MANIFEST.read_text()
    assert re.findall(r"^kind: (\S+)", text, re.MULTILINE) == ["Deployment", "Service"]
    assert "path: /health" in block(text, "livenessProbe")
    assert "path: /ready" in block(text, "readinessProbe")
    resources = block(text, "resources")
    assert re.search(r"requests:\n\s+cpu: 250m\n\s+memory: 128Mi", resources)
    assert re.search(r"limits:\n\s+memory: 256Mi", resources)
    assert "runAsNonRoot: true" in text
    assert "readOnlyRootFilesystem: true" in text
    assert "allowPrivilegeEscalation: false" in text
    for variable, secret_key in (
        ("COINAPI_KEY", "coinapi-key"),
        ("COINFEED_DEBUG_TOKEN", "debug-token"),
    ):
        assert re.search(
            rf"- name: {variable}\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: coinfeed\n"
            rf"\s+key: {secret_key}",
            text,
        ), variable


def test_manifest_settings_are_valid_and_the_grace_period_covers_shutdown() -> None:
    env = manifest_env()
    assert "COINAPI_KEY" not in env, "the key must come from a Secret"
    assert unknown_environment(env) == {}
    settings = load_settings(cli={}, env={**env, "COINAPI_KEY": "from-the-secret"})
    assert settings.http is not None and not is_loopback(settings.http.host)
    assert settings.http.port == 8080
    assert "COINFEED_SHUTDOWN_TIMEOUT" in env
    grace = re.search(r"terminationGracePeriodSeconds: (\d+)", MANIFEST.read_text())
    assert grace is not None and int(grace[1]) >= settings.shutdown_timeout + 5
