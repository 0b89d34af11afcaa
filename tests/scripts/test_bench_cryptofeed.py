"""scripts/bench_cryptofeed.py: cryptofeed and coinfeed on the same stream, from a clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts.scriptrun import run_script

# Runs the script end to end; the first run builds the cryptofeed venv from PyPI.
pytestmark = pytest.mark.slow


def test_bench_cryptofeed_measures_both_clients_on_one_stream(tmp_path: Path) -> None:
    out = tmp_path / "vs.json"
    done = run_script(
        "bench_cryptofeed.py", "--rounds", "1", "--frames", "20000", "--json", str(out),
        timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    crypto, coin = result["runs"]["cryptofeed"][0], result["runs"]["coinfeed"][0]
    assert crypto["exit_code"] == 0, "cryptofeed saw every frame (a callback per frame)"
    assert crypto["frames_per_s"] > 0 and coin["frames_per_s"] > 0
    assert result["ratio"] == pytest.approx(coin["frames_per_s"] / crypto["frames_per_s"])
    assert result["stream"]["frames"] == 20_000
    for client in (crypto, coin):
        assert client["peak_rss_bytes"] > 10 * 2**20
    assert "coinfeed / cryptofeed, median per round" in done.stdout
