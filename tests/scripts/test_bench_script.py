"""scripts/bench.py with its smallest settings: every figure is measured and written as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smallest_settings_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--frames", "20000",
         "--rates", "1000", "--latency-seconds", "1", "--fault-rounds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"throughput", "latency", "reconnect", "recovery", "targets", "machine"} <= set(report)
    throughput = report["throughput"]
    assert throughput["bare_frames_per_s"] > 1000
    assert throughput["end_to_end_frames_per_s"] > 1000
    assert 0 < throughput["ratio"] < 5
    assert throughput["end_to_end_runs"][0]["exit_code"] == 0
    (latency,) = report["latency"]
    assert latency["rate"] == 1000
    assert latency["to_sink_handoff"]["samples"] > 50
    assert latency["to_sink_handoff"]["p99_ms"] is not None
    assert report["reconnect"]["samples"] == 2
    assert report["recovery"]["samples"] == 2
    assert report["recovery"]["outcomes"] == {"recovered": 2}
    assert "target" in done.stdout and "ratio (1)/(2)" in done.stdout
