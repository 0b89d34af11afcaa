"""Throughput of coinfeed on a pre-built stream, next to bare receive loops and cryptofeed.

Figures 1-4 of ``scripts/bench.py`` and its clients table (bench.py imports this module; it is
not run on its own). The stream is the peer benchmark's (its ``gen_frames.py``, or compare.sh's
cached copy) or the built-in look-alike (``harness.generate_frames``), written
to a file; ``harness.py serve-stream`` serves it at full speed on loopback to one client per
run. Each round runs every bare loop (``harness.py bare-client``, counts messages only) and
``coinfeed run`` (timed by polling its ``/metrics``) as child processes, order alternating;
``--peer`` runs the peer benchmark's ``compare.sh`` and reads the results JSON it wrote. A
failed run is recorded and the others go on.

The peer benchmark (cryptofeed on the same stream) is an optional extra, not part of this
repository: point ``--peer-dir`` or ``COINFEED_PEER_BENCH`` at a checkout of it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BARE_TRANSPORTS,
    Child,
    free_port,
    generate_frames,
    metric_sum,
    parse_metrics,
    start_coinfeed,
    status_bytes,
)

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR_ENV = "COINFEED_PEER_BENCH"
PEER_DIR = Path(os.environ[PEER_DIR_ENV]) if os.environ.get(PEER_DIR_ENV) else None
"""The optional peer benchmark's checkout (gen_frames.py, compare.sh), if one is named."""
POLL_SECONDS = 0.02
STALL_SECONDS = 8.0
PEER_STREAM = {
    "frames": 200_000,
    "seed": 20261128,
    "sha256": "4e40d1af962a4a68ed54fee3fc28aa8ebe3883babeabb935eb0eaaf7aefec521",
}
"""What ``compare.py`` uses (N_FRAMES, SEED, REFERENCE_SHA256); read from it when it is there."""
BUILTIN_SEED = 7
BARE_LOOPS = {
    "direct": "coinfeed's own client (DirectTransport), one receive_batch() per socket read",
    "websockets": "websockets.trio.client, one await ws.recv() per message",
    "trio-websocket": "trio-websocket with coinfeed's buffer sizes, one await per message",
}


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def per_round(runs: list[dict[str, Any]], which: str, key: str, spec: str) -> str:
    """``key`` of the ``which`` run of every round, formatted, side by side."""
    return "  ".join(fmt(run[which].get(key), spec) for run in runs)


