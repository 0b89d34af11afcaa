"""Start-up failures an operator can fix: one line on stderr, exit 2, the setting and the fix named.

Each case runs ``python -m coinfeed`` as the operator would (key set, no checkpoint directory) and
checks what reaches them: exit code 2, at most three lines, the setting, no traceback.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.observability.http import ListenError, serve_api
from coinfeed.service import Service
from coinfeed.simulator.faults import PROFILES
from coinfeed.sinks import SinkSpecError, open_sink
from tests.helpers import KEY, SYM, MemorySink, service_settings

# Nothing in these runs may reach the internet: CoinAPI is a closed port on loopback.
OFFLINE = ["--ws-url", "ws://127.0.0.1:9/v1/", "--rest-url", "http://127.0.0.1:9"]


def coinfeed(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m coinfeed ARGS`` with a key set and no checkpoint, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "coinfeed", *args, "--state-dir", "off"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COINAPI_KEY": KEY, **(env or {})},
        timeout=60,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, at most three stderr lines, no traceback, every needle in stderr."""
    err = result.stderr
    assert result.returncode == 2, err
    assert "Traceback" not in err, err
    assert len(err.splitlines()) <= 3, err
    for needle in needles:
        assert needle in err, err
    assert KEY not in err
    return err


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket already listens on, as a second coinfeed would."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


# -- the HTTP listener -----------------------------------------------------------------------------


def test_run_with_the_http_port_taken_says_so_in_one_line(taken_port: int, tmp_path: Path) -> None:
    result = coinfeed(
        "run", "--symbols", SYM, *OFFLINE, "--http", f"127.0.0.1:{taken_port}",
        "--duration", "5", cwd=tmp_path,
    )  # fmt: skip
    err = assert_one_clear_line(
        result, "invalid setting 'http'", f"127.0.0.1:{taken_port}", "address already in use"
    )
    assert "--http" in err  # the fix: another port, or off


def test_demo_with_the_http_port_taken_says_so_in_one_line(taken_port: int, tmp_path: Path) -> None:
    result = coinfeed("demo", "--http", f"127.0.0.1:{taken_port}", "--duration", "5", cwd=tmp_path)
    assert_one_clear_line(
        result, "invalid setting 'http'", f"127.0.0.1:{taken_port}", "address already in use"
    )


def test_a_port_taken_after_the_check_still_exits_2(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The race the up-front check cannot close: serve_api's own bind fails inside the
    service's nursery; the process still exits 2 with the one line, not a traceback."""
    import coinfeed.main

    monkeypatch.setattr(coinfeed.main, "check_listen_address", lambda host, port: None)
    settings = service_settings(http=ListenAddress("127.0.0.1", taken_port), duration=5.0)
    assert coinfeed.main.run_service(settings) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "invalid setting 'http' (--http / COINFEED_HTTP)" in err
    assert f"cannot listen on 127.0.0.1:{taken_port}: address already in use" in err


async def test_serve_api_raises_a_plain_listen_error_for_a_taken_port(taken_port: int) -> None:
    service = Service.build(service_settings(), sinks=[MemorySink()], handle_signals=False)
    with pytest.raises(ListenError) as caught:  # not an ExceptionGroup: callers can catch it
        await serve_api(service.view, "127.0.0.1", taken_port, trio.Event())
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{taken_port}: address already in use (another process "
        "listens there): pick a free port"
    )
    assert service.view.readiness.listeners == 0


def test_an_unexpected_error_in_the_service_still_prints_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import coinfeed.main

    class Broken:
        async def run(self) -> int:
            raise ExceptionGroup("nursery", [RuntimeError("a bug, not a setting")])

    monkeypatch.setattr(
        coinfeed.main, "Service", types.SimpleNamespace(build=lambda settings: Broken())
    )
    assert coinfeed.main.run_service(service_settings()) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug, not a setting" in err


# -- the demo's fault profile ----------------------------------------------------------------------


def test_demo_with_an_unknown_fault_profile_lists_the_profiles(tmp_path: Path) -> None:
    result = coinfeed("demo", "--faults", "typo", "--http", "off", "--duration", "1", cwd=tmp_path)
    assert_one_clear_line(result, "--faults", "'typo'", *PROFILES)
    assert not (tmp_path / "coinfeed-demo.sqlite").exists()  # refused before anything started


# -- the SQLite sink's directory -------------------------------------------------------------------


def test_a_sqlite_sink_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    result = coinfeed(
        "run", "--symbols", SYM, *OFFLINE, "--http", "off",
        "--sink", f"sqlite:{missing}/events.sqlite", cwd=tmp_path,
    )  # fmt: skip
    assert_one_clear_line(
        result, "invalid setting 'sinks'", f"directory '{missing}' does not exist", "create it"
    )


def test_a_sqlite_sink_under_a_regular_file_says_it_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(SinkSpecError, match=r"'.*/notes\.txt' is a file, not a directory"):
        open_sink(f"sqlite:{tmp_path}/notes.txt/events.sqlite")


def test_a_sqlite_sink_in_a_read_only_directory_says_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI runs as root, for whom a 0o500 directory is writable: simulate the refusal instead.
    import coinfeed.sinks.sqlite as module

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    real_access = os.access
    monkeypatch.setattr(module.sqlite3, "connect", refuse)
    monkeypatch.setattr(
        module.os,
        "access",
        lambda path, mode: (
            real_access(path, mode) and not (Path(path) == tmp_path and mode & os.W_OK)
        ),
    )
    with pytest.raises(SinkSpecError) as caught:
        open_sink(f"sqlite:{tmp_path}/events.sqlite")
    message = str(caught.value)
    assert f"directory '{tmp_path}' is not writable" in message
    assert "unable to open database file" not in message


# -- stale_after -----------------------------------------------------------------------------------


def test_stale_after_below_one_second_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = coinfeed(
        "run", "--symbols", SYM, *OFFLINE, "--http", "off", "--stale-after", "0.5",
        "--duration", "2", cwd=tmp_path,
    )  # fmt: skip
    assert_one_clear_line(
        result, "invalid setting 'stale_after'", "--stale-after", "at least 1", "heartbeat"
    )


def test_stale_after_from_the_environment_names_its_source(tmp_path: Path) -> None:
    result = coinfeed("config", cwd=tmp_path, env={"COINFEED_STALE_AFTER": "0.2"})
    assert_one_clear_line(result, "invalid setting 'stale_after'", "(from the environment)")


@pytest.mark.parametrize(("value", "code"), [("1", 0), ("0.999", 2), ("10", 0)])
def test_stale_after_of_one_second_is_the_minimum(
    value: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from coinfeed.cli import main

    assert main(["config", "--stale-after", value]) == code


def test_settings_built_in_process_may_still_use_a_faster_watchdog() -> None:
    # The floor protects operators from a quiet feed reconnecting; in-process tests drive the
    # watchdog with fakes that never go quiet, and build Settings directly.
    assert Settings(stale_after=0.5).stale_after == 0.5
