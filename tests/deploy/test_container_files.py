"""The Dockerfile and the Kubernetes manifest, checked as text (no daemon or cluster here)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, cast

import attrs
import httpx
import trio
import yaml

from coinfeed.config import ListenAddress, Settings, load_settings, unknown_environment
from coinfeed.observability.http import is_loopback
from coinfeed.service import Service
from coinfeed.sinks.open import parse_sink_spec
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


def writable_mounts() -> dict[PurePosixPath, dict[str, Any]]:
    """The container's writable mounts: mount path -> the pod volume behind it."""
    pod = manifest()["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {
        PurePosixPath(m["mountPath"]): volumes[m["name"]]
        for m in container()["volumeMounts"]
        if not m.get("readOnly", False)
    }


def mount_holding(path: str, mounts: Iterable[PurePosixPath]) -> PurePosixPath | None:
    """The mount point under which the absolute ``path`` lies (the deepest one), if any."""
    target = PurePosixPath(path)
    if not target.is_absolute():
        return None  # relative to WORKDIR /tmp: not on a volume of its own
    holding = [m for m in mounts if target == m or m in target.parents]
    return max(holding, key=lambda m: len(m.parts), default=None)


def file_sink_paths(sinks: Iterable[str]) -> list[str]:
    """The paths of the file sinks (``jsonl:PATH``, ``sqlite:PATH``) among ``sinks``."""
    specs = [parse_sink_spec(sink) for sink in sinks]
    return [spec.target for spec in specs if spec.kind in ("jsonl", "sqlite")]


def test_manifest_names_a_sink_and_it_lives_on_the_persistent_volume() -> None:
    env = manifest_env()
    # Unset, the sink is the default jsonl:- : market data into the container log.
    assert "COINFEED_SINKS" in env, "the manifest must choose where the market data goes"
    settings = load_settings(cli={}, env={**env, "COINAPI_KEY": "from-the-secret"})
    assert settings.sinks and "jsonl:-" not in settings.sinks, settings.sinks
    mounts = writable_mounts()
    claim = manifest()["PersistentVolumeClaim"]
    files = file_sink_paths(settings.sinks)  # none for a Redis sink
    for path in files:
        mount = mount_holding(path, mounts)
        assert mount is not None, f"{path} is on no mounted volume (the root is read-only)"
        volume = mounts[mount]
        assert (
            volume.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
        ), f"{path}: on {volume}, lost with the pod"
        assert settings.state_dir is not None
        assert mount_holding(settings.state_dir, mounts) == mount, "one volume for both"
    if files:  # the claim holds market data, not only a few KB of checkpoint
        storage = claim["spec"]["resources"]["requests"]["storage"]
        size, unit = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", storage).groups()  # type: ignore[union-attr]
        assert int(size) * {"Mi": 1, "Gi": 1024, "Ti": 1024**2}[unit] >= 1024, storage


DOCKERFILE_DATA_DIR = "/var/lib/coinfeed"


def section(markdown: str, heading: str) -> str:
    """The text of the section ``heading`` (any level) up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(heading)} *\n", markdown, flags=re.MULTILINE)
    assert match, heading
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}} ", markdown[match.end() :], flags=re.MULTILINE)
    return markdown[match.end() : match.end() + end.start() if end else None]


@attrs.frozen
class DockerRun:
    env: dict[str, str | None]
    volumes: dict[str, str]
    """Mount destination -> source (a named volume or a host path)."""
    image: str
    args: list[str]


def docker_run_examples(markdown: str) -> list[DockerRun]:
    """The ``docker run`` commands of the fenced blocks in ``markdown`` (``\\`` continuations
    joined)."""
    with_value = {"-e", "--env", "-v", "--volume", "-p", "--publish", "--name", "--tmpfs",
                  "-u", "--user", "--entrypoint", "--network"}  # fmt: skip
    runs = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            words = shlex.split(line)
            if words[:2] != ["docker", "run"]:
                continue
            env: dict[str, str | None] = {}
            volumes: dict[str, str] = {}
            rest = iter(words[2:])
            for word in rest:
                if not word.startswith("-"):
                    runs.append(DockerRun(env, volumes, word, list(rest)))
                    break
                name, equals, value = word.partition("=")
                if name in with_value and not equals:
                    value = next(rest)
                if name in ("-e", "--env"):
                    key, has_value, setting = value.partition("=")
                    env[key] = setting if has_value else None
                elif name in ("-v", "--volume"):
                    source, destination = value.split(":")[:2]
                    volumes[destination] = source
    return runs


def test_image_has_a_data_directory_the_coinfeed_user_owns() -> None:
    # A new named volume takes the owner of the image's directory it is mounted on: without
    # this directory it is root's and coinfeed (user 10001) cannot write its state or sink there.
    runs = [args for word, args in final_stage() if word == "RUN" and DOCKERFILE_DATA_DIR in args]
    assert runs, f"the image does not create {DOCKERFILE_DATA_DIR}"
    assert any("10001" in args for args in runs), runs


def test_docker_run_example_writes_state_and_sink_to_a_volume() -> None:
    container_section = section((ROOT / "docs" / "operations.md").read_text(), "Container")
    examples = docker_run_examples(container_section)
    readme = docker_run_examples((ROOT / "README.md").read_text())
    assert examples, "docs/operations.md 'Container' has no docker run example"
    for run in examples + readme:
        assert run.image == "coinfeed" and run.args in ([], ["run"]), run
        assert "COINAPI_KEY" in run.env and run.env["COINAPI_KEY"] is None, "key from the host env"
        env = {k: v for k, v in run.env.items() if v is not None}
        assert unknown_environment(env) == {}
        assert "COINFEED_SINKS" in env, "the default jsonl:- writes market data to the log"
        settings = load_settings(cli={}, env={**env, "COINAPI_KEY": "from-the-host"})
        assert "jsonl:-" not in settings.sinks
        assert settings.state_dir is not None
        mounts = [PurePosixPath(destination) for destination in run.volumes]
        for path in [settings.state_dir, *file_sink_paths(settings.sinks)]:
            mount = mount_holding(path, mounts)
            assert mount == PurePosixPath(DOCKERFILE_DATA_DIR), f"{path} is not on the volume"