def print_figures(rows: list[tuple[str, str, str, str]]) -> None:
    """A table of (figure, median, per round, target) rows under its header."""
    header = ("figure", "median", "per round", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    print()
    for name, median, rounds, target in [header, *rows]:
        print(f"{name:<{widths[0]}}  {median:>{widths[1]}}  {rounds:<{widths[2]}}  {target}")


# ---------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------


def peer_work_dir() -> Path:
    """Where compare.sh keeps its venv, stream and results: ``${TMPDIR:-/tmp}/peer-bench``."""
    return Path(os.path.abspath(os.environ.get("TMPDIR") or "/tmp")) / "peer-bench"


def peer_stream_params(peer_dir: Path) -> dict[str, Any]:
    """N_FRAMES, SEED and REFERENCE_SHA256 as ``compare.py`` sets them (read, not imported)."""
    params = dict(PEER_STREAM)
    try:
        text = (peer_dir / "compare.py").read_text()
    except OSError:
        return params
    for key, name, pattern in (
        ("frames", "N_FRAMES", r"([\d_]+)"),
        ("seed", "SEED", r"(\d+)"),
        ("sha256", "REFERENCE_SHA256", r'"([0-9a-f]{64})"'),
    ):
        found = re.search(rf"^{name}\s*=\s*{pattern}", text, re.MULTILINE)
        if found:
            value = found.group(1)
            params[key] = value if key == "sha256" else int(value.replace("_", ""))
    return params


def describe_stream(path: Path, frames: int) -> dict[str, Any]:
    """sha256 and size of the first ``frames`` lines of ``path`` (each with its newline, so the
    whole of a file of exactly ``frames`` lines) and the symbol ids of the leading snapshots."""
    digest = hashlib.sha256()
    symbols: list[str] = []
    payload = count = 0
    leading = True
    with path.open("rb") as file:
        for line in file:
            if count == frames:
                break
            digest.update(line)
            payload += len(line.rstrip(b"\r\n"))
            count += 1
            if leading:
                frame = json.loads(line)
                leading = frame.get("type") == "book" and frame.get("is_snapshot") is True
                if leading and frame["symbol_id"] not in symbols:
                    symbols.append(frame["symbol_id"])
    if count < frames:
        raise ValueError(f"{path} holds {count} frames, fewer than {frames}")
    return {
        "frames": frames,
        "bytes": payload,
        "avg_frame_bytes": round(payload / frames, 1),
        "sha256": digest.hexdigest(),
        "symbols": symbols,
    }


def peer_stream(frames: int, workdir: Path, peer_dir: Path) -> dict[str, Any]:
    """The first ``frames`` frames of the peer-bench stream: compare.sh's cached file when it
    holds enough frames of the same seed, else generated into ``workdir``."""
    params = peer_stream_params(peer_dir)
    cache = peer_work_dir() / "frames.jsonl"
    path: Path | None = None
    try:
        meta = json.loads(Path(f"{cache}.meta.json").read_text())
        if (
            meta.get("seed") == params["seed"]
            and meta.get("n", 0) >= frames
            and cache.stat().st_size == meta.get("bytes")
        ):
            path, origin = cache, f"reused {cache} (compare.sh's cache, {meta['n']:,} frames)"
    except (OSError, ValueError, AttributeError):
        pass
    command = [
        sys.executable,
        str(peer_dir / "gen_frames.py"),
        "--out",
        str(workdir / "peer-frames.jsonl"),
        "-n",
        str(frames),
        "--seed",
        str(params["seed"]),
    ]
    if path is None:
        progress(
            f"generating the peer-bench stream: gen_frames.py -n {frames} --seed {params['seed']}"
        )
        subprocess.run(
            command,
            check=True,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        path, origin = workdir / "peer-frames.jsonl", "generated into the bench's work dir"
    info = describe_stream(path, frames)
    reference = frames == params["frames"] and info["sha256"] == params["sha256"]
    return {
        "source": "peer-bench",
        **info,
        "file": str(path),
        "origin": origin,
        "generator": f"gen_frames.py -n {frames} --seed {params['seed']}",
        "same_as_peer_reference": reference,
    }


def prepare_stream(
    frames: int, workdir: Path, peer_dir: Path | None, choice: str
) -> dict[str, Any]:
    """The throughput stream (``choice``: auto, peer-bench, built-in) and where it comes from."""
    note = None
    if choice != "built-in" and peer_dir is None:
        if choice == "peer-bench":
            raise FileNotFoundError(f"no peer benchmark named (--peer-dir or {PEER_DIR_ENV})")
        note = "no peer benchmark named"
    elif choice != "built-in" and peer_dir is not None:
        if (peer_dir / "gen_frames.py").is_file() and (peer_dir / "common.py").is_file():
            try:
                return peer_stream(frames, workdir, peer_dir)
            except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                if choice == "peer-bench":
                    raise
                note = f"the peer-bench stream failed ({type(exc).__name__}: {exc})"
        elif choice == "peer-bench":
            raise FileNotFoundError(f"{peer_dir / 'gen_frames.py'} (or common.py) not found")
        else:
            note = f"{peer_dir / 'gen_frames.py'} not found"
    path = workdir / "builtin-frames.jsonl"
    path.write_bytes(
        b"".join(frame + b"\n" for frame in generate_frames(frames, seed=BUILTIN_SEED))
    )
    info = describe_stream(path, frames)
    return {
        "source": "built-in",
        **info,
        "file": str(path),
        "origin": note or "--stream built-in",
        "generator": f"harness.generate_frames({frames}, seed={BUILTIN_SEED})",
        "same_as_peer_reference": False,
    }


# ---------------------------------------------------------------------------------------------
# Throughput: coinfeed run and the bare loops, same stream, same rounds
# ---------------------------------------------------------------------------------------------


def start_stream_server(stream: dict[str, Any], log: Path) -> tuple[Child, int]:
    server = Child(
        [sys.executable, str(Path(__file__).parent / "harness.py"), "serve-stream",
         "--frames-file", stream["file"], "--frames", str(stream["frames"]), "--timeout", "150"],
        log=log, stdout_pipe=True,
    )  # fmt: skip
    try:
        port = int(server.read_lines(1, timeout=60)[0].split()[1])
    except BaseException:
        server.stop(grace=2)
        raise
    return server, port


@contextlib.contextmanager
def client_on_stream(
    stream: dict[str, Any], command: Callable[[str], list[str]], workdir: Path, name: str
) -> Iterator[tuple[Child, Child]]:
    """A fresh stream server and a client child given its URL (``command(url)``, stdout
    piped); both stopped on the way out. Logs: ``server-NAME.log`` and ``NAME.log``."""
    server, port = start_stream_server(stream, workdir / f"server-{name}.log")
    client: Child | None = None
    try:
        client = Child(command(f"ws://127.0.0.1:{port}/v1/"), log=workdir / f"{name}.log",
                       stdout_pipe=True)  # fmt: skip
        yield server, client
    finally:
        if client is not None:
            client.stop(grace=5)
        server.stop(grace=5)


def run_bare(stream: dict[str, Any], transport: str, workdir: Path) -> dict[str, Any]:
    """One bare-loop run: frames/s from the client's hello to its N-th message."""
    frames = stream["frames"]

    def command(url: str) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / "harness.py"), "bare-client",
                "--url", url, "--frames", str(frames), "--transport", transport]  # fmt: skip

    with client_on_stream(stream, command, workdir, f"bare-{transport}") as (_server, client):
        result = json.loads(client.read_lines(1, timeout=150)[0])
    seconds = result["ended"] - result["started"]
    return {"frames_per_s": frames / seconds, "seconds": seconds,
            "cpu_share": result["cpu_seconds"] / seconds}  # fmt: skip


