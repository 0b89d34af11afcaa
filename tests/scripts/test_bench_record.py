"""scripts/bench_record.py: one tiny round end to end, every figure printed and in its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts.scriptrun import run_script

pytestmark = pytest.mark.slow  # runs a script end to end

FRAMES = 20_000


def test_bench_record_one_round_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench-record.json"
    done = run_script(
        "bench_record.py", "--rounds", "1", "--frames", str(FRAMES), "--json", str(out)
    )
    report = json.loads(out.read_text())

    for name in (
        "without_record_frames_per_s",
        "with_record_frames_per_s",
        "record_ratio",
        "replay_frames_per_s",
        "replay_ratio",
        "replay_startup_seconds",
        "bytes_per_frame",
        "compression_ratio",
    ):
        value = report[name]
        assert isinstance(value, float) and value > 0, (name, value)
    assert report["record_ratios"] == [report["record_ratio"]]
    assert report["replay_ratios"] == [report["replay_ratio"]]
    assert report["compression_ratio"] > 1  # JSON frames compress
    assert report["notes"] == []  # no failed run, unclean exit or missing frame

    (run,) = report["runs"]
    assert run["without_record"]["exit_code"] == run["with_record"]["exit_code"] == 0
    assert run["with_record"]["frames_processed"] == FRAMES
    recording = run["recording"]
    assert recording["frames"] == FRAMES  # every frame the --record run took is on disk
    assert recording["raw_bytes"] > recording["bytes"] > 0
    assert recording["problems"] == []
    assert run["replay"]["frames"] == FRAMES
    assert run["replay"]["exit_code"] == 0
    assert 0 < run["replay"]["seconds"] < run["replay"]["wall_seconds"]
    assert report["stream"]["frames"] == FRAMES

    for label in (
        "(1) coinfeed run frames/s, no --record",
        "(2) coinfeed run frames/s, --record DIR",
        "ratio (2)/(1)",
        "(3) coinfeed replay --speed max frames/s",
        "ratio (3)/(1)",
        "bytes on disk per frame",
        "compression ratio (raw/disk)",
        "'replaying run' log line to its exit",
    ):
        assert label in done.stdout, label

    def row(label: str) -> str:
        (line,) = [line for line in done.stdout.splitlines() if line.strip().startswith(label)]
        return line

    assert f"{report['with_record_frames_per_s']:,.0f}" in row("(2) coinfeed run")
    assert f"{report['replay_frames_per_s']:,.0f}" in row("(3) coinfeed replay")
    assert f"{report['bytes_per_frame']:.1f}" in row("(4) recording: bytes on disk per frame")
    assert f"{report['compression_ratio']:.2f}" in row("compression ratio (raw/disk)")
