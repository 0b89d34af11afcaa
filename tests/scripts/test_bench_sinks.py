"""scripts/bench_sinks.py with tiny sizes: every sink measured, Parquet's files counted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.scripts.scriptrun import run_script

pytestmark = pytest.mark.slow  # runs a script end to end (and a redis-server)

EVENTS = 5_000  # the mix has a gap event every 5,000th
FILE_SINKS = ("jsonl", "sqlite", "parquet")
REDIS_SINKS = ("redis", "redis+cluster", "redis+cluster+wait")  # one server, a cluster, with WAIT


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(
        "bench_sinks.py", "--events", str(EVENTS), "--rounds", "1", "--batch", "500", *args
    )


def test_bench_sinks_reports_parquet_next_to_jsonl_and_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "bench-sinks.json"
    done = run_bench("--json", str(out))
    report = json.loads(out.read_text())

    assert report["events_per_round"] == EVENTS
    assert sum(report["mix"].values()) == EVENTS
    assert all(report["mix"][kind] > 0 for kind in report["mix"]), report["mix"]
    assert set(report["events_per_s"]) == {"jsonl:/dev/null", *FILE_SINKS, *REDIS_SINKS}
    assert all(rate > 0 for rate in report["events_per_s"].values()), report["events_per_s"]
    assert report["rounds_run"] == dict.fromkeys(report["events_per_s"], 1)
    assert set(report["ratio_to_redis"]) == {"redis+cluster", "redis+cluster+wait"}
    assert all(ratio > 0 for ratio in report["ratio_to_redis"].values())
    sizes = report["bytes_per_event"]
    assert all(sizes[kind] is None for kind in ("jsonl:/dev/null", *REDIS_SINKS))  # not on disk
    assert all(sizes[kind] > 0 for kind in FILE_SINKS), sizes
    # zstd columns against JSON text of the same events: far smaller, or the files are wrong.
    assert sizes["parquet"] < sizes["jsonl"] / 2, sizes

    def row(kind: str) -> str:
        (line,) = [line for line in done.stdout.splitlines() if line.split()[:1] == [kind]]
        return line

    for kind in FILE_SINKS:
        assert f"{report['events_per_s'][kind]:,}" in row(kind)
        assert f"{sizes[kind]:,.1f}" in row(kind)
    for kind in REDIS_SINKS:
        assert row(kind).split()[3] == "-"


def test_bench_sinks_json_alone_prints_only_the_json_object() -> None:
    report = json.loads(run_bench("--json").stdout)
    assert report["events_per_s"]["parquet"] > 0
    assert report["bytes_per_event"]["parquet"] > 0


def test_bench_sinks_stream_rounds_run_coinfeed_into_each_file_sink(tmp_path: Path) -> None:
    out = tmp_path / "bench-sinks.json"
    run_bench("--stream-rounds", "1", "--stream-frames", "20000", "--stream-sinks",
              "parquet,jsonl", "--json", str(out))  # fmt: skip
    stream = json.loads(out.read_text())["stream"]
    assert stream["frames"] == 20_000 and stream["errors"] == []
    assert set(stream["frames_per_s"]) == {"jsonl:/dev/null", "parquet", "jsonl"}
    assert all(rate > 0 for rate in stream["frames_per_s"].values()), stream
    assert all(len(drops) == 1 for drops in stream["frames_dropped"].values()), stream


def test_bench_sinks_refuses_an_unknown_stream_sink() -> None:
    done = run_script("bench_sinks.py", "--stream-sinks", "csv", timeout=60, expect=2)
    assert "--stream-sinks takes some of jsonl, sqlite, parquet" in done.stderr
