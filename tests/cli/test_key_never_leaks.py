"""The API key, and a Redis sink's password, show in no log line, metric, endpoint answer or
error, whatever goes wrong."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
from loguru import logger

from coinfeed.cli import main
from coinfeed.config import ListenAddress, Secret, Settings
from coinfeed.logs import redact
from coinfeed.rest import RestBadRequest, open_rest_client
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.coinfeed_process import (
    ENDPOINTS,
    KEY,
    answers,
    child_environment,
    closed_port,
    run_coinfeed,
    run_coinfeed_scraped,
)
from tests.helpers import SYMBOLS, MemorySink, wait_for


@attrs.define(eq=False)
class FailingSink(MemorySink):
    """Every write fails, like a full disk."""

    def write_batch(self, events: list[Any]) -> None:
        raise OSError(28, "No space left on device")


async def test_key_is_nowhere_in_process_through_failures(
    make_settings: Callable[..., Settings],
) -> None:
    # An unredacted capture: it proves coinfeed never hands the key to the logger at all.
    lines: list[str] = []
    handler = logger.add(
        lines.append, level="TRACE", format="{message} {extra} {exception}", diagnose=True
    )
    seen: list[str] = []
    try:
        # 1. Nothing listens: connect failures and backoff, /ready failing.
        dead = f"127.0.0.1:{closed_port()}"
        settings = make_settings(
            ws_url=f"ws://{dead}/v1/",
            rest_url=f"http://{dead}",
            api_key=Secret(KEY),
            http=ListenAddress("127.0.0.1", 0),
        )
        service = Service.build(settings, sinks=[MemorySink()], handle_signals=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(
                lambda: service.connection.counters.reconnects.get("connect_error", 0) >= 2,
                10,
                "two connect failures",
            )
            seen += await answers(str(service.http_url))
            service.status.request_shutdown("test over")
        assert any("connect failed" in line for line in lines)

        # 2. The simulator accepts only another key: exit 3.
        async with open_simulator(SimulatorConfig(rate=500, keys=frozenset({"other"}))) as sim:
            rejected = Service.build(
                attrs.evolve(settings, ws_url=sim.ws_url, rest_url=sim.rest_url, http=None),
                sinks=[MemorySink()],
                handle_signals=False,
            )
            with trio.fail_after(10):
                assert await rejected.run() == 3
            assert rejected.status.fatal is not None
            seen.append(rejected.status.fatal.message)

        # 3. A sink failing on every write, with the key accepted and data flowing.
        async with open_simulator(SimulatorConfig(rate=500, keys=frozenset({KEY}))) as sim:
            failing = Service.build(
                # A sink that never recovers holds shutdown until shutdown_timeout.
                attrs.evolve(
                    settings, ws_url=sim.ws_url, rest_url=sim.rest_url, shutdown_timeout=0.5
                ),
                sinks=[FailingSink(name="disk")],
                handle_signals=False,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(failing.run)
                await wait_for(lambda: "disk" in failing.status.sink_failures, 5, "sink failing")
                texts = await answers(str(failing.http_url))
                assert "sink disk failing" in texts[1]
                seen += texts
                failing.status.request_shutdown("test over")
    finally:
        logger.remove(handler)
    assert any("sink write failed" in line for line in lines)
    assert len(lines) > 5 and len(seen) > 10
    for text in lines + seen:
        assert KEY not in text, text


async def test_a_sink_error_that_carries_the_key_is_redacted_in_ready(
    make_settings: Callable[..., Settings],
) -> None:
    @attrs.define(eq=False)
    class LeakySink(MemorySink):
        def write_batch(self, events: list[Any]) -> None:
            raise OSError(f"cannot open /data/{KEY}/events.jsonl")

    async with open_simulator(SimulatorConfig(rate=500)) as sim:
        settings = make_settings(
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            api_key=Secret(KEY),
            http=ListenAddress("127.0.0.1", 0),
            shutdown_timeout=0.5,
        )
        service = Service.build(settings, sinks=[LeakySink(name="leaky")], handle_signals=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: "leaky" in service.status.sink_failures, 5, "sink failing")
            async with httpx.AsyncClient(base_url=str(service.http_url)) as client:
                ready = await client.get("/ready")
            service.status.request_shutdown("test over")
    assert ready.status_code == 503
    assert "cannot open /data/***/events.jsonl" in ready.text
    assert KEY not in ready.text


async def test_key_is_nowhere_in_a_real_coinfeed_process() -> None:
    dead = f"127.0.0.1:{closed_port()}"
    env = child_environment()
    common = ("--symbols", SYMBOLS[0], "--log-level", "DEBUG")
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}
    seen: list[str] = []

    async def run(name: str, *args: str, env: dict[str, str] = env) -> None:
        results[name] = await run_coinfeed(*common, *args, env=env)

    async def run_scraped(name: str, *args: str) -> None:
        results[name] = await run_coinfeed_scraped(*common, *args, env=env, seen=seen)

    async with (
        open_simulator(SimulatorConfig(rate=500, keys=frozenset({"other"}))) as sim,
        trio.open_nursery() as nursery,
    ):
        unreachable = ("--ws-url", f"ws://{dead}/v1/", "--rest-url", f"http://{dead}")
        nursery.start_soon(run_scraped, "unreachable", *unreachable, "--duration", "4")
        nursery.start_soon(
            run, "rejected", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--http", "off"
        )
        # The key pasted into a setting: exit 2 naming the setting, value not echoed.
        nursery.start_soon(
            lambda: run("bad_config", env=child_environment(COINFEED_STALE_AFTER=KEY))
        )
        # A sink that cannot be opened: invalid usage, exit 2 naming the setting.
        nursery.start_soon(
            run, "bad_sink", *unreachable, "--http", "off", "--sink", "jsonl:/nonexistent/x.jsonl"
        )

    codes = {name: result.returncode for name, result in results.items()}
    assert codes == {"unreachable": 0, "rejected": 3, "bad_config": 2, "bad_sink": 2}, codes
    stderr = {name: result.stderr.decode() for name, result in results.items()}
    assert "stale_after" in stderr["bad_config"]
    assert "invalid setting 'sinks'" in stderr["bad_sink"] and "Traceback" not in stderr["bad_sink"]
    for name in ("unreachable", "rejected"):
        records = [json.loads(line) for line in stderr[name].splitlines()]
        assert records, name
    assert len(seen) == len(ENDPOINTS)
    for text in [*stderr.values(), *(r.stdout.decode() for r in results.values()), *seen]:
        assert KEY not in text


async def test_a_rest_error_body_is_redacted_before_it_is_cut() -> None:
    # The key sits right where the 200-character cut falls: cut first, a prefix of it survived.
    body = json.dumps({"error": "x" * 190 + KEY + " rejected"}).encode()
    transport = httpx.MockTransport(lambda _request: httpx.Response(400, content=body))
    client = open_rest_client("https://rest.example.com", KEY)
    client._client = httpx.AsyncClient(base_url="https://rest.example.com", transport=transport)
    with pytest.raises(RestBadRequest) as error:
        await client.current_book("BITSTAMP_SPOT_BTC_USD", limit_levels=5)
    await client.aclose()
    assert KEY[:6] not in str(error.value)
    assert "***" in str(error.value)


PASSWORD = "s3cret-4711"
"""A Redis password in a sink URL: kept to connect with, shown nowhere."""


def test_config_never_prints_a_sink_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://alice:{PASSWORD}@redis.internal/0"
    assert main(["config", "--sink", url, "--sink", "jsonl:-"]) == 0
    toml = capsys.readouterr().out
    assert 'sinks = ["redis://alice:***@redis.internal:6379/0", "jsonl:-"]' in toml
    monkeypatch.setenv("COINFEED_SINKS", f"rediss://:{PASSWORD}@redis.internal:6380/1")
    assert main(["config", "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["sinks"] == ["rediss://:***@redis.internal:6380/1"]
    # Refused specs: exit 2 naming the setting, the password not echoed.
    for bad in (f"redis://alice:{PASSWORD}@redis.internal/x", f"{url},"):
        monkeypatch.setenv("COINFEED_SINKS", bad)
        assert main(["config"]) == 2
        err = capsys.readouterr().err
        assert "invalid setting 'sinks'" in err and "alice:***@" in err
        assert PASSWORD not in err
    assert PASSWORD not in toml


def test_log_redaction_masks_any_url_password() -> None:
    cases = {
        f"cannot reach redis://alice:{PASSWORD}@h:6379/0 now":
            "cannot reach redis://alice:***@h:6379/0 now",
        f'{{"sink": "rediss://:{PASSWORD}@h/0"}}': '{"sink": "rediss://:***@h/0"}',
        f"redis://alice:p@{PASSWORD}@h/0": "redis://alice:***@h/0",  # an unescaped '@' in it
        # No password: left alone.
        "https://host:8080/path?mail=a@b.example": "https://host:8080/path?mail=a@b.example",
        "redis://alice@h:6379/0": "redis://alice@h:6379/0",
    }  # fmt: skip
    assert {text: redact(text, ()) for text in cases} == cases


async def test_a_redis_password_is_nowhere_in_a_real_coinfeed_process() -> None:
    # Data flows, the Redis sink fails every write (nothing listens): its name is in the logs,
    # /ready and /metrics, its password nowhere.
    port = closed_port()
    seen: list[str] = []
    async with open_simulator(SimulatorConfig(rate=500, keys=frozenset({KEY}))) as sim:
        result = await run_coinfeed_scraped(
            *("--symbols", SYMBOLS[0], "--log-level", "DEBUG", "--ws-url", sim.ws_url),
            *("--rest-url", sim.rest_url, "--duration", "3", "--shutdown-timeout", "0.5"),
            *("--sink-flush-interval", "0.1", "--state-dir", "off"),
            *("--sink", f"redis://alice:{PASSWORD}@127.0.0.1:{port}/0"),
            env=child_environment(),
            seen=seen,
        )
    name = f"redis://alice:***@127.0.0.1:{port}/0"
    stderr = result.stderr.decode()
    assert "sink write failed" in stderr and name in stderr
    assert f"sink {name} failing" in seen[ENDPOINTS.index("/ready")]
    assert f'coinfeed_sink_errors_total{{sink="{name}"}}' in seen[ENDPOINTS.index("/metrics")]
    for text in (stderr, result.stdout.decode(), *seen):
        assert PASSWORD not in text
