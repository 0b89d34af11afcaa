"""scripts/bench_scrape.py with a few scrapes: both sizes measured, every figure there."""

from __future__ import annotations

import json

import pytest

from tests.scripts.scriptrun import run_script

pytestmark = pytest.mark.slow  # runs a script end to end (two services with HTTP listeners)


def test_bench_scrape_measures_the_loop_time_of_a_scrape_at_10_and_1000_symbols() -> None:
    done = run_script("bench_scrape.py", "--scrapes", "5", "--json")
    small, large = json.loads(done.stdout)
    assert (small["symbols"], large["symbols"]) == (10, 1000)
    # 50 exchanges of latency label sets make the body ten times larger.
    assert large["body_bytes"] > 5 * small["body_bytes"]
    for row in (small, large):
        assert row["loop_ms_per_scrape"] > 0 and row["baseline_render_on_loop_ms"] > 0
        assert row["wire_bytes"] * 4 < row["body_bytes"]  # asked for gzip, as Prometheus does
        assert 0 < row["longest_step_ms"] <= row["loop_ms_per_scrape"] * 5
