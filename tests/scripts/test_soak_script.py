"""scripts/soak.py end to end: real simulator and coinfeed processes, report, plot, verdict."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.scripts.scriptrun import load_script, run_script

pytestmark = pytest.mark.slow  # runs a script end to end


# Under the gaps and chaos profiles the books resync again and again, so the end-of-run wait for
# every book synced at once (--book-wait, 20 s) usually runs out; 10 s is longer than a resync
# waits for CoinAPI's resubscribe budget, so a book that resyncs still moves within it.


def run_soak(
    out: Path, *args: str, expect: int = 0, timeout: float = 90
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``scripts/soak.py ARGS --out OUT``: its run (exit code ``expect``) and report.json."""
    done = run_script("soak.py", *args, "--out", str(out), timeout=timeout, expect=expect)
    return done, json.loads((out / "report.json").read_text())


def test_chaos_soak_with_a_sigkill_and_restart_in_the_middle_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    _, report = run_soak(
        out, "--duration", "24", "--rate", "1000", "--faults", "chaos", "--interval", "2",
        "--margin", "8", "--rss-bound", "1000", "--kill-restart", "--down", "4",
        "--book-wait", "10", timeout=120,
    )  # fmt: skip
    assert report["restart"]["down_s"] == 4
    comp = report["completeness"]
    assert comp["expected"] > 1000 and not comp["missing_unreported_symbols"]
    assert comp["duplicates"] == 0  # beyond the last seconds before the kill
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    restart_gaps = [e for e in events if e["kind"] == "gap" and e["reason"] == "restart"]
    assert {e["status"] for e in restart_gaps} >= {"pending", "recovered"}
    assert "SIGKILL at" in (out / "report.md").read_text()


def test_soak_fails_when_a_criterion_fails(tmp_path: Path) -> None:
    # A negative RSS bound cannot be met: the verdict must be FAIL with exit code 1.
    out = tmp_path / "soak"
    done, report = run_soak(
        out, "--duration", "4", "--faults", "none", "--interval", "1", "--margin", "2",
        "--rss-bound", "-1000", expect=1, timeout=60,
    )  # fmt: skip
    failed = [c["name"] for c in report["criteria"] if not c["ok"]]
    assert failed == ["RSS slope after warm-up, net of the bounded de-dup set (MB / 10 min)"]
    assert "coinfeed soak: FAIL" in done.stdout


def test_soak_with_gaps_and_recording_passes_writes_its_report_and_replays_what_is_left(
    tmp_path: Path,
) -> None:
    # One run for both halves (each is ~30 s of the suite): the gaps profile's verdict, report
    # and plot, and the recording under it. Segments of 2 s and a 256KiB retention: at 1,000
    # frames/s coinfeed records ~45 KB/s, so retention deletes segments within the 20 s; what
    # is left (a run entered part way, with book resyncs recorded) must list and replay.
    # 20 s is all warm-up for RSS (the trade de-dup set is still filling), so the RSS bound is
    # relaxed here; every other criterion is the real one.
    out = tmp_path / "soak"
    done, report = run_soak(
        out, "--duration", "20", "--rate", "1000", "--faults", "gaps", "--interval", "2",
        "--margin", "8", "--rss-bound", "1000", "--record", "--record-segment-seconds", "2",
        "--record-retention", "256KiB", "--book-wait", "10", timeout=150,
    )  # fmt: skip
    assert report["passed"] is True
    names = {c["name"] for c in report["criteria"]}
    assert {"clean exit on SIGTERM", "completeness", "no duplicate trades"} <= names
    assert all(c["ok"] for c in report["criteria"])
    comp = report["completeness"]
    assert comp["expected"] > 1000 and comp["missing"] == 0 and comp["duplicates"] == 0
    assert report["final_sample"]["gaps"] > 0, "the gaps profile should have produced gaps"
    assert report["final_sample"]["recovered"] > 0
    assert len(report["samples"]) >= 8
    png = (out / "soak.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "PASS" in (out / "report.md").read_text()

    recording_criteria = [c for c in report["criteria"] if c["name"].startswith("recording:")]
    assert len(recording_criteria) == 4 and all(c["ok"] for c in recording_criteria)
    rec = report["recording"]
    assert rec["retention"] == "256KiB" and rec["segment_bytes"] == 1 << 20
    assert rec["deleted"] > 0 and rec["created"] == rec["deleted"] + rec["on_disk"]
    assert rec["deletions_logged"] == rec["deleted"]
    assert rec["on_disk"] >= 1 and rec["runs"] == 1
    assert rec["disk_bytes"] <= rec["disk_limit_bytes"]
    listing = rec["listing"]
    assert listing["exit_code"] == 0 and listing["errors"] == []
    assert listing["segments"] == rec["on_disk"] and listing["frames"] > 0
    assert listing["first_segment"] > 0, "the first segments should have been deleted"
    channel = rec["channel"]
    assert channel["capacity"] > 0 and channel["peak"] < channel["capacity"]
    assert all("record_peak" in s and "record_segments" in s for s in report["samples"])
    # The sinks' channel figures leave the recorder's channel out.
    assert report["final_sample"]["sink_capacity"] != channel["capacity"]
    remaining = json.loads((out / "recordings.json").read_text())
    assert len(remaining) == rec["on_disk"]
    assert "Recording: segments of 2 s" in (out / "report.md").read_text()
    assert "coinfeed soak: PASS" in done.stdout


def test_record_settings_derive_the_retention_from_the_duration() -> None:
    soak = load_soak()
    args = argparse.Namespace(
        duration=120.0, record_segment_seconds=3.0, record_segment_bytes="1MiB",
        record_retention=None,
    )  # fmt: skip
    settings = soak.record_settings(args)
    assert settings["segment_bytes"] == 1 << 20
    assert str(settings["retention"]) == "1MiB,30s"
    args.duration = 20.0  # at least three segments' seconds
    assert str(soak.record_settings(args)["retention"]) == "1MiB,9s"
    args.record_retention = "30s"  # no size: bytes on disk could not be judged
    with pytest.raises(soak.InvalidValue):
        soak.record_settings(args)
    names = {
        "20261206T070507.833Z-eb38f667-000004.cfrec",
        "20261206T070510.852Z-eb38f667-000006.cfrec",
        "20261206T070511.000Z-0a1b2c3d-000000.cfrec",
    }
    assert soak.segments_created(names) == {"eb38f667": 7, "0a1b2c3d": 1}


def load_soak() -> ModuleType:
    return load_script("soak.py", "soak_script")


def test_a_book_that_moved_while_waiting_is_resynced_and_a_stuck_one_fails() -> None:
    soak = load_soak()
    polls: dict[str, int] = {}

    # A: synced; B: stale at every poll but its sequence moves (synced in between, as books
    # cycle under a gap rate above the resubscribe budget); C: stale and stuck.
    def answer(request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        polls[symbol] = polls.get(symbol, 0) + 1
        state, sequence = {
            "A": ("synced", 10 + polls[symbol]),
            "B": ("stale", 100 + polls[symbol]),
            "C": ("stale", 7),
        }[symbol]
        return httpx.Response(200, json={"symbol_id": symbol, "state": state, "sequence": sequence})

    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://soak") as client:
        books = soak.book_states(client, ["A", "B", "C"], wait=0.6)
    assert books == {"A": "synced", "B": "resynced", "C": "stale"}
    assert polls["C"] >= 2