def run_end_to_end(
    stream: dict[str, Any], transport: str | None, workdir: Path, sink: str = "jsonl:/dev/null"
) -> dict[str, Any]:
    """One ``coinfeed run`` on the stream into ``sink``: frames/s from the hello to the N-th
    frame counted."""
    frames = stream["frames"]
    server, port = start_stream_server(stream, workdir / "server-e2e.log")
    http_port = free_port()
    args = [
        "--ws-url", f"ws://127.0.0.1:{port}/v1/", "--rest-url", "http://127.0.0.1:9",
        "--symbols", ",".join(stream["symbols"]), "--types", "trade,quote,book",
        "--sink", sink, "--http", f"127.0.0.1:{http_port}",
        "--log-level", "WARNING", "--stats-interval", "3600",
    ]  # fmt: skip
    if transport is not None:
        args += ["--transport", transport]
    coinfeed = start_coinfeed(args, log=workdir / "coinfeed-e2e.log")
    try:
        hello = float(server.read_lines(1, timeout=60)[0].split()[1])
        *_, (now, counted, dropped) = follow_counts(http_port, frames, POLL_SECONDS)
        seconds = now - hello
        peak_rss = status_bytes(coinfeed.pid, "VmHWM")
    finally:
        code = coinfeed.stop(grace=15)
        server.stop(grace=5)
    # Dropped frames were read but never processed: they end the run but do not count.
    return {"frames_per_s": counted / seconds, "seconds": seconds, "frames_processed": counted,
            "frames_dropped": dropped, "exit_code": code,
            "peak_rss_bytes": peak_rss}  # fmt: skip


