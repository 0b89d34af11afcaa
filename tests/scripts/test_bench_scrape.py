"""scripts/bench_scrape.py with a few scrapes: both sizes measured, every figure there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a script end to end (two services with HTTP listeners)

ROOT = Path(__file__).resolve().parents[2]


def test_bench_scrape_measures_the_loop_time_of_a_scrape_at_10_and_1000_symbols() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_scrape.py"), "--scrapes", "5", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = json.loads(done.stdout)
    assert (small["symbols"], large["symbols"]) == (10, 1000)
    # 50 exchanges of latency label sets make the body ten times larger.
    assert large["body_bytes"] > 5 * small["body_bytes"]
    for row in (small, large):
        assert row["loop_ms_per_scrape"] > 0 and row["baseline_render_on_loop_ms"] > 0
        assert 0 < row["longest_step_ms"] <= row["loop_ms_per_scrape"] * 5
