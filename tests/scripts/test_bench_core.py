"""scripts/bench_core.py with small settings: every figure is measured, the parsers agree."""

from __future__ import annotations

import json

import pytest

from tests.scripts.scriptrun import run_script

pytestmark = pytest.mark.slow  # runs a script end to end


def test_bench_core_reports_the_core_and_the_three_websocket_parsers() -> None:
    done = run_script("bench_core.py", "--frames", "3000", "--rounds", "1", "--json")
    report = json.loads(done.stdout)
    assert report["frames"] == 3000
    assert report["decode_only_frames_per_s"] > 0
    assert report["full_core_frames_per_s"] > 0
    # Each parser must find every frame of the mix, or the script fails instead of reporting.
    assert set(report["ws_framing_frames_per_s"]) == {"coinfeed", "websockets", "wsproto"}
    assert all(rate > 0 for rate in report["ws_framing_frames_per_s"].values())