def follow_counts(
    http_port: int, frames: int, poll_seconds: float
) -> Iterator[tuple[float, float, float]]:
    """Poll a coinfeed's ``/metrics`` every ``poll_seconds``: ``(time.monotonic(), frames
    processed, frames dropped)`` per answer, up to the first whose sum reaches ``frames``.
    RuntimeError when the count stands still for ``STALL_SECONDS``."""
    last_change, last_counted = time.monotonic(), -1.0
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
        while True:
            metrics = parse_metrics(client.get("/metrics").text)
            now = time.monotonic()
            counted = metric_sum(metrics, "coinfeed_messages_received_total")
            dropped = metric_sum(metrics, "coinfeed_frames_dropped_total")
            yield now, counted, dropped
            if counted + dropped >= frames:
                return
            if counted != last_counted:
                last_counted, last_change = counted, now
            elif now - last_change > STALL_SECONDS:
                raise RuntimeError(f"coinfeed stalled at {counted:.0f} of {frames} frames")
            time.sleep(poll_seconds)


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max frames/s of the runs that completed; µs per frame of the median."""
    rates = [run["frames_per_s"] for run in runs if "error" not in run]
    median = statistics.median(rates) if rates else None
    return {
        "frames_per_s": median,
        "min": min(rates, default=None),
        "max": max(rates, default=None),
        "us_per_frame": ratio(1e6, median),
        "complete": f"{len(rates)}/{len(runs)}",
    }


def measure_throughput(
    rounds: int, stream: dict[str, Any], transport: str, explicit: bool, workdir: Path
) -> dict[str, Any]:
    """Every bare loop and ``coinfeed run`` (with ``transport``; passed on only if ``explicit``)
    once per round, order alternating; medians and the per-round ratio e2e / bare loop of
    ``transport``. A failed run is recorded (``error``) and the others go on."""
    clients = [("bare", name) for name in BARE_TRANSPORTS] + [("e2e", transport)]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {client: [] for client in clients}
    ratios: list[float] = []
    for index in range(rounds):
        got: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, name in clients if index % 2 == 0 else clients[::-1]:
            try:
                if kind == "bare":
                    result = run_bare(stream, name, workdir)
                else:
                    result = run_end_to_end(stream, transport if explicit else None, workdir)
            except Exception as exc:  # one failed run is a figure too; the rest go on
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["round"] = index + 1
            runs[kind, name].append(result)
            got[kind, name] = result
            label = f"bare {name}" if kind == "bare" else f"coinfeed run ({name})"
            figure = (
                f"FAILED: {result['error']}"
                if "error" in result
                else f"{result['frames_per_s']:>10,.0f} frames/s"
            )
            progress(f"round {index + 1}/{rounds} {label:<24} {figure}")
        e2e, bare = got["e2e", transport], got["bare", transport]
        if "error" not in e2e and "error" not in bare:
            ratios.append(e2e["frames_per_s"] / bare["frames_per_s"])
    bare_loops = {
        name: {
            "measures": BARE_LOOPS[name] + "; counts messages, no decoding",
            **summarize_runs(runs["bare", name]),
            "cpu_share": (
                statistics.median(shares)
                if (shares := [r["cpu_share"] for r in runs["bare", name] if "error" not in r])
                else None
            ),
            "runs": runs["bare", name],
        }
        for name in BARE_TRANSPORTS
    }
    e2e_runs = runs["e2e", transport]
    return {
        "frames": stream["frames"],
        "rounds": rounds,
        "transport": transport,
        "bare_frames_per_s": bare_loops[transport]["frames_per_s"],
        "end_to_end_frames_per_s": summarize_runs(e2e_runs)["frames_per_s"],
        "ratio": statistics.median(ratios) if ratios else None,
        "ratios": ratios,
        "bare_runs": runs["bare", transport],
        "end_to_end_runs": e2e_runs,
        "end_to_end": {"transport": transport, **summarize_runs(e2e_runs)},
        "bare_loops": bare_loops,
        "stream": stream,
    }


# ---------------------------------------------------------------------------------------------
# cryptofeed: the peer benchmark's compare.sh
# ---------------------------------------------------------------------------------------------


def coinfeed_executable() -> Path | None:
    for candidate in (
        ROOT / ".venv" / "bin" / "coinfeed",
        Path(sys.executable).parent / "coinfeed",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("coinfeed")
    return Path(found) if found else None


def summarize_peer(data: dict[str, Any]) -> dict[str, Any]:
    """The figures bench.py reports from one compare.sh results JSON."""
    summary = data.get("summary") or {}
    records = data.get("records") or []
    versions = data.get("versions") or {}
    product = data.get("product") or {}
    host = data.get("host") or {}

    def peak(who: str) -> float | None:
        values = [
            r["max_rss_mb"]
            for r in records
            if r.get("run") == who and "error" not in r and r.get("max_rss_mb") is not None
        ]
        return max(values) if values else None

    return {
        "cryptofeed_version": versions.get("cryptofeed"),
        "cryptofeed_frames_per_s": summary.get("cryptofeed_fps"),
        "coinfeed_frames_per_s": summary.get("product_fps"),
        "ratio_per_round": summary.get("ratio_product_to_cryptofeed"),
        "runs": {
            who: f"{sum(r.get('run') == run and 'error' not in r for r in records)}/"
            f"{sum(r.get('run') == run for r in records)}"
            for who, run in (("cryptofeed", "cryptofeed"), ("coinfeed", "product"))
        },
        "peak_rss_mb": {"cryptofeed": peak("cryptofeed"), "coinfeed": peak("product")},
        "failed_runs": data.get("failed_runs"),
        "stream_frames": (data.get("stream") or {}).get("n"),
        "stream_sha256": (data.get("stream") or {}).get("sha256"),
        "same_as_reference_stream": data.get("same_as_reference_stream"),
        "python": {
            "cryptofeed": f"{versions.get('python')} ({versions.get('base')})",
            "coinfeed": f"{product.get('python')} ({product.get('python_base')})",
        },
        "interpreter_note": data.get("interpreter_note"),
        "versions": versions,
        "coinfeed_checkout": product.get("git"),
        "load_avg_1m": [host.get("loadavg_1m_before"), host.get("loadavg_1m_after")],
        "notes": [
            f"round {r.get('round')} {r.get('run')}: {note}"
            for r in records
            for note in r.get("notes") or []
        ],
    }


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM (compare.py stops its runs on it), then SIGKILL its whole session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def run_peer(
    rounds: int, peer_dir: Path | None, transport: str, explicit: bool, timeout: float
) -> dict[str, Any]:
    """``compare.sh --rounds R --coinfeed .venv/bin/coinfeed``, bounded by ``timeout``; the
    figures of the results JSON it wrote, or why there are none. Never raises for its own sake."""
    if peer_dir is None:
        return {
            "ran": False,
            "ok": False,
            "error": f"no peer benchmark named (--peer-dir or {PEER_DIR_ENV})",
        }
    script = peer_dir / "compare.sh"
    exe = coinfeed_executable()
    if not script.is_file():
        return {"ran": False, "ok": False, "error": f"{script} not found"}
    if exe is None:
        return {"ran": False, "ok": False, "error": "no coinfeed executable (.venv/bin/coinfeed)"}
    argv = [str(script), "--rounds", str(rounds), "--coinfeed", str(exe)]
    env = dict(os.environ)
    if explicit:  # coinfeed reads its settings from COINFEED_* too
        env["COINFEED_TRANSPORT"] = transport
    started_wall, started = time.time(), time.monotonic()
    output: list[str] = []
    timed_out = False
    progress(f"peer-bench: {' '.join(argv)} (up to {timeout:.0f} s)")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return {"ran": False, "ok": False, "command": argv, "error": f"could not start: {exc}"}
    code: int | None = None
    try:
        assert proc.stdout is not None
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = started + timeout - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not selector.select(min(left, 1.0)):
                    if proc.poll() is not None:  # exited; a child of its own may hold the pipe
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                *lines, buffer = (buffer + chunk).split(b"\n")
                for raw in lines:
                    output.append(raw.decode(errors="replace"))
                    progress(f"peer | {output[-1]}")
        if buffer:
            output.append(buffer.decode(errors="replace"))
    finally:
        code = stop_process(proc, grace=30 if timed_out else 60)
        if proc.stdout is not None:
            proc.stdout.close()
    result: dict[str, Any] = {
        "ran": True,
        "command": argv,
        "exit_code": code,
        "seconds": time.monotonic() - started,
        "coinfeed_transport": transport,
    }
    if explicit:
        result["env"] = {"COINFEED_TRANSPORT": transport}
    path: Path | None = None
    for line in output:
        if line.startswith("results: "):
            path = Path(line.removeprefix("results: ").strip())
    if path is None:  # the newest results JSON written since the start
        written = [
            p
            for p in (peer_work_dir() / "results").glob("compare-*.json")
            if p.stat().st_mtime >= started_wall - 1
        ]
        path = max(written, key=lambda p: p.stat().st_mtime, default=None)
    data: dict[str, Any] | None = None
    if path is not None:
        try:
            data = json.loads(path.read_text())
            result["results_json"] = str(path)
        except (OSError, ValueError) as exc:
            result["error"] = f"could not read {path}: {exc}"
    if data is not None:
        result.update(summarize_peer(data))
    ok = bool(result.get("cryptofeed_frames_per_s") and result.get("coinfeed_frames_per_s"))
    result["ok"] = ok
    if timed_out:
        result["error"] = f"compare.sh did not finish within {timeout:.0f} s; stopped"
    elif code != 0 and "error" not in result:
        failed = result.get("failed_runs")
        result["error"] = f"compare.sh exited with {code}" + (
            f" ({failed} run(s) failed)" if failed else ""
        )
    elif not ok and "error" not in result:
        result["error"] = "compare.sh wrote no results JSON with both figures"
    if not ok or code != 0:
        result["output_tail"] = output[-40:]
    return result


# ---------------------------------------------------------------------------------------------
# The clients table
# ---------------------------------------------------------------------------------------------


def client_rows(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The clients table: one row per client, frames/s median (min-max), µs/frame, ratios."""
    peer = t.get("peer") or {}
    rows: list[dict[str, Any]] = []

    def add(
        name: str,
        measured_by: str,
        fps: float | None,
        low: float | None,
        high: float | None,
        complete: str,
    ) -> None:
        rows.append(
            {
                "client": name,
                "measured_by": measured_by,
                "frames_per_s": fps,
                "min": low,
                "max": high,
                "us_per_frame": ratio(1e6, fps),
                "complete": complete,
            }
        )

    runs = peer.get("runs") or {}
    for who, name in (
        ("cryptofeed", f"cryptofeed {peer.get('cryptofeed_version')} (uvloop, no-op callbacks)"),
        ("coinfeed", f"coinfeed run, {peer.get('coinfeed_transport')} transport"),
    ):
        spread = peer.get(f"{who}_frames_per_s")
        if spread:
            complete = runs.get(who, str(spread["n"]))
            add(name, "peer-bench", spread["median"], spread["min"], spread["max"], complete)
    e2e = t["end_to_end"]
    add(
        f"coinfeed run, {t['transport']} transport",
        "bench.py",
        e2e["frames_per_s"],
        e2e["min"],
        e2e["max"],
        e2e["complete"],
    )
    for name, loop in t["bare_loops"].items():
        add(
            f"bare {name} loop (counts messages only)",
            "bench.py",
            loop["frames_per_s"],
            loop["min"],
            loop["max"],
            loop["complete"],
        )
    cryptofeed = (peer.get("cryptofeed_frames_per_s") or {}).get("median")
    direct = t["bare_loops"].get("direct", {}).get("frames_per_s")
    for row in rows:
        row["vs_cryptofeed"] = ratio(row["frames_per_s"], cryptofeed)
        row["vs_bare_direct"] = ratio(row["frames_per_s"], direct)
    return rows


