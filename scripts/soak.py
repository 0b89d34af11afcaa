#!/usr/bin/env python
"""Soak coinfeed against the simulator, check it against ground truth, report and plot.

Starts ``coinfeed simulate`` and ``coinfeed run`` as real child processes on loopback, samples
``/api/debug/memory`` and ``/metrics`` every ``--interval`` seconds for ``--duration`` seconds,
then stops coinfeed with SIGTERM (exit code 0 required), fetches ``/_sim/truth`` and compares
the sink with it. Writes ``report.json``, ``report.md`` and ``soak.png`` into ``--out`` and
exits 1 when a criterion fails (2 when the run itself could not be carried out).

Completeness rule: the simulator keeps producing while coinfeed shuts down, so only trades
coinfeed could have seen are required. For each symbol that is every truth trade with
``first <= time_exchange <= stop - margin``, where ``first`` is the first trade coinfeed
received live for that symbol (or the oldest trade the simulator still retains, if later) and
``stop`` the moment SIGTERM was sent. Each of them must be in the sink exactly once, and the sink
must hold no trade in that window the simulator did not produce. Under profiles that make REST
fail (``rest-5xx``, ``rest-429``, ``chaos``) trades may be missing, provided each symbol that
misses some has an ``unrecovered`` trade gap event (the contract: "every drop is either
repaired or reported as a gap event").

With ``--kill-restart`` coinfeed is SIGKILLed halfway through, kept down ``--down`` seconds
and started again on the same sink and ``state_dir``: the same completeness rule then spans the
restart (the outage must be backfilled from the checkpoint). Across a kill delivery is
at-least-once: a symbol's trades stamped between its last checkpoint (read from ``state_dir``
right after the kill) and the kill may be in a JSON Lines sink twice; those are counted apart and
allowed, any other duplicate fails. RSS is judged on the restarted process only.

With ``--record`` coinfeed also records (``coinfeed run --record``) into a fresh directory
``OUT/record-*`` (kept, bounded by the retention) with small segments that rotate every
``--record-segment-seconds`` (3) or ``--record-segment-bytes`` (1MiB, coinfeed's minimum) and a
retention that must delete old segments during the run: ``--record-retention`` (default
``1MiB,AGE``, AGE = a quarter of ``--duration``, at least 3 segments' seconds; at 2,000 frames/s
coinfeed writes about 90 KB/s, so 1MiB holds ~11 s). Judged besides: retention deleted at least
one segment (created, counted from the segment names' per-run index, minus still on disk); bytes
on disk at the end <= the retention size plus one segment (the largest one left: retention runs
as each segment starts, so only the one being written can top the size up); the
``sink:record`` channel's peak below its capacity; ``coinfeed recordings DIR --json`` exits 0
on what is left (its first segment may begin mid-run).

    .venv/bin/python scripts/soak.py [--duration 600] [--rate 2000] [--faults chaos]
        [--interval 5] [--out reports/soak-<time>] [--sink jsonl|sqlite] [--transport NAME]
        [--kill-restart [--down 10]] [--record [--record-retention 1MiB,30s]]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (
    Child,
    coinfeed_env,
    coinfeed_http_url,
    metric_sum,
    parse_metrics,
    start_coinfeed,
    start_simulator,
)

from coinfeed.config.values import InvalidValue, Retention, byte_size, format_bytes
from coinfeed.config.values import retention as parse_retention
from coinfeed.core.dedup import BYTES_PER_ENTRY as DEDUP_BYTES_PER_ENTRY
from coinfeed.recording.segments import list_segments

REST_FAILING_PROFILES = frozenset({"rest-5xx", "rest-429", "chaos"})
RSS_BOUND_MB_PER_10MIN = 1.0
RECORD_CHANNEL = "sink:record"
"""The recorder's channel in ``/api/debug/memory``: reported apart from the sinks' channels."""
RECORD_SEGMENT_SECONDS = 3.0
RECORD_SEGMENT_BYTES = "1MiB"
RECORD_RETENTION_BYTES = 1 << 20
RETENTION_DELETED_LOG = b"recording retention: oldest segment deleted"
EXIT_FAILED = 1
EXIT_BROKEN = 2


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def take_sample(client: httpx.Client, started: float) -> dict[str, Any]:
    """One sample of ``/api/debug/memory`` and ``/metrics`` (seconds since start in ``t``)."""
    memory = client.get("/api/debug/memory").json()
    metrics = parse_metrics(client.get("/metrics").text)
    queues = memory["queues"]
    sinks = [q for name, q in queues.items() if name.startswith("sink:") and name != RECORD_CHANNEL]
    record = queues.get(RECORD_CHANNEL)
    figures = {} if record is None else {
        "record_depth": record["size"], "record_peak": record["peak"],
        "record_capacity": record["capacity"],
    }  # fmt: skip
    return {
        "t": time.monotonic() - started,
        "rss_mb": memory["rss_bytes"] / 1e6,
        "gc_objects": memory["python"]["gc_objects"],
        "raw_depth": queues["raw"]["size"],
        "raw_peak": queues["raw"]["peak"],
        "raw_capacity": queues["raw"]["capacity"],
        "sink_depth": max((q["size"] for q in sinks), default=0),
        "sink_peak": max((q["peak"] for q in sinks), default=0),
        "sink_capacity": min((q["capacity"] for q in sinks), default=0),
        "frames_dropped": memory["frames_dropped"],
        "recovery_pending": memory["recovery_pending"],
        "dedup_entries": memory["dedup_entries"],
        "tasks": memory["tasks"],
        "open_fds": memory["open_fds"],
        "messages": metric_sum(metrics, "coinfeed_messages_received_total"),
        "gaps": metric_sum(metrics, "coinfeed_gaps_detected_total"),
        "recovered": metric_sum(metrics, "coinfeed_recoveries_total", outcome="recovered"),
        "unrecovered": metric_sum(metrics, "coinfeed_recoveries_total", outcome="unrecovered"),
        "refused": metric_sum(metrics, "coinfeed_recoveries_total", outcome="refused"),
        "book_recovered": metric_sum(
            metrics, "coinfeed_recoveries_total", type="book", outcome="recovered"
        ),
        "book_unrecovered": metric_sum(
            metrics, "coinfeed_recoveries_total", type="book", outcome="unrecovered"
        ),
        "reconnects": metric_sum(metrics, "coinfeed_reconnects_total"),
        "sink_errors": metric_sum(metrics, "coinfeed_sink_errors_total"),
        **figures,
    }


def scan_recording(directory: Path) -> dict[str, int]:
    """The segment files of a recording directory (name: bytes), as they are now."""
    files = {}
    for path in list_segments(directory):
        try:
            files[path.name] = path.stat().st_size
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
    return files


def recording_sample(directory: Path, seen: set[str]) -> dict[str, Any]:
    """Segments and bytes on disk now; every segment name seen goes into ``seen``."""
    files = scan_recording(directory)
    seen.update(files)
    return {"record_segments": len(files), "record_disk_bytes": sum(files.values())}


class Progress:
    """A one-line ``\\r`` bar on a terminal, a plain line every 30 s otherwise (stderr)."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.tty = sys.stderr.isatty()
        self.last_line = -1e9

    def show(self, sample: dict[str, Any], *, final: bool = False) -> None:
        t = min(sample["t"], self.duration)
        text = (
            f"{t:5.0f}/{self.duration:.0f} s  rss {sample['rss_mb']:6.1f} MB  "
            f"raw {sample['raw_depth']}/{sample['raw_capacity']} (peak {sample['raw_peak']})  "
            f"drops {sample['frames_dropped']}  gaps {sample['gaps']:.0f}  "
            f"recovered {sample['recovered']:.0f}  unrecovered {sample['unrecovered']:.0f}  "
            f"reconnects {sample['reconnects']:.0f}"
        )
        if "record_segments" in sample:
            text += (
                f"  record {sample.get('record_depth', '?')}/{sample.get('record_capacity', '?')} "
                f"(peak {sample.get('record_peak', '?')}), {sample['record_segments']} segments "
                f"{sample['record_disk_bytes'] / 1e6:.2f} MB"
            )
        if self.tty:
            width = 20
            done = int(width * t / self.duration)
            end = "\n" if final else ""
            bar = "#" * done + "." * (width - done)
            print(f"\r[{bar}] {text}", end=end, file=sys.stderr, flush=True)
        elif final or sample["t"] - self.last_line >= 30:
            self.last_line = sample["t"]
            print(f"soak {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Ground truth and the sink
# ---------------------------------------------------------------------------------------------


class TruthTrade(msgspec.Struct):
    uuid: str
    time_exchange: str


class TruthDump(msgspec.Struct):
    trades: dict[str, list[TruthTrade]]
    trades_produced: dict[str, int]


class SinkRecord(msgspec.Struct):
    kind: str
    symbol_id: str = ""
    uuid: str = ""
    time_exchange: str = ""
    source: str = ""
    data_type: str = ""
    status: str = ""


def read_sink(kind: str, path: Path) -> tuple[list[SinkRecord], list[SinkRecord], bool]:
    """(trades, gap events, duplicates detectable) from the sink file."""
    if kind == "sqlite":
        with sqlite3.connect(path) as db:
            trades = [
                SinkRecord("trade", s, u, t, src)
                for s, u, t, src in db.execute(
                    "SELECT symbol_id, uuid, time_exchange, source FROM trades"
                )
            ]
            gaps = [
                SinkRecord("gap", symbol_id=s, data_type=d, status=st)
                for s, d, st in db.execute("SELECT symbol_id, data_type, status FROM gaps")
            ]
        return trades, gaps, False
    decoder = msgspec.json.Decoder(SinkRecord)
    trades, gaps = [], []
    with path.open("rb") as file:
        for line in file:
            if line.startswith(b'{"kind":"trade"') or line.startswith(b'{"kind":"gap"'):
                record = decoder.decode(line)
                (trades if record.kind == "trade" else gaps).append(record)
    return trades, gaps, True


def read_checkpoint(path: Path) -> dict[str, str]:
    """Per symbol, the time of coinfeed's restart checkpoint, in CoinAPI's time format."""
    try:
        symbols = json.loads(path.read_text())["symbols"]
    except (OSError, ValueError, KeyError):
        return {}
    return {s: iso_utc(datetime.fromisoformat(t).timestamp()) for s, t in symbols.items()}


def iso_utc(moment: float) -> str:
    """A wall-clock time in CoinAPI's format (7 fraction digits), comparable as text."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def left_pending(gaps: list[SinkRecord]) -> dict[str, int]:
    """Per data type, ``pending`` gap events never followed by a final status (at shutdown)."""
    counts: Counter[str] = Counter()
    for gap in gaps:
        if gap.status == "pending":
            counts[gap.data_type] += 1
        elif gap.status in ("recovered", "unrecovered") and counts[gap.data_type] > 0:
            counts[gap.data_type] -= 1
    return {kind: n for kind, n in counts.items() if n}


def check_completeness(
    truth: TruthDump,
    trades: list[SinkRecord],
    gaps: list[SinkRecord],
    *,
    cutoff: str,
    duplicates_detectable: bool,
    restart_overlap: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Compare the sink's trades with the truth under the rule in the module docstring."""
    by_symbol: dict[str, list[SinkRecord]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol_id, []).append(trade)
    unrecovered_symbols = {
        g.symbol_id for g in gaps if g.data_type == "trade" and g.status == "unrecovered"
    }
    symbols: dict[str, Any] = {}
    for symbol_id, truth_trades in truth.trades.items():
        delivered = by_symbol.get(symbol_id, [])
        live = [t.time_exchange for t in delivered if t.source == "ws"]
        retained = min((t.time_exchange for t in truth_trades), default="")
        first = max(min(live, default="9999"), retained)
        expected = {t.uuid.lower() for t in truth_trades if first <= t.time_exchange <= cutoff}
        in_window = [t.uuid for t in delivered if first <= t.time_exchange <= cutoff]
        counts = Counter(in_window)
        at = {t.uuid: t.time_exchange for t in delivered}
        again = {u: n - 1 for u, n in counts.items() if n > 1}
        since, until = (restart_overlap or {}).get(symbol_id, ("9999", ""))
        overlap = {u: n for u, n in again.items() if since <= at[u] <= until}
        window_truth = {t.uuid.lower() for t in truth_trades if first <= t.time_exchange}
        symbols[symbol_id] = {
            "window": [first, cutoff],
            "expected": len(expected),
            "delivered": len(expected & counts.keys()),
            "missing": len(expected - counts.keys()),
            "duplicates": sum(again.values()) - sum(overlap.values()),
            "delivered_again_at_restart": sum(overlap.values()),
            "phantom": len(counts.keys() - window_truth),
            "unrecovered_gap_reported": symbol_id in unrecovered_symbols,
            "produced_total": truth.trades_produced.get(symbol_id, 0),
            "sink_total": len(delivered),
        }
    expected_total = sum(s["expected"] for s in symbols.values())
    delivered_total = sum(s["delivered"] for s in symbols.values())
    return {
        "rule": "every truth trade with first live trade <= time_exchange <= SIGTERM - margin, "
        "exactly once",
        "expected": expected_total,
        "delivered": delivered_total,
        "missing": sum(s["missing"] for s in symbols.values()),
        "duplicates": sum(s["duplicates"] for s in symbols.values()),
        "delivered_again_at_restart": sum(
            s["delivered_again_at_restart"] for s in symbols.values()
        ),
        "duplicates_detectable": duplicates_detectable,
        "phantom": sum(s["phantom"] for s in symbols.values()),
        "percent": 100.0 * delivered_total / expected_total if expected_total else 0.0,
        "missing_unreported_symbols": sorted(
            s for s, v in symbols.items() if v["missing"] and not v["unrecovered_gap_reported"]
        ),
        "gap_events": dict(Counter(f"{g.data_type}:{g.status}" for g in gaps)),
        "gaps_left_pending": left_pending(gaps),
        "symbols": symbols,
    }


# ---------------------------------------------------------------------------------------------
# The recording (--record)
# ---------------------------------------------------------------------------------------------


def record_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Segment size and time and the retention (``InvalidValue`` when one is not valid).

    The retention defaults to ``1MiB,AGE``, AGE a quarter of the run (at least three segments'
    seconds): either limit deletes segments in a run of 20 s or more at 1,000 frames/s.
    """
    if args.record_segment_seconds <= 0:
        raise InvalidValue("--record-segment-seconds must be > 0")
    segment_bytes = byte_size(1 << 20)(args.record_segment_bytes)
    retention: Retention | None = Retention(
        RECORD_RETENTION_BYTES, max(args.duration / 4, 3 * args.record_segment_seconds)
    )
    if args.record_retention is not None:
        retention = parse_retention(args.record_retention)
    if retention is None or retention.max_bytes is None:
        raise InvalidValue("--record-retention needs a size (bytes on disk are judged by it)")
    return {"segment_seconds": args.record_segment_seconds, "segment_bytes": segment_bytes,
            "retention": retention}  # fmt: skip


def record_arguments(directory: Path, settings: dict[str, Any]) -> list[str]:
    return ["--record", str(directory),
            "--record-segment-seconds", f"{settings['segment_seconds']:g}",
            "--record-segment-bytes", str(settings["segment_bytes"]),
            "--record-retention", str(settings["retention"])]  # fmt: skip


def segments_created(names: set[str]) -> dict[str, int]:
    """Per run, the segments it started: its highest segment number seen, plus one (a run
    numbers its segments from 0, and retention never deletes the one being written)."""
    created: dict[str, int] = {}
    for name in names:
        _, run_id, index = Path(name).stem.rsplit("-", 2)
        created[run_id] = max(created.get(run_id, 0), int(index) + 1)
    return created


def check_recording(
    directory: Path, seen: set[str], log: Path, settings: dict[str, Any], out: Path
) -> dict[str, Any]:
    """What retention left on disk, and ``coinfeed recordings DIR --json`` on it (after the
    run: coinfeed has exited). Its listing goes to ``out/recordings.json``."""
    files = scan_recording(directory)
    seen.update(files)
    created = segments_created(seen)
    try:
        deletions_logged = log.read_bytes().count(RETENTION_DELETED_LOG)
    except OSError:
        deletions_logged = None
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "coinfeed", "recordings", str(directory), "--json"],
            capture_output=True, text=True, timeout=600, env=coinfeed_env(),
        )  # fmt: skip
        exit_code: int | None = done.returncode
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        exit_code, stdout, stderr = None, "", f"timed out after {exc.timeout} s"
    elapsed = time.monotonic() - started
    try:
        listing: list[dict[str, Any]] = json.loads(stdout)
    except ValueError:
        listing = []
    (out / "recordings.json").write_text(stdout or "[]\n")
    sizes = list(files.values())
    retention: Retention = settings["retention"]
    assert retention.max_bytes is not None
    largest = max(sizes, default=0)
    return {
        "directory": str(directory),
        "segment_seconds": settings["segment_seconds"],
        "segment_bytes": settings["segment_bytes"],
        "retention": str(retention),
        "retention_bytes": retention.max_bytes,
        "retention_seconds": retention.max_seconds,
        "runs": len(created),
        "created": sum(created.values()),
        "on_disk": len(files),
        "deleted": sum(created.values()) - len(files),
        "deletions_logged": deletions_logged,
        "disk_bytes": sum(sizes),
        "largest_segment_bytes": largest,
        "median_segment_bytes": statistics.median(sizes) if sizes else 0,
        "disk_limit_bytes": retention.max_bytes + largest,
        "listing": {
            "exit_code": exit_code,
            "seconds": elapsed,
            "segments": len(listing),
            "frames": sum(s.get("frames", 0) for s in listing),
            "raw_bytes": sum(s.get("raw_bytes", 0) for s in listing),
            "first_segment": listing[0].get("segment") if listing else None,
            "truncated_segments": sum(1 for s in listing if s.get("truncated_bytes")),
            "errors": [f"{Path(s['path']).name}: {s['error']}" for s in listing if s.get("error")],
            "stderr": stderr[-2000:],
        },
    }


def record_channel(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``sink:record`` channel over the samples (peak since the process started)."""
    sampled = [s for s in samples if "record_peak" in s]
    if not sampled:
        return {"peak": None, "capacity": None, "median_depth": None, "samples": 0}
    return {
        "peak": max(s["record_peak"] for s in sampled),
        "capacity": min(s["record_capacity"] for s in sampled),
        "median_depth": statistics.median(s["record_depth"] for s in sampled),
        "samples": len(sampled),
        "max_disk_bytes_sampled": max(s["record_disk_bytes"] for s in samples),
    }


# ---------------------------------------------------------------------------------------------
# Criteria, report, plot
# ---------------------------------------------------------------------------------------------


def rss_slope(
    samples: list[dict[str, Any]], warmup: float, *, net_of_dedup: bool = False
) -> tuple[float | None, int]:
    """Least-squares slope of RSS after ``warmup`` seconds, in MB per 10 minutes.

    ``net_of_dedup`` subtracts the trade de-dup set (``dedup_entries`` times its measured bytes per
    entry): that set grows until ``dedup_capacity`` by design, so in a run shorter than its fill
    time its growth would hide, or fake, a leak.
    """
    points = [
        (
            s["t"],
            s["rss_mb"] - (s["dedup_entries"] * DEDUP_BYTES_PER_ENTRY / 1e6 if net_of_dedup else 0),
        )
        for s in samples
        if s["t"] >= warmup
    ]
    if len(points) < 3:
        return None, len(points)
    slope, _ = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    return slope * 600.0, len(points)


def dedup_full_at(samples: list[dict[str, Any]]) -> float | None:
    """When the trade-uuid de-dup set stopped growing (it is bounded: full), if it did."""
    entries = [s["dedup_entries"] for s in samples]
    if len(entries) < 3 or entries[-1] != max(entries) or entries[-2] != entries[-1]:
        return None
    first = next(i for i, n in enumerate(entries) if n == entries[-1])
    return float(samples[first]["t"])


def judge(report: dict[str, Any], bound: float) -> list[dict[str, Any]]:
    """Every criterion with its measured value and verdict."""
    final = report["final_sample"]
    rest_failing = report["settings"]["faults"] in REST_FAILING_PROFILES
    comp = report["completeness"]
    slope = report["rss"]["net_slope_mb_per_10min"]
    criteria = [
        {"name": "clean exit on SIGTERM", "value": report["exit_code"], "target": "0",
         "ok": report["exit_code"] == 0},
        {"name": "RSS slope after warm-up, net of the bounded de-dup set (MB / 10 min)",
         # (measured after the set filled when it did; estimated net of it otherwise)
         "value": None if slope is None else round(slope, 3), "target": f"< {bound}",
         "ok": slope is not None and slope < bound},
        {"name": "raw queue peak within capacity",
         "value": f"{final['raw_peak']}/{final['raw_capacity']}", "target": "<= capacity",
         "ok": final["raw_peak"] <= final["raw_capacity"]},
        {"name": "sink queue peak within capacity",
         "value": f"{final['sink_peak']}/{final['sink_capacity']}", "target": "<= capacity",
         "ok": final["sink_peak"] <= final["sink_capacity"]},
    ]  # fmt: skip
    if rest_failing:
        criteria.append({
            "name": "completeness (missing trades reported as unrecovered gaps)",
            "value": f"{comp['percent']:.3f} %, {comp['missing']} missing, unreported in "
                     f"{comp['missing_unreported_symbols'] or 'none'}",
            "target": "100 %, or every symbol missing trades has an unrecovered gap event",
            "ok": comp["expected"] > 0 and not comp["missing_unreported_symbols"],
        })  # fmt: skip
    else:
        criteria.append({
            "name": "completeness", "value": f"{comp['percent']:.3f} % of {comp['expected']}",
            "target": "100 %", "ok": comp["expected"] > 0 and comp["missing"] == 0,
        })  # fmt: skip
        criteria.append({
            "name": "no unrecovered gaps", "value": final["unrecovered"], "target": "0",
            "ok": final["unrecovered"] == 0,
        })  # fmt: skip
    criteria.append({"name": "no duplicate trades", "value": comp["duplicates"], "target": "0",
                     "ok": comp["duplicates"] == 0})  # fmt: skip
    criteria.append({"name": "no phantom trades", "value": comp["phantom"], "target": "0",
                     "ok": comp["phantom"] == 0})  # fmt: skip
    books = report["books"]
    criteria.append({
        "name": "every book synced at the end (or resynced while waiting)",
        "value": ", ".join(f"{k}={v}" for k, v in books.items()) or "no books",
        "target": "synced",
        "ok": bool(books) and all(v in ("synced", "resynced") for v in books.values()),
    })  # fmt: skip
    if report.get("recording") is not None:
        criteria += judge_recording(report["recording"])
    return criteria


def judge_recording(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The --record criteria: retention deleted during the run, bounded bytes on disk, the
    recorder's channel kept up, and what is left reads and replays."""
    channel, listing = rec["channel"], rec["listing"]
    peak, capacity = channel["peak"], channel["capacity"]
    return [
        {"name": "recording: retention deleted old segments during the run",
         "value": f"{rec['deleted']} of {rec['created']} created ({rec['on_disk']} on disk, "
                  f"{rec['deletions_logged']} deletions logged)",
         "target": ">= 1 deleted", "ok": rec["deleted"] >= 1},
        {"name": "recording: bytes on disk at the end",
         "value": f"{rec['disk_bytes']:,}", "target": f"<= {rec['disk_limit_bytes']:,} "
                  f"(retention {format_bytes(rec['retention_bytes'])} + largest segment)",
         "ok": rec["disk_bytes"] <= rec["disk_limit_bytes"]},
        {"name": "recording: record channel peak below capacity",
         "value": f"{peak}/{capacity}", "target": "< capacity",
         "ok": peak is not None and peak < capacity},
        {"name": "recording: `coinfeed recordings --json` on what is left",
         "value": f"exit {listing['exit_code']}, {listing['segments']} segments, "
                  f"{listing['frames']:,} frames, errors {listing['errors'] or 'none'}",
         "target": f"exit 0, {rec['on_disk']} segments",
         "ok": listing["exit_code"] == 0 and listing["segments"] == rec["on_disk"]},
    ]  # fmt: skip


def plot(samples: list[dict[str, Any]], path: Path, title: str, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["rss_mb"] for s in samples], color="tab:blue")
    ax.axvline(warmup / 60, color="grey", linestyle=":", label="end of warm-up")
    ax.set_ylabel("RSS (MB)")
    ax.legend(loc="lower right")
    ax = axes[1]
    ax.plot(t, [s["raw_depth"] for s in samples], label="raw queue depth")
    ax.plot(t, [s["raw_peak"] for s in samples], label="raw queue peak", linestyle="--")
    ax.plot(t, [s["sink_depth"] for s in samples], label="sink queue depth")
    ax.plot(t, [s["recovery_pending"] for s in samples], label="recovery pending")
    if any("record_depth" in s for s in samples):
        ax.plot(t, [s.get("record_depth", 0) for s in samples], label="record channel depth")
    if samples:
        ax.axhline(samples[-1]["raw_capacity"], color="red", linestyle=":", label="raw capacity")
        ax.axhline(
            samples[-1]["sink_capacity"], color="green", linestyle=":", label="sink capacity"
        )
    ax.set_ylabel("items")
    ax.legend(loc="upper left", fontsize="small")
    ax = axes[2]
    for key, label in [("frames_dropped", "frames dropped"), ("gaps", "gaps detected"),
                       ("recovered", "recoveries ok"), ("unrecovered", "unrecovered"),
                       ("reconnects", "reconnects")]:  # fmt: skip
        ax.plot(t, [s[key] for s in samples], label=label)
    ax.set_ylabel("cumulative count")
    ax.set_xlabel("minutes")
    ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def dedup_note(rss: dict[str, Any]) -> str:
    """The trade de-dup set grows until it holds ``dedup_capacity`` uuids: say where it is."""
    raw = rss["slope_mb_per_10min"]
    raw_text = "n/a" if raw is None else format(raw, ".3f")
    if rss["dedup_full_at_s"] is None:
        return (
            f"The trade de-dup set was still filling at the end ({rss['dedup_entries']:,} "
            f"uuids, ~{DEDUP_BYTES_PER_ENTRY} B each, bounded by `dedup_capacity`): the criterion "
            f"takes RSS net of it; the raw slope was {raw_text} MB / 10 min."
        )
    steady = rss["slope_after_dedup_full_mb_per_10min"]
    return (
        f"The trade de-dup set was full ({rss['dedup_entries']:,} uuids) from "
        f"{rss['dedup_full_at_s']:.0f} s; slope after that: "
        f"{'n/a' if steady is None else format(steady, '.3f')} MB / 10 min."
    )


def restart_note(report: dict[str, Any]) -> list[str]:
    restart = report.get("restart")
    if restart is None:
        return []
    return [
        f"- SIGKILL at {restart['killed_at']}, down {restart['down_s']:g} s, started again on "
        f"the same state_dir; {report['completeness']['delivered_again_at_restart']} trades "
        "stamped between their symbol's last checkpoint and the kill delivered again "
        "(at-least-once across a kill); RSS judged on the restarted process.",
    ]


def recording_note(report: dict[str, Any]) -> list[str]:
    """The --record figures, for the summary and report.md (none without --record)."""
    rec = report.get("recording")
    if rec is None:
        return []
    channel, listing = rec["channel"], rec["listing"]
    return [
        f"Recording: segments of {rec['segment_seconds']:g} s or "
        f"{format_bytes(rec['segment_bytes'])}, retention {rec['retention']}; "
        f"{rec['created']} segments created in {rec['runs']} run(s), {rec['deleted']} deleted, "
        f"{rec['on_disk']} on disk: {rec['disk_bytes']:,} bytes at the end (max sampled "
        f"{channel.get('max_disk_bytes_sampled', 0):,}), median segment "
        f"{rec['median_segment_bytes']:,.0f} bytes, largest {rec['largest_segment_bytes']:,}.",
        f"Record channel: peak {channel['peak']}/{channel['capacity']}, median depth "
        f"{channel['median_depth']} over {channel['samples']} samples. `coinfeed recordings "
        f"--json`: exit {listing['exit_code']} in {listing['seconds']:.1f} s, "
        f"{listing['segments']} segments (first numbered {listing['first_segment']}), "
        f"{listing['frames']:,} frames, {listing['truncated_segments']} with a truncated tail, "
        f"errors {listing['errors'] or 'none'}.",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# coinfeed soak {report['started_at']}",
        "",
        f"{s['duration']:.0f} s at {s['rate']:.0f} frames/s, faults `{s['faults']}`, "
        f"{len(report['symbols'])} symbols, sink `{s['sink']}`, transport "
        f"`{s['transport'] or 'default'}`, extra coinfeed arguments "
        f"`{' '.join(s['coinfeed_args']) or 'none'}`; {len(report['samples'])} samples every "
        f"{s['interval']} s. Verdict: **{'PASS' if report['passed'] else 'FAIL'}**.",
        "",
        "| criterion | measured | target | |",
        "|---|---|---|---|",
    ]
    for c in report["criteria"]:
        lines.append(f"| {c['name']} | {c['value']} | {c['target']} | "
                     f"{'ok' if c['ok'] else 'FAIL'} |")  # fmt: skip
    comp, final, rss = report["completeness"], report["final_sample"], report["rss"]
    lines += [
        "",
        f"- RSS {rss['first_mb']:.1f} → {rss['last_mb']:.1f} MB (max {rss['max_mb']:.1f}); "
        f"slope fitted over {rss['points']} samples after {rss['warmup_s']:.0f} s of warm-up. "
        + dedup_note(rss),
        f"- Messages {final['messages']:,.0f}, frames dropped {final['frames_dropped']}, gaps "
        f"{final['gaps']:.0f}, recoveries {final['recovered']:.0f} ok / "
        f"{final['unrecovered']:.0f} unrecovered / {final['refused']:.0f} refused (books: "
        f"{final['book_recovered']:.0f} resyncs ok, {final['book_unrecovered']:.0f} not), "
        f"reconnects {final['reconnects']:.0f}, sink errors {final['sink_errors']:.0f}.",
        f"- Trades: {comp['delivered']:,} of {comp['expected']:,} expected "
        f"({comp['percent']:.3f} %), {comp['missing']} missing, {comp['duplicates']} duplicates"
        f"{'' if comp['duplicates_detectable'] else ' (not detectable: uuid is the key)'}, "
        f"{comp['phantom']} phantom. Gap events: {comp['gap_events'] or 'none'}; "
        f"left pending at shutdown: {comp['gaps_left_pending'] or 'none'}.",
        f"- Rule: {comp['rule']} (margin {s['margin']} s).",
        *restart_note(report),
        *[f"- {line}" for line in recording_note(report)],
        "",
        "![soak](soak.png)",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def wait_healthy(client: httpx.Client, coinfeed: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if coinfeed.proc.poll() is not None:
            raise RuntimeError(f"coinfeed exited with {coinfeed.proc.returncode} at start")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"coinfeed did not answer /health within {timeout} s")


def book_states(client: httpx.Client, symbols: list[str], *, wait: float) -> dict[str, str]:
    """Each book's state; waits up to ``wait`` s for every book to be synced (resyncs end).

    A book still not synced at the deadline whose sequence moved while waiting was synced in
    between (a book only advances while synced) and is reported ``resynced``: under a gap rate
    above CoinAPI's resubscribe budget (10 scope messages per 10 s) books cycle between stale and
    synced, and all of them are rarely synced at one poll. A book stuck stale keeps its number.
    """
    deadline = time.monotonic() + wait
    first: dict[str, object] = {}
    while True:
        answers = {s: client.get(f"/api/books/{s}", params={"depth": 1}).json() for s in symbols}
        for symbol, answer in answers.items():
            first.setdefault(symbol, answer.get("sequence"))
        states = {s: answer.get("state", "?") for s, answer in answers.items()}
        if all(v == "synced" for v in states.values()):
            return states
        if time.monotonic() > deadline:
            return {
                s: "resynced" if v != "synced" and answers[s].get("sequence") != first[s] else v
                for s, v in states.items()
            }
        time.sleep(0.5)


def sampled_run(args: argparse.Namespace, out: Path, symbols: list[str]) -> dict[str, Any]:
    simulator, urls = start_simulator(
        ["--rate", str(args.rate), "--faults", args.faults, "--seed", str(args.seed),
         "--symbols", ",".join(symbols)],
        log=out / "simulator.log",
    )  # fmt: skip
    coinfeed: Child | None = None
    try:
        sink_path = out / ("events.sqlite" if args.sink == "sqlite" else "events.jsonl")
        run_args = [
            "--ws-url", urls["ws_url"], "--rest-url", urls["rest_url"],
            "--symbols", ",".join(symbols), "--sink", f"{args.sink}:{sink_path}",
            "--http", "127.0.0.1:0", "--log-format", "json",
        ]  # fmt: skip
        if args.transport:
            run_args += ["--transport", args.transport]
        record_dir: Path | None = None
        seen: set[str] = set()  # every segment name seen in the record directory
        if args.record:
            record_dir = Path(tempfile.mkdtemp(prefix="record-", dir=out))
            run_args += record_arguments(record_dir, args.record_settings)
        run_args += ["--state-dir", str(out / "state"), *args.coinfeed_arg]
        coinfeed = start_coinfeed(run_args, log=out / "coinfeed.log")
        samples: list[dict[str, Any]] = []
        client = httpx.Client(base_url=coinfeed_http_url(coinfeed, timeout=60), timeout=10)
        restart: dict[str, Any] | None = None

        def sample() -> dict[str, Any]:
            figures = take_sample(client, started)
            if record_dir is not None:
                figures.update(recording_sample(record_dir, seen))
            return figures

        try:
            wait_healthy(client, coinfeed, 60)
            progress = Progress(args.duration)
            started = time.monotonic()
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            next_at = started
            while True:
                if coinfeed.proc.poll() is not None:
                    raise RuntimeError(f"coinfeed exited early with {coinfeed.proc.returncode}")
                samples.append(sample())
                progress.show(samples[-1])
                if samples[-1]["t"] >= args.duration:
                    break
                if args.kill_restart and restart is None and samples[-1]["t"] >= args.duration / 2:
                    coinfeed.kill()
                    killed_at = time.time()
                    if record_dir is not None:  # its last segment, before a restart deletes it
                        seen.update(scan_recording(record_dir))
                    checkpointed = read_checkpoint(out / "state" / "checkpoint.json")
                    client.close()
                    time.sleep(args.down)
                    coinfeed = start_coinfeed(run_args, log=out / "coinfeed.log")
                    client = httpx.Client(
                        base_url=coinfeed_http_url(coinfeed, timeout=60), timeout=10
                    )
                    wait_healthy(client, coinfeed, 60)
                    restart = {"killed_at": iso_utc(killed_at), "checkpoint": checkpointed,
                               "down_s": args.down, "t": time.monotonic() - started}  # fmt: skip
                    next_at = time.monotonic()
                    continue
                next_at += args.interval
                time.sleep(max(0.0, min(next_at, started + args.duration) - time.monotonic()))
            progress.show(samples[-1], final=True)
            books = book_states(client, symbols, wait=args.book_wait)
            samples.append(sample())
        finally:
            client.close()
        stopped_at = time.time()
        coinfeed.terminate()
        exit_code = coinfeed.wait(30)
        with httpx.Client(base_url=urls["rest_url"], timeout=120) as rest:
            truth = msgspec.json.decode(rest.get("/_sim/truth").content, type=TruthDump)
    finally:
        if coinfeed is not None:
            coinfeed.stop(grace=10)
        simulator.stop(grace=10)
    recording = None
    if record_dir is not None:
        recording = check_recording(
            record_dir, seen, out / "coinfeed.log", args.record_settings, out
        )
        recording["channel"] = record_channel(samples)
    trades, gaps, detectable = read_sink(args.sink, sink_path)
    overlap = None
    if restart is not None:
        overlap = {s: (t, restart["killed_at"]) for s, t in restart["checkpoint"].items()}
    completeness = check_completeness(
        truth, trades, gaps, cutoff=iso_utc(stopped_at - args.margin),
        duplicates_detectable=detectable, restart_overlap=overlap,
    )  # fmt: skip
    return {
        "started_at": started_at,
        "samples": samples,
        "books": books,
        "exit_code": exit_code,
        "completeness": completeness,
        "sink_path": str(sink_path),
        "restart": restart,
        "recording": recording,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[6:18]) if __doc__ else None,
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--rate", type=float, default=2000.0, help="simulator frames/s (2000)")
    parser.add_argument("--faults", default="chaos", help="simulator fault profile (chaos)")
    parser.add_argument("--seed", type=int, default=1, help="market seed (1)")
    parser.add_argument("--symbols", type=int, default=6, help="number of symbols (6)")
    parser.add_argument("--interval", type=float, default=5.0, help="sampling interval, s (5)")
    parser.add_argument("--transport", default=None, help="coinfeed run --transport value")
    parser.add_argument("--coinfeed-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for coinfeed run, repeatable "
                             "(e.g. --coinfeed-arg=--dedup-capacity=20000)")  # fmt: skip
    parser.add_argument("--sink", choices=("jsonl", "sqlite"), default="jsonl",
                        help="jsonl (detects duplicates) or sqlite (uuid-keyed)")  # fmt: skip
    parser.add_argument(
        "--margin",
        type=float,
        default=10.0,
        help="trades younger than SIGTERM minus this are not required (10 s)",
    )
    parser.add_argument("--rss-bound", type=float, default=RSS_BOUND_MB_PER_10MIN,
                        help="max RSS slope after warm-up, MB per 10 min (1.0)")  # fmt: skip
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds left out of the RSS fit (default: 20 %% of the run, at most 60 s)",
    )
    parser.add_argument(
        "--book-wait",
        type=float,
        default=20.0,
        help="seconds to wait for every book to be synced at the end (20)",
    )
    parser.add_argument(
        "--kill-restart",
        action="store_true",
        help="SIGKILL coinfeed halfway and start it again on the same state",
    )
    parser.add_argument(
        "--down",
        type=float,
        default=10.0,
        help="seconds coinfeed stays down with --kill-restart (10)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="coinfeed records into OUT/record-* with small segments and a retention that "
        "must delete some during the run; judged too",
    )
    parser.add_argument(
        "--record-segment-seconds",
        type=float,
        default=RECORD_SEGMENT_SECONDS,
        metavar="S",
        help="with --record: seconds per segment (3)",
    )
    parser.add_argument(
        "--record-segment-bytes",
        default=RECORD_SEGMENT_BYTES,
        metavar="SIZE",
        help="with --record: bytes per segment, >= 1MiB (1MiB)",
    )
    parser.add_argument(
        "--record-retention",
        default=None,
        metavar="SIZE[,AGE]",
        help="with --record: coinfeed's --record-retention, a size required "
        "(default: 1MiB and a quarter of --duration, at least 3 segments' seconds)",
    )
    parser.add_argument("--out", type=Path, default=None, help="report directory")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0:
        parser.error("--duration and --interval must be > 0")
    args.record_settings = None
    if args.record:
        try:
            args.record_settings = record_settings(args)
        except InvalidValue as exc:
            parser.error(str(exc))
    from coinfeed.simulator.config import default_symbols

    symbols = list(default_symbols(args.symbols))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path("reports") / f"soak-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    warmup = min(0.2 * args.duration, 60.0) if args.warmup is None else args.warmup
    print(f"soak: {args.duration:.0f} s, {args.rate:.0f} frames/s, faults {args.faults}, "
          f"{len(symbols)} symbols, sink {args.sink}, out {out}", file=sys.stderr)  # fmt: skip
    if args.record_settings is not None:
        rs = args.record_settings
        print(f"soak: recording, segments of {rs['segment_seconds']:g} s or "
              f"{format_bytes(rs['segment_bytes'])}, retention {rs['retention']}",
              file=sys.stderr)  # fmt: skip
    try:
        run = sampled_run(args, out, symbols)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        print(f"\nsoak: the run could not be completed: {exc} (logs in {out})", file=sys.stderr)
        return EXIT_BROKEN
    samples = run["samples"]
    if run["restart"] is not None:  # RSS of the restarted process only, after its warm-up
        warmup += run["restart"]["t"]
    slope, points = rss_slope(samples, warmup)
    full_at = dedup_full_at(samples)
    steady = rss_slope(samples, full_at)[0] if full_at is not None else None
    # Judged: the slope once the de-dup set is full (its fill is the one designed growth), or,
    # in a run too short to fill it, the slope net of its estimated size.
    net_slope = steady if steady is not None else rss_slope(samples, warmup, net_of_dedup=True)[0]
    rss = [s["rss_mb"] for s in samples]
    report: dict[str, Any] = {
        "started_at": run["started_at"],
        "settings": {"duration": args.duration, "rate": args.rate, "faults": args.faults,
                     "seed": args.seed, "interval": args.interval, "sink": args.sink,
                     "transport": args.transport, "margin": args.margin,
                     "coinfeed_args": args.coinfeed_arg, "kill_restart": args.kill_restart,
                     "rss_bound_mb_per_10min": args.rss_bound, "record": args.record},
        "symbols": symbols,
        "exit_code": run["exit_code"],
        "rss": {"slope_mb_per_10min": slope, "net_slope_mb_per_10min": net_slope,
                "points": points, "warmup_s": warmup,
                "first_mb": rss[0], "last_mb": rss[-1], "max_mb": max(rss),
                "dedup_full_at_s": full_at, "dedup_entries": samples[-1]["dedup_entries"],
                "slope_after_dedup_full_mb_per_10min": steady},
        "final_sample": samples[-1],
        "books": run["books"],
        "completeness": run["completeness"],
        "restart": run["restart"],
        "recording": run["recording"],
        "samples": samples,
        "files": {"sink": run["sink_path"], "plot": str(out / "soak.png")},
    }  # fmt: skip
    report["criteria"] = judge(report, args.rss_bound)
    report["passed"] = all(c["ok"] for c in report["criteria"])
    title = (f"coinfeed soak: {args.duration / 60:.1f} min, {args.rate:.0f} frames/s, "
             f"faults {args.faults}")  # fmt: skip
    plot(samples, out / "soak.png", title, warmup)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    print_summary(report, out)
    return 0 if report["passed"] else EXIT_FAILED


def print_summary(report: dict[str, Any], out: Path) -> None:
    width = max(len(c["name"]) for c in report["criteria"])
    print(f"\ncoinfeed soak: {'PASS' if report['passed'] else 'FAIL'}  ({out})")
    for c in report["criteria"]:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'}  {c['name']:<{width}}  {c['value']}"
              f"  (target {c['target']})")  # fmt: skip
    print(f"  {dedup_note(report['rss'])}")
    comp = report["completeness"]
    print(f"  trades {comp['delivered']:,}/{comp['expected']:,} in the checked window, "
          f"gap events {comp['gap_events'] or 'none'}, left pending at shutdown "
          f"{comp['gaps_left_pending'] or 'none'}")  # fmt: skip
    for line in recording_note(report):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
