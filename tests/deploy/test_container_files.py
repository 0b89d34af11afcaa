"""The Dockerfile and the Kubernetes manifest, checked as text (no daemon or cluster here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, cast

import httpx
import trio
import yaml

from coinfeed.config import ListenAddress, Settings, load_settings, unknown_environment
from coinfeed.observability.http import is_loopback
from coinfeed.service import Service
from tests.fakes import FakeTransport
from tests.helpers import MemorySink
from tests.servers import free_port

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


async def test_healthcheck_command_passes_against_health_and_fails_without_it() -> None:
    healthcheck = dict(final_stage())["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python" and "http://127.0.0.1:8080/health" in command[-1]

    async def exit_code(port: int) -> int:
        probe = [sys.executable, *command[1:-1], command[-1].replace(":8080/", f":{port}/")]
        done = await trio.run_process(probe, check=False, stderr=subprocess.DEVNULL)
        return done.returncode

    assert await exit_code(free_port()) != 0  # nothing listens there
    # Port 0: the service binds a port of its own (one picked in advance could be taken first).
    settings = Settings(
        symbols=("BITSTAMP_SPOT_BTC_USD",), http=ListenAddress("127.0.0.1", 0), state_dir=None
    )
    service = Service.build(
        settings, transport=FakeTransport(["stall"]), sinks=[MemorySink()], handle_signals=False
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.http_url is not None
        port = httpx.URL(service.http_url).port
        assert port is not None
        assert await exit_code(port) == 0  # alive while not connected: liveness, not readiness
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{service.http_url}/ready")).status_code == 503
        service.status.request_shutdown("test over")


MANIFEST = ROOT / "deploy" / "kubernetes.yaml"


def manifest() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind."""
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    return {doc["kind"]: doc for doc in documents if doc}


def container() -> dict[str, Any]:
    [only] = manifest()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], only)


def manifest_env() -> dict[str, str]:
    """The container's plain environment values (secrets are not values)."""
    return {e["name"]: str(e["value"]) for e in container()["env"] if "value" in e}


def test_manifest_probes_resources_and_security() -> None:
    docs = manifest()
    assert sorted(docs) == ["Deployment", "PersistentVolumeClaim", "Service"]
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}
    assert c["resources"]["limits"]["memory"] == "256Mi"
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert secrets["COINAPI_KEY"] == {"name": "coinfeed", "key": "coinapi-key"}
    # The debug token is optional: without it the debug endpoints stay closed off loopback.
    assert secrets["COINFEED_DEBUG_TOKEN"] == {
        "name": "coinfeed",
        "key": "debug-token",
        "optional": True,
    }
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_manifest_settings_are_valid_and_the_grace_period_covers_shutdown() -> None:
    env = manifest_env()
    assert "COINAPI_KEY" not in env, "the key must come from a Secret"
    assert unknown_environment(env) == {}
    settings = load_settings(cli={}, env={**env, "COINAPI_KEY": "from-the-secret"})
    assert settings.http is not None and not is_loopback(settings.http.host)
    assert settings.http.port == 8080
    assert "COINFEED_SHUTDOWN_TIMEOUT" in env
    pod = manifest()["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= settings.shutdown_timeout + 5


def test_the_restart_checkpoint_lives_on_a_persistent_volume() -> None:
    settings = load_settings(cli={}, env={**manifest_env(), "COINAPI_KEY": "from-the-secret"})
    assert settings.state_dir is not None
    [mount] = [m for m in container()["volumeMounts"] if m["mountPath"] == settings.state_dir]
    pod = manifest()["Deployment"]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = manifest()["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim  # not an emptyDir: rollouts
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