def stream_title(stream: dict[str, Any]) -> str:
    """Which stream, its size and digest, in one phrase (for a report's title line)."""
    which = (
        "the peer-bench stream"
        if stream["source"] == "peer-bench"
        else "the built-in stream (harness.generate_frames, not the peer-bench bytes)"
    )
    same = ", the reference stream" if stream["same_as_peer_reference"] else ""
    return (
        f"{which}: {stream['frames']:,} frames, {stream['avg_frame_bytes']} B average, sha256 "
        f"{stream['sha256'][:16]}{same}"
    )


def print_clients(report: dict[str, Any]) -> None:
    t = report["throughput"]
    stream, peer = t["stream"], t["peer"]
    print(f"\nthroughput on {stream_title(stream)}; {t['rounds']} round(s)")
    header = (
        "client",
        "measured by",
        "frames/s, median (min-max)",
        "µs/frame",
        "/cryptofeed",
        "/bare direct",
        "runs",
    )
    lines = [header] + [
        (
            row["client"],
            row["measured_by"],
            f"{fmt(row['frames_per_s'])} ({fmt(row['min'])}-{fmt(row['max'])})",
            fmt(row["us_per_frame"], ".2f"),
            fmt(row["vs_cryptofeed"], ".2f"),
            fmt(row["vs_bare_direct"], ".2f"),
            row["complete"],
        )
        for row in t["table"]
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(
            "  ".join(
                f"{cell:<{w}}" if i < 2 else f"{cell:>{w}}"
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    print(
        "- bare loops only count messages: no decoding, no processing. direct: one "
        "receive_batch() per socket read; websockets, trio-websocket: one await per message."
    )
    shares = ", ".join(
        f"{name} {fmt(loop['cpu_share'], '.2f')}" for name, loop in t["bare_loops"].items()
    )
    print(
        f"- bare loops' CPU, share of one core: {shares} (about 1.00: CPU-bound; well below: "
        "waiting for the stream server, so the figure is a floor)"
    )
    if peer.get("ok"):
        per_round, rss = peer["ratio_per_round"] or {}, peer["peak_rss_mb"]
        print(
            f"- coinfeed/cryptofeed per round (peer-bench, the figure to quote): "
            f"{fmt(per_round.get('median'), '.2f')} ({fmt(per_round.get('min'), '.2f')}-"
            f"{fmt(per_round.get('max'), '.2f')}), {per_round.get('n')} round(s); peak RSS "
            f"cryptofeed {fmt(rss['cryptofeed'], '.1f')} MB, coinfeed "
            f"{fmt(rss['coinfeed'], '.1f')} MB; results {peer.get('results_json')}"
        )
        print(
            "- peer-bench rows: compare.sh's own runs on its 200,000-frame stream "
            f"(sha256 {str(peer.get('stream_sha256'))[:16]}); /cryptofeed of the bench.py rows "
            "divides medians of separate runs"
        )
        if peer.get("error"):
            print(f"- peer-bench: {peer['error']}")
    elif peer.get("ran") or peer.get("error"):
        print(f"- cryptofeed not measured: peer-bench FAILED: {peer.get('error')}")
        for line in peer.get("output_tail", [])[-8:]:
            print(f"    {line}")
    else:
        print("- cryptofeed not measured: run with --peer --peer-dir DIR (the peer benchmark)")
    if stream["source"] != "peer-bench":
        print(f"- stream: {stream['origin']}")


def add_stream_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """``--rounds``, ``--frames``, ``--peer-dir`` and ``--json``: what the one-stream benchmarks
    (bench_record.py, bench_derived.py) take."""
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds ({rounds})")
    parser.add_argument(
        "--frames",
        type=int,
        default=PEER_STREAM["frames"],
        help=f"stream length ({PEER_STREAM['frames']:,}, the peer-bench stream)",
    )
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=PEER_DIR,
        help="a checkout of the optional peer benchmark (its gen_frames.py makes the stream); "
        f"default: ${PEER_DIR_ENV}, else none (the built-in stream)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")


def parse_stream_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """The arguments of :func:`add_stream_arguments`, ``--rounds`` and ``--frames`` above 0."""
    args = parser.parse_args(argv)
    for name in ("rounds", "frames"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be above 0, got {getattr(args, name)}")
    return args
