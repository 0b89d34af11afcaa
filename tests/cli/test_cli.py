"""The coinfeed command line: exit codes, help, `config` output and wiring to the service."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from coinfeed import __version__
from coinfeed.cli import main
from coinfeed.config import SETTINGS, Settings
from tests.helpers import KEY


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Settings, dict[str, Any]]]:
    """A stand-in coinfeed.main that records how the CLI called it."""
    calls: list[tuple[str, Settings, dict[str, Any]]] = []
    module = types.ModuleType("coinfeed.main")

    def run_service(settings: Settings) -> int:
        calls.append(("run_service", settings, {}))
        return 3

    def run_demo(settings: Settings, **options: Any) -> int:
        calls.append(("run_demo", settings, options))
        return 0

    module.run_service = run_service  # type: ignore[attr-defined]
    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coinfeed.main", module)
    return calls


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"coinfeed {__version__}"


def test_no_command_is_a_usage_error() -> None:
    assert main([]) == 2


@pytest.mark.parametrize("command", ["run", "demo", "config"])
def test_help_lists_every_setting_with_default_and_env_name(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for setting in SETTINGS:
        assert f"env {setting.env}" in text
        assert setting.flag in text
    assert "(default: 500; env COINFEED_QUEUE_CAPACITY)" in text
    assert "--sink SPEC" in text and "COINFEED_CONFIG" in text and "COINAPI_KEY" in text


def test_demo_help_shows_the_demo_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 5; env COINFEED_STATS_INTERVAL)" in text
    assert "--rate FRAMES_PER_S" in text and "--faults PROFILE" in text


def test_run_calls_the_service_and_returns_its_exit_code(
    service: list[tuple[str, Settings, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COINAPI_KEY", KEY)
    monkeypatch.setenv("COINFEED_TYPES", "trade")
    argv = ["run", "--symbols", "A,B$", "--sink", "jsonl:-", "--sink", "sqlite:x.db,jsonl:y"]
    assert main([*argv, "--http", "off", "--duration", "5"]) == 3
    [(name, settings, _)] = service
    assert name == "run_service"
    assert settings.symbols == ("A", "B")
    assert settings.types == ("trade",)
    assert settings.sinks == ("jsonl:-", "sqlite:x.db", "jsonl:y")
    assert (settings.http_enabled, settings.duration) == (False, 5.0)
    assert settings.api_key is not None and settings.api_key.reveal() == KEY


def test_demo_needs_no_key_or_symbols(
    service: list[tuple[str, Settings, dict[str, Any]]],
) -> None:
    assert main(["demo", "--rate", "500", "--seed", "7"]) == 0
    [(name, settings, options)] = service
    assert name == "run_demo"
    assert options == {"rate": 500.0, "faults": "none", "seed": 7}
    assert (settings.api_key, settings.symbols, settings.stats_interval) == (None, (), 5.0)


@pytest.mark.parametrize("rate", ["0", "-1", "fast", "inf"])
def test_demo_rejects_a_bad_rate(rate: str, service: list[object]) -> None:
    assert main(["demo", "--rate", rate]) == 2
    assert service == []


def test_run_without_a_key_exits_2(
    service: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--symbols", "A"]) == 2
    assert "COINAPI_KEY is not set (or set api_key_file)" in capsys.readouterr().err
    assert service == []


def test_invalid_setting_exits_2_naming_it(
    service: list[object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COINAPI_KEY", KEY)
    assert main(["run", "--symbols", "A", "--queue-capacity", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coinfeed: error: invalid setting 'queue_capacity'")
    assert "--queue-capacity / COINFEED_QUEUE_CAPACITY" in err
    assert service == []


def test_api_key_flag_is_refused_without_echoing_it(
    service: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--symbols", "A", "--api-key", KEY]) == 2
    err = capsys.readouterr().err
    assert "never read from the command line" in err and "COINAPI_KEY" in err
    assert KEY not in err
    assert service == []


def test_usage_errors_do_not_echo_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COINAPI_KEY", KEY)
    assert main(["run", "--apikey", KEY]) == 2
    assert main(["run", "--api-key-fil", KEY]) == 2  # no prefix matching onto --api-key-file
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and KEY not in err


def test_unexpected_failure_exits_1_with_a_redacted_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("coinfeed.main")

    def run_service(settings: Settings) -> int:
        raise RuntimeError(f"handshake failed for wss://ws.coinapi.io/v1/?apikey={KEY}")

    module.run_service = run_service  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coinfeed.main", module)
    monkeypatch.setenv("COINAPI_KEY", KEY)
    assert main(["run", "--symbols", "A"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: handshake failed for wss://ws.coinapi.io/v1/?apikey=***" in err
    assert KEY not in err


def test_the_debug_token_is_redacted_like_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "debug-token-8421"
    module = types.ModuleType("coinfeed.main")

    def run_service(settings: Settings) -> int:
        raise RuntimeError(f"bad header Authorization: Bearer {token}")

    module.run_service = run_service  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coinfeed.main", module)
    monkeypatch.setenv("COINAPI_KEY", KEY)
    monkeypatch.setenv("COINFEED_DEBUG_TOKEN", token)
    assert main(["run", "--symbols", "A"]) == 1
    err = capsys.readouterr().err
    assert "Bearer ***" in err and token not in err


def test_config_prints_toml_that_config_accepts_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("COINAPI_KEY", KEY)
    monkeypatch.setenv("COINFEED_QUEUE_CAPACITY", "64")
    argv = ["config", "--symbols", "A,B", "--sink", "jsonl:-", "--sink", "sqlite:events.db"]
    assert main([*argv, "--http", "[::1]:9000", "--apikey-in-hello", "yes"]) == 0
    toml = capsys.readouterr().out
    assert 'symbols = ["A", "B"]' in toml
    assert 'sinks = ["jsonl:-", "sqlite:events.db"]' in toml
    assert "queue_capacity = 64" in toml and "apikey_in_hello = true" in toml
    assert '# api_key = "***" (from COINAPI_KEY)' in toml and KEY not in toml

    path = tmp_path / "effective.toml"
    path.write_text(toml)
    monkeypatch.delenv("COINFEED_QUEUE_CAPACITY")
    assert main(["config", "--config", str(path), "--json"]) == 0
    reloaded = json.loads(capsys.readouterr().out)
    assert reloaded["symbols"] == ["A", "B"]
    assert reloaded["queue_capacity"] == 64
    assert reloaded["http"] == "[::1]:9000"
    assert reloaded["config_file"] == str(path)


def test_config_json_shows_null_key_when_unset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["api_key"] is None
    assert values["sinks"] == ["jsonl:-"] and values["http"] == "127.0.0.1:8080"


def test_unknown_environment_variable_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COINFEED_QUEUE_CAPACITI", "5")
    assert main(["config"]) == 0
    err = capsys.readouterr().err
    assert "unknown variable ignored" in err
    assert "variable=COINFEED_QUEUE_CAPACITI did_you_mean=COINFEED_QUEUE_CAPACITY" in err


def test_simulate_without_the_simulator_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "coinfeed.simulator.cli", None)  # import fails
    assert main(["simulate", "--port", "0"]) == 1
    assert "simulator (coinfeed.simulator.cli) is not available" in capsys.readouterr().err


def test_simulate_runs_the_simulator_and_prints_its_urls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--duration", "0.3", "--rate", "200", "--seed", "3"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["ws_url"].startswith("ws://127.0.0.1:") and lines["ws_url"].endswith("/v1/")
    assert lines["rest_url"].startswith("http://127.0.0.1:")
    assert main(["simulate", "--bogus"]) == 2


def test_python_dash_m_coinfeed_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coinfeed", "run", "--queue-capacity", "0"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COINAPI_KEY": KEY},
        check=False,
    )
    assert result.returncode == 2
    assert "invalid setting 'queue_capacity'" in result.stderr


@pytest.mark.parametrize("flag", ["--ws-url", "--rest-url"])
def test_config_never_prints_a_key_given_in_a_url(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = "wss" if flag == "--ws-url" else "https"
    url = f"{scheme}://ws.example.com/v1/?x=1&apikey={KEY}&y=2"
    assert main(["config", flag, url]) == 0
    out = capsys.readouterr().out
    assert KEY not in out
    assert f"{scheme}://ws.example.com/v1/?x=1&apikey=***&y=2" in out
