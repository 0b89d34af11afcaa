"""What a newcomer sees first: the demo's defaults, scripts/demo's install, `config` and `shards`.

The demo must look healthy out of the box (books synced, /ready ready), its help must say what
it actually uses, ``scripts/demo`` must install only what running needs, ``config`` must show
what this replica subscribes and ``shards`` must warn about shards that get nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from coinfeed.cli import DEMO_FAULTS, main
from coinfeed.config import Settings
from coinfeed.core.shard import assign, symbols_of_shard
from coinfeed.simulator.faults import PROFILES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in coinfeed.main recording the options ``demo`` runs with."""
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("coinfeed.main")

    def run_demo(settings: Settings, **options: Any) -> int:
        calls.append(options)
        return 0

    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coinfeed.main", module)
    return calls


def demo_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["demo", "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping


# -- the demo's defaults ---------------------------------------------------------------------------


def test_the_demo_default_profile_keeps_books_synced(demo_calls: list[dict[str, Any]]) -> None:
    assert main(["demo"]) == 0
    [options] = demo_calls
    profile = PROFILES[options["faults"]]
    # No sequence fault (skip, duplicate, reorder, malformed) and no dropped connection: every
    # book stays synced and /ready says ready, which is what a newcomer should see first.
    assert not profile.ws_frame_faults
    assert profile.disconnect_per_second == profile.reconnect_per_second == 0
    assert profile.stall_per_second == profile.error_per_second == 0


def test_demo_help_names_the_default_profile_and_lists_them_all(
    demo_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    text = demo_help(capsys)
    shown = re.search(r"--faults PROFILE .*?\(default: ([\w-]+)", text)
    assert shown is not None, text
    assert main(["demo"]) == 0
    assert demo_calls[0]["faults"] == shown.group(1)
    for name in PROFILES:
        assert f" {name} " in text


def test_the_demo_knows_every_simulator_profile_without_importing_the_simulator() -> None:
    assert set(DEMO_FAULTS) == set(PROFILES)
    probe = (
        "import sys, coinfeed.cli as c; c.build_parser(); "
        "print('coinfeed.simulator' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_demo_seed_help_tells_the_seed_that_is_used(
    demo_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    text = demo_help(capsys)
    shown = re.search(r"--seed INT .*?\(default: ([^)]*)\)", text)
    assert shown is not None, text
    assert main(["demo"]) == 0
    assert str(demo_calls[0]["seed"]) == shown.group(1)


def test_the_readme_says_what_the_demo_default_is_and_shows_chaos_next() -> None:
    readme = (REPO / "README.md").read_text()
    demo_section = readme.split("## Run the demo", 1)[1].split("\n## ", 1)[0]
    assert "`--faults none`" in demo_section and "default" in demo_section
    assert "--faults chaos" in demo_section
    for name in PROFILES:
        assert f"`{name}`" in demo_section or f"`--faults {name}`" in demo_section, name


# -- scripts/demo installs only what running needs -------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of scripts/demo (and what it sources) whose .venv is a stub recording each call."""
    (tmp_path / "scripts").mkdir()
    for name in ("demo", "bootstrap"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'coinfeed'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "coinfeed"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "$(dirname "$0")/../calls"\n')
        stub.chmod(0o755)
    return tmp_path


def run_demo_script(checkout: Path, *args: str) -> list[str]:
    """Run the copied scripts/demo; return the stub calls it made (one line each)."""
    calls = checkout / ".venv" / "calls"
    calls.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "demo"), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON": sys.executable},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def test_scripts_demo_installs_coinfeed_without_the_dev_extra(checkout: Path) -> None:
    calls = run_demo_script(checkout, "--duration", "30")
    installs = [call for call in calls if " pip install " in f" {call} " and "-e" in call]
    assert len(installs) == 1, calls
    assert "[dev]" not in installs[0] and installs[0].endswith(" -e .")
    assert calls[-1] == "coinfeed demo --duration 30"
    # scripts/test's own stamp stays unset, so it still adds the dev extra on its first run.
    assert not (checkout / ".venv" / ".coinfeed-installed").exists()


def test_scripts_demo_installs_once_and_not_over_the_test_install(checkout: Path) -> None:
    run_demo_script(checkout)
    assert run_demo_script(checkout) == ["coinfeed demo"]

    (checkout / ".venv" / ".coinfeed-demo-installed").unlink()
    (checkout / ".venv" / ".coinfeed-installed").touch()  # scripts/test installed coinfeed[dev]
    assert run_demo_script(checkout) == ["coinfeed demo"]


# -- config and shards -----------------------------------------------------------------------------

SYMBOLS = ["BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_ETH_USD", "KRAKEN_SPOT_XRP_USD", "S4", "S5"]


def test_config_with_a_shard_shows_what_this_replica_subscribes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mine = symbols_of_shard(SYMBOLS, 0, 2)
    assert 0 < len(mine) < len(SYMBOLS)  # the example splits the symbols
    assert main(["config", "--symbols", ",".join(SYMBOLS), "--shard", "0/2"]) == 0
    toml = capsys.readouterr().out
    # The setting itself stays whole, so the output is still accepted back with the same meaning.
    assert "symbols = [" + ", ".join(json.dumps(s) for s in SYMBOLS) + "]" in toml
    shown = [line for line in toml.splitlines() if line.startswith("# shard 0/2 subscribes")]
    assert shown == [f"# shard 0/2 subscribes {len(mine)} of the {len(SYMBOLS)} symbols: "
                     + ", ".join(mine)]  # fmt: skip

    assert main(["config", "--symbols", ",".join(SYMBOLS), "--shard", "0/2", "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["symbols"] == SYMBOLS and values["subscribed_symbols"] == list(mine)


def test_config_without_a_shard_subscribes_every_symbol(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--symbols", "A,B", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subscribed_symbols"] == ["A", "B"]


def test_config_with_a_shard_that_gets_nothing_exits_2_like_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = next(i for i, members in enumerate(assign(SYMBOLS[:2], 3)) if not members)
    assert main(["config", "--symbols", ",".join(SYMBOLS[:2]), "--shard", f"{empty}/3"]) == 2
    assert "invalid setting 'shard'" in capsys.readouterr().err


def test_shards_warns_when_there_are_more_shards_than_symbols(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["shards", "--symbols", "A,B", "--count", "4"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4
    [warning] = err.splitlines()
    assert warning.startswith("coinfeed: warning: 4 shards for 2 symbols")


def test_shards_says_nothing_when_every_shard_gets_symbols(
    capsys: pytest.CaptureFixture[str],
) -> None:
    count = 2
    assert all(assign(SYMBOLS, count))
    assert main(["shards", "--symbols", ",".join(SYMBOLS), "--count", str(count)]) == 0
    assert capsys.readouterr().err == ""
