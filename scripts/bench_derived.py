#!/usr/bin/env python
"""Cost of derived data (``--bars``, ``--book-snapshots``) on one stream, in one run.

The stream is bench.py's throughput stream (the peer benchmark's ``gen_frames.py`` via
``--peer-dir`` or ``COINFEED_PEER_BENCH``, else the built-in look-alike), served at full speed on
loopback. Each round runs ``coinfeed run`` on it twice, without and with ``--bars 1SEC,1MIN
--book-snapshots 10@1s`` (order alternating per round, ``--state-dir off``, sink
``jsonl:/dev/null``), each timed like bench.py's end-to-end figure (from the server getting the
hello to the ``/metrics`` answer counting the N-th frame). Prints the medians, the per-round
ratio with/without next to its target (shown, not asserted: shared machines are noisy), and
the raw-queue drops of each run; ``--json FILE`` writes them. About 20 s per round on 2 cores.

The reference stream's timestamps lie days in the past, so every bar is due as soon as it is
made and later trades of its period revise it (or, past the revision window, are counted late):
more bar events than a live feed makes, which is the dear case for this figure.

    .venv/bin/python scripts/bench_derived.py [--rounds 5] [--frames 200000] [--peer-dir DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_record import coinfeed_settings
from bench_throughput import (
    add_stream_arguments,
    fmt,
    parse_stream_arguments,
    per_round,
    prepare_stream,
    print_figures,
    progress,
    run_end_to_end,
    stream_title,
)

DERIVED = {"bars": "1SEC,1MIN", "book_snapshots": "10@1s"}
"""The settings the issue measures: bars of two periods and a top-10 snapshot every second."""
TARGET = ">= 0.9 x without"


def run_once(stream: dict[str, Any], workdir: Path, derived: bool) -> dict[str, Any]:
    settings = {"state_dir": "off", **(DERIVED if derived else {})}
    try:
        with coinfeed_settings(**settings):
            return run_end_to_end(stream, None, workdir)
    except (RuntimeError, OSError, TimeoutError) as exc:
        return {"error": str(exc)}


def measure(rounds: int, stream: dict[str, Any], workdir: Path) -> dict[str, Any]:
    runs = []
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        run: dict[str, Any] = {}
        for derived in order:
            which = "with" if derived else "without"
            run[which] = run_once(stream, workdir, derived)
            progress(
                f"round {index + 1}/{rounds} {which}: "
                f"{fmt(run[which].get('frames_per_s'))} frames/s, "
                f"{fmt(run[which].get('frames_dropped'), ',.0f')} dropped"
            )
        runs.append(run)
    ratios = [
        run["with"]["frames_per_s"] / run["without"]["frames_per_s"]
        for run in runs
        if "frames_per_s" in run["with"] and "frames_per_s" in run["without"]
    ]

    def median(which: str) -> float | None:
        values = [run[which]["frames_per_s"] for run in runs if "frames_per_s" in run[which]]
        return statistics.median(values) if values else None

    return {
        "without_frames_per_s": median("without"),
        "with_frames_per_s": median("with"),
        "ratio": statistics.median(ratios) if ratios else None,
        "ratios": ratios,
        "runs": runs,
    }


def print_report(report: dict[str, Any]) -> None:
    runs = report["runs"]

    flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in DERIVED.items())
    print(
        f"\ncoinfeed derived-data bench ({report['elapsed_s']:.0f} s) on "
        f"{stream_title(report['stream'])}; {report['rounds']} round(s), sink jsonl:/dev/null"
    )
    rows = [
        ("(1) coinfeed run frames/s", fmt(report["without_frames_per_s"]),
         per_round(runs, "without", "frames_per_s", ",.0f"), ""),
        (f"(2) + {flags}", fmt(report["with_frames_per_s"]),
         per_round(runs, "with", "frames_per_s", ",.0f"), ""),
        ("    ratio (2)/(1), median per round", fmt(report["ratio"], ".2f"),
         "  ".join(fmt(r, ".2f") for r in report["ratios"]), TARGET),
        ("    frames dropped (1)", "", per_round(runs, "without", "frames_dropped", ",.0f"), ""),
        ("    frames dropped (2)", "", per_round(runs, "with", "frames_dropped", ",.0f"), ""),
    ]  # fmt: skip
    print_figures(rows)
    print(
        "- bench.py's end-to-end timing; the order of (1) and (2) alternates per round. "
        f"Load average (1 min) at start / end: {report['load_avg_1m'][0]:.2f} / "
        f"{report['load_avg_1m'][1]:.2f} on {os.cpu_count()} logical cores"
    )
    for index, run in enumerate(runs, start=1):
        for which in ("without", "with"):
            if "error" in run[which]:
                print(f"- round {index} {which}: {run[which]['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_stream_arguments(parser, rounds=5)
    args = parse_stream_arguments(parser, argv)
    started, load_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="coinfeed-bench-derived-") as tmp:
        workdir = Path(tmp)
        stream = prepare_stream(args.frames, workdir, args.peer_dir, "auto")
        progress(f"stream: {stream['source']}, {stream['frames']:,} frames")
        figures = measure(args.rounds, stream, workdir)
    report: dict[str, Any] = {
        "stream": stream,
        "rounds": args.rounds,
        "settings": DERIVED,
        "target": TARGET,
        **figures,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "elapsed_s": time.monotonic() - started,
    }
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if report["ratio"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
