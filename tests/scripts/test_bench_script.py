"""scripts/bench.py: its smallest settings end to end, and its stream and peer-bench plumbing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts.scriptrun import ROOT, load_script, run_script

pytestmark = pytest.mark.slow  # runs a script end to end

# The peer benchmark is an optional extra, not in this repository: used when one is named.
PEER_DIR = Path(os.environ.get("COINFEED_PEER_BENCH") or "/nonexistent")
HAVE_PEER_GENERATOR = (PEER_DIR / "gen_frames.py").is_file() and (PEER_DIR / "common.py").is_file()
TRANSPORTS = ("direct", "websockets", "trio-websocket")


def load_bench() -> ModuleType:
    return load_script("bench.py", "bench_script")


def test_bench_smallest_settings_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_script(
        "bench.py", "--quick", "--frames", "20000", "--rates", "1000", "--latency-seconds", "1",
        "--fault-rounds", "2", "--json", str(out), timeout=90,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert {"throughput", "latency", "reconnect", "recovery", "targets", "machine"} <= set(report)
    throughput = report["throughput"]

    stream = throughput["stream"]
    assert stream["source"] == ("peer-bench" if HAVE_PEER_GENERATOR else "built-in")
    assert stream["frames"] == 20000
    assert len(stream["sha256"]) == 64
    assert len(stream["symbols"]) == 10
    assert not stream["same_as_peer_reference"]  # 20,000 frames is not the 200,000 reference

    # Every transport's bare loop ran on the stream in the round.
    assert set(throughput["bare_loops"]) == set(TRANSPORTS)
    for name, loop in throughput["bare_loops"].items():
        assert loop["complete"] == "1/1", (name, loop["runs"])
        assert loop["frames_per_s"] > 1000, name
        assert "no decoding" in loop["measures"]
        assert 0 < loop["cpu_share"] <= 1.5

    # coinfeed run on its default transport (direct), compared with the direct bare loop.
    assert report["transport"] == throughput["transport"] == "direct"
    (e2e,) = throughput["end_to_end_runs"]
    assert e2e["exit_code"] == 0
    assert e2e["frames_processed"] + e2e["frames_dropped"] >= 20000
    assert e2e["frames_processed"] > 0
    assert throughput["end_to_end_frames_per_s"] > 1000
    assert throughput["bare_frames_per_s"] == throughput["bare_loops"]["direct"]["frames_per_s"]
    assert throughput["bare_runs"] == throughput["bare_loops"]["direct"]["runs"]
    assert 0 < throughput["ratio"] < 5
    assert throughput["ratios"] == [throughput["ratio"]]

    # The table: one row per client, no cryptofeed without --peer.
    assert throughput["peer"] == {"ran": False, "ok": False, "reason": "not requested (--peer)"}
    rows = {row["client"]: row for row in throughput["table"]}
    assert len(rows) == 4
    for row in rows.values():
        assert row["us_per_frame"] == pytest.approx(1e6 / row["frames_per_s"])
        assert row["vs_cryptofeed"] is None
        assert row["min"] <= row["frames_per_s"] <= row["max"]
    assert rows["bare direct loop (counts messages only)"]["vs_bare_direct"] == 1.0

    machine = report["machine"]
    assert machine["logical_cores"] == os.cpu_count()
    assert machine["memory_total_gib"] > 0
    assert machine["cpu_model"]
    assert machine["python_build"]["version"] and machine["os"]["kernel"]
    assert len(machine["load_avg_start"]) == len(machine["load_avg_end"]) == 3
    assert {"trio", "websockets", "trio-websocket", "msgspec"} <= set(machine["versions"])
    assert all(machine["versions"][name] for name in ("trio", "websockets", "msgspec"))

    (latency,) = report["latency"]
    assert latency["rate"] == 1000
    assert latency["to_sink_handoff"]["samples"] > 50
    assert latency["to_sink_handoff"]["p99_ms"] is not None
    assert report["reconnect"]["samples"] == 2
    assert report["recovery"]["samples"] == 2
    assert report["recovery"]["outcomes"] == {"recovered": 2}
    assert "target" in done.stdout and "ratio (1)/(2)" in done.stdout
    assert "bare trio-websocket loop (counts messages only)" in done.stdout
    assert "run with --peer" in done.stdout


def test_stream_falls_back_to_the_built_in_one(tmp_path: Path) -> None:
    bench = load_bench()
    stream = bench.prepare_stream(300, tmp_path, tmp_path / "no-peer-bench", "auto")
    assert stream["source"] == "built-in"
    assert "not found" in stream["origin"]
    assert stream["frames"] == 300
    assert len(stream["symbols"]) == 10
    data = Path(stream["file"]).read_bytes()
    assert data.count(b"\n") == 300
    assert stream["sha256"] == hashlib.sha256(data).hexdigest()


STAND_IN_GENERATOR = """
import argparse, json, sys
sys.path.insert(0, {scripts!r})
from harness import generate_frames
parser = argparse.ArgumentParser()
parser.add_argument("--out")
parser.add_argument("-n", type=int)
parser.add_argument("--seed", type=int)
args = parser.parse_args()
data = b"".join(frame + b"\\n" for frame in generate_frames(args.n, seed=args.seed))
open(args.out, "wb").write(data)
meta = {{"seed": args.seed, "n": args.n, "bytes": len(data)}}
json.dump(meta, open(args.out + ".meta.json", "w"))
"""


def peer_generator_dir(tmp_path: Path) -> Path:
    """The peer benchmark when one is named; else a stand-in with the same interface
    (gen_frames.py --out -n --seed, a meta file, compare.py's N_FRAMES and SEED)."""
    if HAVE_PEER_GENERATOR:
        return PEER_DIR
    stand_in = tmp_path / "peer-bench-stand-in"
    stand_in.mkdir()
    (stand_in / "gen_frames.py").write_text(
        STAND_IN_GENERATOR.format(scripts=str(ROOT / "scripts"))
    )
    (stand_in / "common.py").write_text("")
    (stand_in / "compare.py").write_text("N_FRAMES = 200_000\nSEED = 20261128\n")
    return stand_in


def test_peer_stream_is_generated_or_taken_from_a_longer_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench()
    peer_dir = peer_generator_dir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "empty"))
    fresh = bench.prepare_stream(300, tmp_path, peer_dir, "auto")
    assert fresh["source"] == "peer-bench"
    assert fresh["origin"].startswith("generated")
    assert fresh["generator"] == "gen_frames.py -n 300 --seed 20261128"
    assert len(fresh["symbols"]) == 10

    # A cache of 500 frames (the generator's first frames do not depend on -n) serves 300.
    cache = tmp_path / "cached" / "peer-bench"
    cache.mkdir(parents=True)
    subprocess.run(
        [sys.executable, str(peer_dir / "gen_frames.py"), "--out", str(cache / "frames.jsonl"),
         "-n", "500", "--seed", "20261128"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("TMPDIR", str(tmp_path / "cached"))
    reused = bench.prepare_stream(300, tmp_path, peer_dir, "auto")
    assert reused["origin"].startswith("reused")
    assert reused["sha256"] == fresh["sha256"]
    assert reused["bytes"] == fresh["bytes"]


def fake_compare(peer_dir: Path, body: str) -> None:
    peer_dir.mkdir(parents=True, exist_ok=True)
    script = peer_dir / "compare.sh"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(0o755)


RESULTS = {
    "stream": {"n": 200000, "sha256": "4e40d1af962a4a68"},
    "same_as_reference_stream": True,
    "versions": {"cryptofeed": "2.4.1", "python": "3.11.7", "base": "/usr/bin/python3.11"},
    "product": {"python": "3.11.7", "python_base": "/usr/bin/python3.11", "git": "abc"},
    "summary": {
        "cryptofeed_fps": {"median": 100000.0, "min": 90000.0, "max": 110000.0, "n": 2},
        "product_fps": {"median": 150000.0, "min": 140000.0, "max": 160000.0, "n": 2},
        "ratio_product_to_cryptofeed": {"median": 1.5, "min": 1.4, "max": 1.6, "n": 2},
    },
    "failed_runs": 0,
    "records": [
        {"run": "cryptofeed", "round": 1, "fps": 90000.0, "max_rss_mb": 60.0, "notes": []},
        {"run": "product", "round": 1, "fps": 140000.0, "max_rss_mb": 50.0, "notes": []},
        {"run": "product", "round": 2, "fps": 160000.0, "max_rss_mb": 55.0, "notes": []},
        {"run": "cryptofeed", "round": 2, "fps": 110000.0, "max_rss_mb": 64.0, "notes": []},
    ],
}


def test_peer_results_are_read_from_the_json_compare_sh_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # no other run's results JSON can be taken
    results = tmp_path / "compare-x.json"
    results.write_text(json.dumps(RESULTS))
    fake_compare(tmp_path / "peer", f'echo "round lines"\necho "results: {results}"\n')
    peer = bench.run_peer(2, tmp_path / "peer", "direct", False, timeout=30)
    assert peer["ok"] and peer["exit_code"] == 0 and "error" not in peer
    assert peer["command"][1:3] == ["--rounds", "2"]
    assert peer["results_json"] == str(results)
    assert peer["cryptofeed_frames_per_s"]["median"] == 100000.0
    assert peer["coinfeed_frames_per_s"]["median"] == 150000.0
    assert peer["ratio_per_round"]["median"] == 1.5
    assert peer["peak_rss_mb"] == {"cryptofeed": 64.0, "coinfeed": 55.0}
    assert peer["runs"] == {"cryptofeed": "2/2", "coinfeed": "2/2"}

    throughput = {
        "transport": "direct",
        "peer": peer,
        "end_to_end": {"frames_per_s": 120000.0, "min": 1.0, "max": 2.0, "complete": "1/1"},
        "bare_loops": {"direct": {"frames_per_s": 1_000_000.0, "min": 1.0, "max": 2.0,
                                  "complete": "1/1"}},
    }  # fmt: skip
    rows = bench.client_rows(throughput)
    assert [row["measured_by"] for row in rows] == ["peer-bench", "peer-bench", "bench.py",
                                                    "bench.py"]  # fmt: skip
    assert rows[0]["vs_cryptofeed"] == 1.0
    assert rows[1]["vs_cryptofeed"] == 1.5
    assert rows[2]["vs_bare_direct"] == pytest.approx(0.12)


def test_peer_failures_are_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # no other run's results JSON can be taken
    missing = bench.run_peer(1, tmp_path / "nowhere", "direct", False, timeout=30)
    assert missing == {"ran": False, "ok": False, "error": f"{tmp_path / 'nowhere'}/compare.sh "
                       "not found"}  # fmt: skip

    fake_compare(tmp_path / "busy", 'echo "compare.sh: another run holds the lock" >&2\nexit 2\n')
    busy = bench.run_peer(1, tmp_path / "busy", "direct", False, timeout=30)
    assert not busy["ok"] and busy["exit_code"] == 2
    assert "exited with 2" in busy["error"]
    assert any("another run holds" in line for line in busy["output_tail"])

    fake_compare(tmp_path / "slow", "echo started\nexec sleep 60\n")
    slow = bench.run_peer(1, tmp_path / "slow", "websockets", True, timeout=1)
    assert not slow["ok"] and "did not finish within 1 s" in slow["error"]
    assert slow["env"] == {"COINFEED_TRANSPORT": "websockets"}
    assert slow["seconds"] < 30
