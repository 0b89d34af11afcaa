"""scripts/bench_derived.py: one tiny round end to end, both runs measured and compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts.scriptrun import run_script

pytestmark = pytest.mark.slow  # runs a script end to end

FRAMES = 20_000


def test_bench_derived_one_round_measures_both_runs_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench-derived.json"
    done = run_script(
        "bench_derived.py", "--rounds", "1", "--frames", str(FRAMES), "--json", str(out)
    )
    report = json.loads(out.read_text())
    assert report["settings"] == {"bars": "1SEC,1MIN", "book_snapshots": "10@1s"}
    (run,) = report["runs"]
    for which in ("without", "with"):
        assert run[which]["exit_code"] == 0
        assert run[which]["frames_processed"] + run[which]["frames_dropped"] == FRAMES
    ratio = run["with"]["frames_per_s"] / run["without"]["frames_per_s"]
    assert report["ratios"] == [pytest.approx(ratio)]
    assert "ratio (2)/(1)" in done.stdout and "--bars 1SEC,1MIN" in done.stdout
