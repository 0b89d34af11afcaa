#!/usr/bin/env python
"""Cost of recording (``--record``), speed of replay and size of a recording, on one stream.

The stream is bench.py's throughput stream (the peer benchmark's ``gen_frames.py`` via
``--peer-dir`` or ``COINFEED_PEER_BENCH``, else the built-in look-alike), served at full speed on
loopback by ``harness.py serve-stream``. Each round runs ``coinfeed run`` on it twice, without
and with ``--record DIR`` (a fresh directory per round, order alternating, ``--state-dir off``,
sink ``jsonl:/dev/null``), each timed like bench.py's end-to-end figure (from the server getting
the hello to the ``/metrics`` answer counting the N-th frame); then ``coinfeed recordings DIR
--json`` gives the round's recording's frames, bytes on disk and bytes before compression, and
``coinfeed replay DIR --speed max --http off`` feeds it into the same sink, timed from its
``replaying run`` log line to its exit (its start-up before that line is left out, and shown).
Prints medians and the per-round ratios with/without ``--record`` and replay/without, next to
their targets (shown, not asserted: shared machines are noisy); ``--json FILE`` writes them.
Default run about 30 s on 2 cores.

    .venv/bin/python scripts/bench_record.py [--rounds 3] [--frames 200000] [--peer-dir DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import (
    add_stream_arguments,
    fmt,
    parse_stream_arguments,
    per_round,
    prepare_stream,
    print_figures,
    progress,
    ratio,
    run_end_to_end,
    stream_title,
)
from harness import Child, coinfeed_env

from coinfeed.service import RECORD_CHANNEL_CAPACITY

SINK = "jsonl:/dev/null"
"""The sink run_end_to_end gives ``coinfeed run``; the replay writes to the same one."""
REPLAY_TIMEOUT = 150.0
TARGETS = {
    "record_ratio": ">= 0.9 x no --record",
    "replay_ratio": ">= 2.0 x no --record",
}
REPLAY_TIMING = (
    "wall time of the coinfeed replay child from its 'replaying run' log line to its exit "
    "(start-up before that line left out), over the frames `coinfeed recordings --json` counts"
)


# ---------------------------------------------------------------------------------------------
# One run of each kind
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def coinfeed_settings(**settings: str) -> Iterator[None]:
    """``COINFEED_<NAME>`` in this process's environment while the block runs: run_end_to_end
    builds its own command line, and coinfeed reads any setting from the environment too
    (``harness.coinfeed_env`` passes ours on to the child)."""
    saved = {f"COINFEED_{name.upper()}": value for name, value in settings.items()}
    before = {key: os.environ.get(key) for key in saved}
    os.environ.update(saved)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_live(stream: dict[str, Any], workdir: Path, record: Path | None) -> dict[str, Any]:
    """One ``coinfeed run`` on the stream (bench.py's end-to-end run), recording into
    ``record`` when given; no restart checkpoint, so no run sees an earlier one's."""
    settings = {"state_dir": "off"}
    if record is not None:
        settings["record"] = str(record)
    with coinfeed_settings(**settings):
        return run_end_to_end(stream, None, workdir)


def describe_recording(recording: Path) -> dict[str, Any]:
    """Frames, bytes on disk and bytes before compression of ``recording``, summed over its
    segments as ``coinfeed recordings DIR --json`` lists them (it replays them to check them)."""
    done = subprocess.run(
        [sys.executable, "-m", "coinfeed", "recordings", str(recording), "--json"],
        capture_output=True, text=True, timeout=REPLAY_TIMEOUT, env=coinfeed_env(),
    )  # fmt: skip
    if done.returncode not in (0, 1):  # 1: listed, but a segment has an error (kept below)
        raise RuntimeError(
            f"coinfeed recordings exited with {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    segments = json.loads(done.stdout)
    frames = sum(segment["frames"] for segment in segments)
    disk = sum(segment["bytes"] for segment in segments)
    raw = sum(segment["raw_bytes"] for segment in segments)
    problems = [
        f"{Path(segment['path']).name}: "
        + (segment["error"] or f"truncated tail of {segment['truncated_bytes']} bytes")
        for segment in segments
        if segment["error"] or segment["truncated_bytes"]
    ]
    return {
        "segments": len(segments),
        "frames": frames,
        "bytes": disk,
        "raw_bytes": raw,
        "bytes_per_frame": ratio(disk, frames),
        "compression_ratio": ratio(raw, disk),
        "problems": problems,
    }


def replaying_started(log: Path, offset: int) -> float:
    """Wall time (``time.time()``) of the ``replaying run`` line of a ``--log-format json`` log
    written from ``offset`` on: the replay's first batch comes right after it."""
    with log.open("rb") as file:
        file.seek(offset)
        for line in file:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("message") == "replaying run":
                    return datetime.fromisoformat(record["time"]).timestamp()
    raise RuntimeError(f"coinfeed replay logged no 'replaying run' line (see {log})")


def log_tail(log: Path, offset: int, lines: int = 5) -> str:
    with log.open("rb") as file:
        file.seek(offset)
        return " | ".join(file.read().decode(errors="replace").strip().splitlines()[-lines:])


def run_replay(recording: Path, frames: int, workdir: Path) -> dict[str, Any]:
    """``coinfeed replay`` of ``recording`` at full speed into :data:`SINK`: frames/s from its
    ``replaying run`` log line to its exit (see :data:`REPLAY_TIMING`)."""
    started = time.time()  # wall clock: compared with the time stamps of the child's log
    child = Child(
        [sys.executable, "-m", "coinfeed", "replay", str(recording), "--speed", "max",
         "--sink", SINK, "--http", "off", "--state-dir", "off",
         "--log-format", "json", "--log-level", "INFO"],
        log=workdir / "coinfeed-replay.log", env=coinfeed_env(),
    )  # fmt: skip
    try:
        code = child.wait(REPLAY_TIMEOUT)
        ended = time.time()
    finally:
        child.stop(grace=5)  # closes its log; stops it only if it timed out
    assert child.log_path is not None
    if code is None:
        raise RuntimeError(f"coinfeed replay did not finish within {REPLAY_TIMEOUT:.0f} s")
    if code != 0:
        tail = log_tail(child.log_path, child.log_offset)
        raise RuntimeError(f"coinfeed replay exited with {code}: {tail}")
    replaying = replaying_started(child.log_path, child.log_offset)
    seconds = ended - replaying
    return {"frames_per_s": frames / seconds, "seconds": seconds, "frames": frames,
            "startup_seconds": replaying - started, "wall_seconds": ended - started,
            "exit_code": code}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------------------------


def failed(exc: Exception) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


def measure_round(index: int, rounds: int, stream: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Both live runs (order alternating with the round), then the recording's listing and
    replay. A failed run is recorded (``error``) and the others go on."""
    recording = workdir / f"recording-{index + 1}"
    result: dict[str, Any] = {"round": index + 1}
    order = ("without_record", "with_record")
    for which in order if index % 2 == 0 else order[::-1]:
        try:
            run = run_live(stream, workdir, recording if which == "with_record" else None)
        except Exception as exc:  # one failed run is a figure too; the rest go on
            run = failed(exc)
        result[which] = run
        label = "coinfeed run " + ("--record" if which == "with_record" else "no --record")
        figure = run.get("error") or f"{run['frames_per_s']:>10,.0f} frames/s"
        progress(f"round {index + 1}/{rounds} {label:<26} {figure}")
    if "error" in result["with_record"]:
        result["recording"] = result["replay"] = {"error": "no recording: the --record run failed"}
    else:
        try:
            result["recording"] = describe_recording(recording)
        except Exception as exc:
            result["recording"] = failed(exc)
        frames = result["recording"].get("frames")
        try:
            if not frames:
                raise RuntimeError("the recording holds no frames (see its listing)")
            result["replay"] = run_replay(recording, frames, workdir)
        except Exception as exc:
            result["replay"] = failed(exc)
        replay = result["replay"]
        figure = replay.get("error") or (
            f"{replay['frames_per_s']:>10,.0f} frames/s "
            f"(start-up {replay['startup_seconds']:.2f} s left out)"
        )
        progress(f"round {index + 1}/{rounds} {'coinfeed replay --speed max':<26} {figure}")
    shutil.rmtree(recording, ignore_errors=True)  # a 200k-frame recording is ~10 MB
    return result


def round_notes(result: dict[str, Any]) -> list[str]:
    """What went wrong in a round, or looks wrong: failed runs, unclean exits, frames the
    recording does not hold."""
    notes: list[str] = []
    where = f"round {result['round']}"
    for which in ("without_record", "with_record", "recording", "replay"):
        entry = result[which]
        if "error" in entry:
            notes.append(f"{where} {which}: FAILED: {entry['error']}")
        elif entry.get("exit_code", 0) != 0:
            notes.append(f"{where} {which}: coinfeed exited with {entry['exit_code']}")
        if entry.get("frames_dropped"):
            notes.append(f"{where} {which}: {entry['frames_dropped']:,.0f} frames dropped")
    recording, live = result["recording"], result["with_record"]
    notes += [f"{where} recording: {problem}" for problem in recording.get("problems", [])]
    held, processed = recording.get("frames"), live.get("frames_processed")
    if held is not None and processed is not None and held != processed:
        notes.append(
            f"{where} recording: holds {held:,} frames, the --record run processed {processed:,.0f}"
        )
    return notes


def median_of(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def measure(rounds: int, stream: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Every round, then the medians and the per-round ratios."""
    runs = [measure_round(index, rounds, stream, workdir) for index in range(rounds)]

    def figures(which: str, key: str) -> list[float]:
        return [run[which][key] for run in runs if key in run[which]]

    record_ratios, replay_ratios = [], []
    for run in runs:
        without = run["without_record"].get("frames_per_s")
        if without and "frames_per_s" in run["with_record"]:
            record_ratios.append(run["with_record"]["frames_per_s"] / without)
        if without and "frames_per_s" in run["replay"]:
            replay_ratios.append(run["replay"]["frames_per_s"] / without)
    return {
        "without_record_frames_per_s": median_of(figures("without_record", "frames_per_s")),
        "with_record_frames_per_s": median_of(figures("with_record", "frames_per_s")),
        "record_ratio": median_of(record_ratios),
        "record_ratios": record_ratios,
        "replay_frames_per_s": median_of(figures("replay", "frames_per_s")),
        "replay_ratio": median_of(replay_ratios),
        "replay_ratios": replay_ratios,
        "replay_startup_seconds": median_of(figures("replay", "startup_seconds")),
        "bytes_per_frame": median_of(figures("recording", "bytes_per_frame")),
        "compression_ratio": median_of(figures("recording", "compression_ratio")),
        "notes": [note for run in runs for note in round_notes(run)],
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    stream, runs = report["stream"], report["runs"]
    print(
        f"\ncoinfeed record/replay bench ({report['elapsed_s']:.0f} s) on "
        f"{stream_title(stream)}; {report['rounds']} round(s), sink {report['sink']}"
    )

    rows = [
        ("(1) coinfeed run frames/s, no --record", fmt(report["without_record_frames_per_s"]),
         per_round(runs, "without_record", "frames_per_s", ",.0f"), ""),
        ("(2) coinfeed run frames/s, --record DIR", fmt(report["with_record_frames_per_s"]),
         per_round(runs, "with_record", "frames_per_s", ",.0f"), ""),
        ("    ratio (2)/(1), median per round", fmt(report["record_ratio"], ".2f"),
         "  ".join(fmt(r, ".2f") for r in report["record_ratios"]), TARGETS["record_ratio"]),
        ("(3) coinfeed replay --speed max frames/s", fmt(report["replay_frames_per_s"]),
         per_round(runs, "replay", "frames_per_s", ",.0f"), ""),
        ("    ratio (3)/(1), median per round", fmt(report["replay_ratio"], ".2f"),
         "  ".join(fmt(r, ".2f") for r in report["replay_ratios"]), TARGETS["replay_ratio"]),
        ("    replay start-up, left out of (3), s", fmt(report["replay_startup_seconds"], ".2f"),
         per_round(runs, "replay", "startup_seconds", ".2f"), ""),
        ("(4) recording: bytes on disk per frame", fmt(report["bytes_per_frame"], ".1f"),
         per_round(runs, "recording", "bytes_per_frame", ".1f"), ""),
        ("    compression ratio (raw/disk)", fmt(report["compression_ratio"], ".2f"),
         per_round(runs, "recording", "compression_ratio", ".2f"), ""),
    ]  # fmt: skip
    print_figures(rows)
    print(
        "- (1), (2): bench.py's end-to-end timing, from the stream server getting the hello to "
        "the /metrics answer counting the N-th frame; the order of (1) and (2) alternates per "
        f"round. At that moment the recording's channel may still hold up to "
        f"{RECORD_CHANNEL_CAPACITY:,} items to compress: they are written at shutdown, "
        "outside the timed window."
    )
    print(f"- (3): {REPLAY_TIMING}.")
    print(
        "- (4): `coinfeed recordings --json`: size of the segment files over the frames they "
        "hold; raw = the records before zstd."
    )
    print(f"- load average (1 min) at start / end: {report['load_avg_1m'][0]:.2f} / "
          f"{report['load_avg_1m'][1]:.2f} on {os.cpu_count()} logical cores")  # fmt: skip
    if stream["source"] != "peer-bench":
        print(f"- stream: {stream['origin']}")
    for note in report["notes"]:
        print(f"- {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_stream_arguments(parser, rounds=3)
    args = parse_stream_arguments(parser, argv)
    started, load_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="coinfeed-bench-record-") as tmp:
        workdir = Path(tmp)
        stream = prepare_stream(args.frames, workdir, args.peer_dir, "auto")
        progress(
            f"stream: {stream['source']}, {stream['frames']:,} frames, sha256 "
            f"{stream['sha256'][:16]} ({stream['origin']})"
        )
        figures = measure(args.rounds, stream, workdir)
    report: dict[str, Any] = {
        "stream": stream,
        "rounds": args.rounds,
        "sink": SINK,
        "targets": TARGETS,
        "replay_timing": REPLAY_TIMING,
        **figures,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "elapsed_s": time.monotonic() - started,
    }
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    measured = report["record_ratio"] is not None or report["replay_frames_per_s"] is not None
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
