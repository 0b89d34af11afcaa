#!/usr/bin/env python
"""coinfeed against cryptofeed 2.4.1 on the same CoinAPI stream, from this repository alone.

Each round runs, in alternating order, ``scripts/cryptofeed_client.py`` (cryptofeed 2.4.1 on
uvloop, a CoinAPI feed written the way cryptofeed's exchange modules are, callbacks that only
count) and ``coinfeed run --sink jsonl:/dev/null`` (all of its work), each against a fresh
``harness.py serve-stream`` serving the same frames at full speed on loopback. Both are timed
from the server receiving the hello: cryptofeed to its N-th callback, coinfeed to the first
``/metrics`` answer (polled every 20 ms) counting N frames. The figure to quote is the median of
the per-round ratios.

cryptofeed lives in its own venv, built on first use with the interpreter running this script
(the same build on both sides: two builds of one Python version can differ a lot in speed) from
``scripts/cryptofeed-requirements.txt``, under ``${TMPDIR:-/tmp}/coinfeed-cryptofeed-<hash>``;
building it needs PyPI. The stream is the peer benchmark's reference stream when its
generator is at hand (``--peer-dir`` or ``COINFEED_PEER_BENCH``), else the built-in look-alike
(same mix and symbol count, other bytes).

    .venv/bin/python scripts/bench_cryptofeed.py [--rounds 5] [--frames 200000] [--json F]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import (
    add_stream_arguments,
    client_on_stream,
    fmt,
    parse_stream_arguments,
    per_round,
    prepare_stream,
    print_figures,
    progress,
    run_end_to_end,
)

SCRIPTS = Path(__file__).resolve().parent
REQUIREMENTS = SCRIPTS / "cryptofeed-requirements.txt"


def cryptofeed_python() -> Path:
    """The cryptofeed venv's interpreter, built first if missing (needs PyPI)."""
    pins = REQUIREMENTS.read_bytes()
    key = hashlib.sha256(pins + sys.executable.encode()).hexdigest()[:10]
    venv = Path(tempfile.gettempdir()) / f"coinfeed-cryptofeed-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    progress(f"building the cryptofeed venv in {venv} (pip, about a minute)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True,
    )  # fmt: skip
    (venv / ".complete").write_text(pins.decode())
    return python


def run_cryptofeed(stream: dict[str, Any], python: Path, workdir: Path) -> dict[str, Any]:
    """One cryptofeed run: frames/s from the server's hello to the N-th callback."""
    frames = stream["frames"]

    def command(url: str) -> list[str]:
        return [str(python), str(SCRIPTS / "cryptofeed_client.py"), "--url", url,
                "--frames", str(frames), "--symbols", ",".join(stream["symbols"])]  # fmt: skip

    with client_on_stream(stream, command, workdir, "cryptofeed") as (server, client):
        hello = float(server.read_lines(1, timeout=60)[0].split()[1])
        done, rss = client.read_lines(2, timeout=150)
        code = client.wait(30)
    seconds = float(done.split()[1]) - hello
    return {"frames_per_s": frames / seconds, "seconds": seconds,
            "peak_rss_bytes": int(rss.split()[1]), "exit_code": code}  # fmt: skip


def measure(rounds: int, stream: dict[str, Any], python: Path, workdir: Path) -> dict[str, Any]:
    clients = {"cryptofeed": lambda: run_cryptofeed(stream, python, workdir),
               "coinfeed": lambda: run_end_to_end(stream, None, workdir)}  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
    for number in range(rounds):
        order = list(clients) if number % 2 == 0 else list(reversed(clients))
        for name in order:
            try:
                run = clients[name]()
            except (RuntimeError, TimeoutError, ValueError, IndexError) as exc:
                run = {"error": f"{type(exc).__name__}: {exc}"}
            runs[name].append(run)
            shown = fmt(run.get("frames_per_s"))
            progress(f"round {number + 1}/{rounds} {name:<10} {shown:>9} frames/s")
    ratios = [
        c["frames_per_s"] / p["frames_per_s"]
        for c, p in zip(runs["coinfeed"], runs["cryptofeed"], strict=True)
        if "frames_per_s" in c and "frames_per_s" in p
    ]
    summary: dict[str, Any] = {"runs": runs, "ratios": ratios,
                               "ratio": statistics.median(ratios) if ratios else None}  # fmt: skip
    for name, client_runs in runs.items():
        rates = [r["frames_per_s"] for r in client_runs if "frames_per_s" in r]
        summary[name] = {
            "frames_per_s": statistics.median(rates) if rates else None,
            "min": min(rates, default=None), "max": max(rates, default=None),
            "complete": f"{len(rates)}/{len(client_runs)}",
        }  # fmt: skip
    summary["coinfeed"]["frames_dropped"] = [r.get("frames_dropped") for r in runs["coinfeed"]]
    for name, client_runs in runs.items():
        rss = [r["peak_rss_bytes"] for r in client_runs if r.get("peak_rss_bytes")]
        summary[name]["peak_rss_bytes"] = statistics.median(rss) if rss else None
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_stream_arguments(parser, rounds=5)
    args = parse_stream_arguments(parser, argv)
    started = time.monotonic()
    python = cryptofeed_python()
    with tempfile.TemporaryDirectory(prefix="coinfeed-vs-cryptofeed-") as tmp:
        workdir = Path(tmp)
        stream = prepare_stream(args.frames, workdir, args.peer_dir, "auto")
        progress(f"stream: {stream['source']}, {stream['frames']:,} frames, sha256 "
                 f"{stream['sha256'][:16]} ({stream['origin']})")  # fmt: skip
        result = measure(args.rounds, stream, python, workdir)
    result["stream"] = {k: v for k, v in stream.items() if k != "symbols"}
    result["elapsed_s"] = time.monotonic() - started
    coin = result["coinfeed"]
    errors = [r["error"] for client in result["runs"].values() for r in client if "error" in r]
    for error in errors:
        print(f"failed run: {error}", file=sys.stderr)
    runs = [
        {"cryptofeed": c, "coinfeed": f}
        for c, f in zip(result["runs"]["cryptofeed"], result["runs"]["coinfeed"], strict=True)
    ]
    ratio_text = fmt(result["ratio"], ".2f")
    if result["ratios"]:
        ratio_text += f" ({min(result['ratios']):.2f}-{max(result['ratios']):.2f})"
    print(
        f"\ncoinfeed against cryptofeed 2.4.1 ({args.rounds} rounds, "
        f"{result['elapsed_s']:.0f} s, stream: {stream['source']}, {stream['frames']:,} frames)"
    )
    rows = [
        (f"{name} frames/s", f"{fmt(result[name]['frames_per_s'])} "
         f"({fmt(result[name]['min'])}-{fmt(result[name]['max'])})",
         per_round(runs, name, "frames_per_s", ",.0f"), "")
        for name in ("cryptofeed", "coinfeed")
    ]  # fmt: skip
    rows.append(("coinfeed / cryptofeed, median per round", ratio_text,
                 "  ".join(f"{r:.2f}" for r in result["ratios"]), ""))  # fmt: skip
    print_figures(rows)
    print(f"frames dropped by coinfeed per run: {coin['frames_dropped']}")
    peaks = {name: result[name]["peak_rss_bytes"] for name in ("cryptofeed", "coinfeed")}
    print("peak RSS, median: " + ", ".join(
        f"{name} {fmt(peak and peak / 1e6, '.1f')} MB" for name, peak in peaks.items()
    ))  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if result["ratios"] else 1


if __name__ == "__main__":
    sys.exit(main())
