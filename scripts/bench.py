#!/usr/bin/env python
"""coinfeed benchmarks: throughput next to bare receive loops and cryptofeed, latency, recovery.

Figures, each printed next to its target where it has one (targets are shown, not asserted):

1. **the stream**: the throughput runs serve *the peer-bench stream* (``../shared/peer-bench/``:
   ``gen_frames.py -n N --seed 20261128``, byte for byte the stream ``compare.sh`` measures
   cryptofeed on; its cached ``frames.jsonl`` is reused when it holds at least N frames: the
   generator's first N frames do not depend on ``-n``), or ``harness.generate_frames`` (a
   look-alike) when the generator is not there. Source, frame count and sha256 are reported.
2. **end-to-end frames/s**: ``coinfeed run`` (a child process, sink ``jsonl:/dev/null``, the
   default transport or ``--transport``) consumes the N frames served at full speed on loopback
   (``harness.py serve-stream``); timed from the server receiving the hello to the first
   ``/metrics`` answer (polled every 20 ms) whose ``coinfeed_messages_received_total`` +
   ``coinfeed_frames_dropped_total`` reaches N; the rate counts processed frames only.
3. **bare loops frames/s**, one per transport (``direct``, ``websockets``, ``trio-websocket``):
   a child process connects with that client, sends the hello and only counts messages (no
   decoding), on the same stream, in the same rounds (order alternating). The end-to-end ratio
   is taken per round against the bare loop of the transport the end-to-end run used.
4. **cryptofeed** (``--peer``): ``../shared/peer-bench/compare.sh --rounds R --coinfeed
   .venv/bin/coinfeed`` as a subprocess; its results JSON gives cryptofeed's and coinfeed's
   frames/s, the per-round ratio and peak RSS. Off by default: its first run needs PyPI.
5. **receive-to-sink latency** at fixed rates (simulator child process, coinfeed in this
   process): per live trade, from the moment the transport hands its socket read to coinfeed
   (a wrapper around ``receive_batch``) to (a) the processor handing the event to the sink hub
   (``Processor.emit``) and (b) the sink's ``write_batch`` being called (includes the sink's
   batching: ``sink_flush_interval``, 0.5 s by default).
6. **reconnect time**: simulator in this process, ``sim.disconnect_all()`` every 2 s; samples of
   ``Connection.observe_reconnect`` (connection lost to first frame of the next connection).
   ``healthy_after`` is set to 1 s so each drop is a first retry (no backoff growth).
7. **trade-gap recovery time**: same setup, ``sim.faults.skip_next("trade", symbol, 3)`` every
   second; from the processor emitting the ``pending`` trade gap to it emitting ``recovered``
   (backfill delivered), default recovery settings.

Medians over rounds; ``--json PATH`` writes everything, with a description of the machine.
Default run about 1.5 min (``--peer`` adds about 20 s once its venv exists), ``--quick`` about
30 s.

    .venv/bin/python scripts/bench.py [--quick] [--rounds 3] [--frames 200000] [--peer]
        [--transport direct|websockets|trio-websocket] [--json bench.json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (
    BARE_TRANSPORTS,
    Child,
    free_port,
    generate_frames,
    metric_sum,
    parse_metrics,
    start_coinfeed,
    start_simulator,
)

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT.parent / "shared" / "peer-bench"
TARGETS = {
    "end_to_end_ratio": ">= 0.8 x bare loop",
    "latency_p99_ms_5000": "< 1 ms p99 at 5,000 frames/s",
    "reconnect_median_s": "< 1 s median",
    "recovery_p95_ms": "< 500 ms p95",
}
SIM_SYMBOLS = "BITSTAMP_SPOT_BTC_USD,COINBASE_SPOT_ETH_USD,BINANCE_SPOT_SOL_USDT"
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
VERSIONS_OF = ("coinfeed", "trio", "websockets", "trio-websocket", "msgspec", "h11", "httpx")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


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


def prepare_stream(frames: int, workdir: Path, peer_dir: Path, choice: str) -> dict[str, Any]:
    """The throughput stream (``choice``: auto, peer-bench, built-in) and where it comes from."""
    note = None
    if choice != "built-in":
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


def run_bare(stream: dict[str, Any], transport: str, workdir: Path) -> dict[str, Any]:
    """One bare-loop run: frames/s from the client's hello to its N-th message."""
    frames = stream["frames"]
    server, port = start_stream_server(stream, workdir / "server-bare.log")
    client: Child | None = None
    try:
        client = Child(
            [sys.executable, str(Path(__file__).parent / "harness.py"), "bare-client",
             "--url", f"ws://127.0.0.1:{port}/v1/", "--frames", str(frames),
             "--transport", transport],
            log=workdir / f"bare-{transport}.log", stdout_pipe=True,
        )  # fmt: skip
        result = json.loads(client.read_lines(1, timeout=150)[0])
    finally:
        if client is not None:
            client.stop(grace=5)
        server.stop(grace=5)
    seconds = result["ended"] - result["started"]
    return {"frames_per_s": frames / seconds, "seconds": seconds,
            "cpu_share": result["cpu_seconds"] / seconds}  # fmt: skip


def run_end_to_end(stream: dict[str, Any], transport: str | None, workdir: Path) -> dict[str, Any]:
    """One ``coinfeed run`` on the stream: frames/s from the hello to the N-th frame counted."""
    frames = stream["frames"]
    server, port = start_stream_server(stream, workdir / "server-e2e.log")
    http_port = free_port()
    args = [
        "--ws-url", f"ws://127.0.0.1:{port}/v1/", "--rest-url", "http://127.0.0.1:9",
        "--symbols", ",".join(stream["symbols"]), "--types", "trade,quote,book",
        "--sink", "jsonl:/dev/null", "--http", f"127.0.0.1:{http_port}",
        "--log-level", "WARNING", "--stats-interval", "3600",
    ]  # fmt: skip
    if transport is not None:
        args += ["--transport", transport]
    coinfeed = start_coinfeed(args, log=workdir / "coinfeed-e2e.log")
    try:
        hello = float(server.read_lines(1, timeout=60)[0].split()[1])
        counted, dropped, last_change, last_counted = 0.0, 0.0, time.monotonic(), -1.0
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as client:
            while True:
                metrics = parse_metrics(client.get("/metrics").text)
                now = time.monotonic()
                counted = metric_sum(metrics, "coinfeed_messages_received_total")
                dropped = metric_sum(metrics, "coinfeed_frames_dropped_total")
                if counted + dropped >= frames:
                    break
                if counted != last_counted:
                    last_counted, last_change = counted, now
                elif now - last_change > STALL_SECONDS:
                    raise RuntimeError(f"coinfeed stalled at {counted:.0f} of {frames} frames")
                time.sleep(POLL_SECONDS)
        seconds = now - hello
    finally:
        code = coinfeed.stop(grace=15)
        server.stop(grace=5)
    # Dropped frames were read but never processed: they end the run but do not count.
    return {"frames_per_s": counted / seconds, "seconds": seconds, "frames_processed": counted,
            "frames_dropped": dropped, "exit_code": code}  # fmt: skip


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
# cryptofeed: ../shared/peer-bench/compare.sh
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
    rounds: int, peer_dir: Path, transport: str, explicit: bool, timeout: float
) -> dict[str, Any]:
    """``compare.sh --rounds R --coinfeed .venv/bin/coinfeed``, bounded by ``timeout``; the
    figures of the results JSON it wrote, or why there are none. Never raises for its own sake."""
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
                for line in lines:
                    output.append(line.decode(errors="replace"))
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
# In-process service with probes, for (3), (4) and (5)
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class StampingWebSocket:
    """Wraps a coinfeed WebSocket: stamps each trade's receive time (by uuid) as it is read."""

    inner: Any
    received: dict[str, float]

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        batch: list[str | bytes] = await self.inner.receive_batch(room)
        now = time.perf_counter()
        for message in batch:
            text = message if isinstance(message, str) else message.decode()
            at = text.find('"uuid":"')
            if at >= 0 and text.startswith('{"type":"trade"'):
                self.received[text[at + 8 : at + 44].lower()] = now
        return batch

    async def send(self, message: str | bytes) -> None:
        await self.inner.send(message)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class StampingTransport:
    inner: Any
    received: dict[str, float]

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> Any:
        return StampingWebSocket(await self.inner.connect(nursery, url, headers=headers),
                                 self.received)  # fmt: skip


@attrs.define(eq=False)
class TimingSink:
    """An in-memory sink (runs on the event loop) that times each live trade's write."""

    received: dict[str, float]
    to_write: list[float]
    measuring: Callable[[], bool]
    name: str = "timing"
    blocking: bool = False

    def write_batch(self, events: list[Any]) -> None:
        now = time.perf_counter()
        for event in events:
            uuid = getattr(event, "uuid", None)
            if uuid is not None and event.source == "ws":
                at = self.received.pop(uuid, None)
                if at is not None and self.measuring():
                    self.to_write.append(now - at)

    def close(self) -> None:
        pass


def build_service(
    ws_url: str, rest_url: str, symbols: str, transport: str | None, **overrides: Any
) -> tuple[Any, dict[str, float], TimingSink, list[float], list[Any]]:
    """An in-process Service with a stamping transport, a timing sink and an emit probe."""
    from coinfeed.config import Settings
    from coinfeed.service import Service

    values: dict[str, Any] = {
        "ws_url": ws_url, "rest_url": rest_url, "symbols": tuple(symbols.split(",")),
        "types": ("trade", "quote", "book"), "http": None, "stats_interval": 3600.0,
    }  # fmt: skip
    if transport is not None:
        values["transport"] = transport
    values.update(overrides)
    received: dict[str, float] = {}
    to_emit: list[float] = []
    emitted: list[Any] = []
    sink = TimingSink(received, [], lambda: True)
    service = Service.build(Settings(**values), sinks=[sink], handle_signals=False)
    service.connection.transport = StampingTransport(service.connection.transport, received)
    original_emit = service.processor.emit

    async def probed_emit(events: list[Any]) -> None:
        now = time.perf_counter()
        for event in events:
            uuid = getattr(event, "uuid", None)
            if uuid is not None and event.source == "ws":
                at = received.get(uuid)
                if at is not None and sink.measuring():
                    to_emit.append(now - at)
            elif getattr(event, "data_type", None) is not None:
                emitted.append((now, event))
        await original_emit(events)

    service.processor.emit = probed_emit
    return service, received, sink, to_emit, emitted


async def measure_latency(
    rate: float, seconds: float, transport: str | None, workdir: Path
) -> dict[str, Any]:
    """Latency at a fixed simulator rate: simulator child process, service in this process."""
    simulator, urls = start_simulator(
        ["--rate", str(rate), "--seed", "5", "--symbols", SIM_SYMBOLS],
        log=workdir / f"simulator-{rate:.0f}.log",
    )
    try:
        service, _received, sink, to_emit, _ = build_service(
            urls["ws_url"], urls["rest_url"], SIM_SYMBOLS, transport
        )
        warm = [False]
        sink.measuring = lambda: warm[0]
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await trio.sleep(1.5)  # connect, snapshots, first batches
            warm[0] = True
            await trio.sleep(seconds)
            warm[0] = False
            service.status.request_shutdown("bench over")
    finally:
        simulator.stop(grace=5)

    def summary(samples: list[float]) -> dict[str, Any]:
        return {"samples": len(samples),
                **{f"p{q}_ms": (v * 1000 if (v := percentile(samples, q)) is not None else None)
                   for q in (50, 90, 99)}}  # fmt: skip

    return {"rate": rate, "seconds": seconds, "to_sink_handoff": summary(to_emit),
            "to_sink_write": summary(sink.to_write)}  # fmt: skip


async def measure_faults(rounds: int, transport: str | None) -> dict[str, Any]:
    """Reconnect and trade-gap recovery times against an in-process simulator."""
    from coinfeed.events import GapEvent
    from coinfeed.simulator import SimulatorConfig, open_simulator

    reconnects: list[float] = []
    recoveries: list[float] = []
    rest_seconds: list[float] = []
    symbols = SIM_SYMBOLS.split(",")
    async with open_simulator(SimulatorConfig(rate=1000, seed=9, symbols=tuple(symbols))) as sim:
        service, _, _, _, emitted = build_service(
            sim.ws_url, sim.rest_url, SIM_SYMBOLS, transport, healthy_after=1.0
        )
        service.connection.observe_reconnect = reconnects.append
        service.recovery.observe_seconds = rest_seconds.append
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await trio.sleep(1.5)
            for _ in range(rounds):
                await sim.disconnect_all()
                await trio.sleep(2.0)
            await trio.sleep(2.0)  # reconnect backfills done: each gap is measured alone
            for index in range(rounds):
                sim.faults.skip_next("trade", symbols[index % len(symbols)], 3)
                await trio.sleep(1.0)
            await trio.sleep(1.5)
            service.status.request_shutdown("bench over")
    pending: dict[str, deque[float]] = {}
    outcomes: dict[str, int] = {}
    for at, event in emitted:
        if not isinstance(event, GapEvent) or event.data_type != "trade":
            continue
        if event.reason != "sequence":
            continue
        if event.status == "pending":
            pending.setdefault(event.symbol_id, deque()).append(at)
        else:
            outcomes[event.status] = outcomes.get(event.status, 0) + 1
            queue = pending.get(event.symbol_id)
            if queue and event.status == "recovered":
                recoveries.append(at - queue.popleft())
    return {
        "reconnect": {
            "disconnects": rounds, "samples": len(reconnects),
            "median_s": statistics.median(reconnects) if reconnects else None,
            "max_s": max(reconnects, default=None),
        },
        "recovery": {
            "gaps_injected": rounds, "samples": len(recoveries), "outcomes": outcomes,
            "median_ms": (v * 1000 if (v := percentile(recoveries, 50)) is not None else None),
            "p95_ms": (v * 1000 if (v := percentile(recoveries, 95)) is not None else None),
            "rest_window_median_ms": (statistics.median(rest_seconds) * 1000
                                      if rest_seconds else None),
        },
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Machine and report
# ---------------------------------------------------------------------------------------------


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def git_state() -> str | None:
    """Commit of the checkout, ``-dirty`` if tracked files changed (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe_machine() -> dict[str, Any]:
    """CPU, memory, Python build, OS, load average (start; ``load_avg_end`` is added at the end)
    and the versions of the libraries measured."""
    cpu_model = None
    for line in read_text("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            cpu_model = value.strip()
            break
    memory = re.search(r"^MemTotal:\s+(\d+) kB", read_text("/proc/meminfo"), re.MULTILINE)
    distribution = re.search(r'^PRETTY_NAME="?([^"\n]*)', read_text("/etc/os-release"), re.M)
    versions: dict[str, str | None] = {}
    for name in VERSIONS_OF:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    build_number, build_date = platform.python_build()
    return {
        # kept for readers of earlier reports
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "cpu_model": cpu_model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_gib": round(int(memory.group(1)) / 1024**2, 1) if memory else None,
        "python_build": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "build": f"{build_number}, {build_date}",
            "compiler": platform.python_compiler(),
            "interpreter": base,
        },
        "os": {
            "system": platform.system(),
            "kernel": platform.release(),
            "distribution": distribution.group(1) if distribution else None,
            "platform": platform.platform(),
        },
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "versions": versions,
        "coinfeed_checkout": git_state(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    build, system = machine["python_build"], machine["os"]
    load = "/".join(f"{v:.2f}" for v in machine["load_avg_start"])
    end = machine.get("load_avg_end")
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    return (
        f"machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores, "
        f"{machine['memory_total_gib']} GiB; {system['distribution'] or system['system']}, "
        f"kernel {system['kernel']}; {build['implementation']} {build['version']} "
        f"({build['build']}, {build['compiler']}, {build['interpreter']})\n"
        f"load average (1/5/15 min) {load} at start"
        + (f", {'/'.join(f'{v:.2f}' for v in end)} at end" if end else "")
        + f"\nversions: {versions}; checkout {machine['coinfeed_checkout']}"
    )


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


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_clients(report: dict[str, Any]) -> None:
    t = report["throughput"]
    stream, peer = t["stream"], t["peer"]
    which = (
        "the peer-bench stream"
        if stream["source"] == "peer-bench"
        else "the built-in stream (harness.generate_frames, not the peer-bench bytes)"
    )
    same = ", the reference stream" if stream["same_as_peer_reference"] else ""
    print(
        f"\nthroughput on {which}: {stream['frames']:,} frames, {stream['avg_frame_bytes']} B "
        f"average, sha256 {stream['sha256'][:16]}{same}; {t['rounds']} round(s)"
    )
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
        print("- cryptofeed not measured: run with --peer (../shared/peer-bench/compare.sh)")
    if stream["source"] != "peer-bench":
        print(f"- stream: {stream['origin']}")


def print_table(report: dict[str, Any]) -> None:
    t = report["throughput"]
    lat = {entry["rate"]: entry for entry in report["latency"]}
    dropped = [int(r["frames_dropped"]) if "frames_dropped" in r else "failed"
               for r in t["end_to_end_runs"]]  # fmt: skip
    rows = [
        (f"(1) end-to-end frames/s (coinfeed run, {t['transport']})",
         fmt(t["end_to_end_frames_per_s"]), f"frames dropped per run: {dropped}"),
        (f"(2) bare {t['transport']} loop frames/s", fmt(t["bare_frames_per_s"]), ""),
        ("    ratio (1)/(2), median per round", fmt(t["ratio"], ".2f"),
         TARGETS["end_to_end_ratio"]),
    ]  # fmt: skip
    for rate, entry in sorted(lat.items()):
        hand, write = entry["to_sink_handoff"], entry["to_sink_write"]
        target = TARGETS["latency_p99_ms_5000"] if rate == 5000 else ""
        rows.append(
            (
                f"(3) receive->sink hand-off @ {rate:,.0f}/s p50/p99 ms",
                f"{fmt(hand['p50_ms'], '.3f')} / {fmt(hand['p99_ms'], '.3f')}",
                target,
            )
        )
        rows.append((f"    receive->sink write_batch @ {rate:,.0f}/s p50/p99 ms",
                     f"{fmt(write['p50_ms'], '.1f')} / {fmt(write['p99_ms'], '.1f')}",
                     "(includes sink batching)"))  # fmt: skip
    rec, gap = report["reconnect"], report["recovery"]
    rows.append(
        (
            "(4) reconnect, median / max s",
            f"{fmt(rec['median_s'], '.3f')} / {fmt(rec['max_s'], '.3f')}",
            TARGETS["reconnect_median_s"],
        )
    )
    rows.append(("(5) trade-gap recovery, median / p95 ms",
                 f"{fmt(gap['median_ms'], '.0f')} / {fmt(gap['p95_ms'], '.0f')}",
                 TARGETS["recovery_p95_ms"]))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\ncoinfeed bench ({report['elapsed_s']:.0f} s)")
    print(machine_line(report["machine"]))
    print_clients(report)
    print(f"\n{'figure':<{width}}  {'measured':>17}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>17}  {target}")


async def run_in_process(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    latency = []
    for rate in args.rates:
        progress(f"latency at {rate:,.0f} frames/s for {args.latency_seconds} s")
        latency.append(await measure_latency(rate, args.latency_seconds, args.transport, workdir))
    progress(f"reconnect and recovery, {args.fault_rounds} rounds each")
    faults = await measure_faults(args.fault_rounds, args.transport)
    return {"latency": latency, **faults}


def default_transport() -> str:
    """The transport ``coinfeed run`` uses without ``--transport``."""
    from coinfeed.config import Settings

    env = os.environ.get("COINFEED_TRANSPORT")
    return env.lower() if env else str(attrs.fields(Settings).transport.default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smallest settings (about 30 s)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (3)")
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="stream length (200,000, the peer-bench stream; 40,000 with --quick)",
    )
    parser.add_argument(
        "--stream",
        choices=("auto", "peer-bench", "built-in"),
        default="auto",
        help="auto: the peer-bench stream if its generator is there (default)",
    )
    parser.add_argument("--rates", default=None, help="latency rates (1000,5000,10000)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="per rate (5)")
    parser.add_argument("--fault-rounds", type=int, default=None, help="disconnects/gaps (10)")
    parser.add_argument(
        "--transport",
        default=None,
        choices=BARE_TRANSPORTS,
        help="coinfeed run --transport (default: its own, direct); the "
        "end-to-end ratio is against this transport's bare loop",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also run ../shared/peer-bench/compare.sh (cryptofeed; its first run needs PyPI)",
    )
    parser.add_argument("--peer-dir", type=Path, default=PEER_DIR, help=f"({PEER_DIR})")
    parser.add_argument(
        "--peer-timeout", type=float, default=900.0, help="seconds allowed for compare.sh (900)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.frames = args.frames or (40_000 if quick else PEER_STREAM["frames"])
    args.rates = [
        float(r) for r in (args.rates or ("1000,5000" if quick else "1000,5000,10000")).split(",")
    ]
    args.latency_seconds = args.latency_seconds or (2.0 if quick else 5.0)
    args.fault_rounds = args.fault_rounds or (3 if quick else 10)
    transport = args.transport or default_transport()

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    warnings: Counter[str] = Counter()
    logger.add(lambda m: warnings.update([m.record["message"]]), level="WARNING")
    started = time.monotonic()
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="coinfeed-bench-") as tmp:
        workdir = Path(tmp)
        stream = prepare_stream(args.frames, workdir, args.peer_dir, args.stream)
        progress(
            f"stream: {stream['source']}, {stream['frames']:,} frames, sha256 "
            f"{stream['sha256'][:16]} ({stream['origin']})"
        )
        progress(
            f"throughput: {args.rounds} round(s): bare {', '.join(BARE_TRANSPORTS)} and "
            f"coinfeed run ({transport})"
        )
        throughput = measure_throughput(
            args.rounds, stream, transport, args.transport is not None, workdir
        )
        if args.peer:
            throughput["peer"] = run_peer(
                args.rounds, args.peer_dir, transport, args.transport is not None, args.peer_timeout
            )
        else:
            throughput["peer"] = {"ran": False, "ok": False, "reason": "not requested (--peer)"}
        throughput["table"] = client_rows(throughput)
        in_process = trio.run(run_in_process, args, workdir)
    machine["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    report: dict[str, Any] = {
        "transport": transport,
        "machine": machine,
        "settings": {
            "quick": quick,
            "rounds": args.rounds,
            "frames": args.frames,
            "stream": args.stream,
            "peer": args.peer,
            "rates": args.rates,
            "latency_seconds": args.latency_seconds,
            "fault_rounds": args.fault_rounds,
        },
        "targets": TARGETS,
        "throughput": throughput,
        **in_process,
        "in_process_warnings": dict(warnings),
        "elapsed_s": time.monotonic() - started,
    }
    print_table(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    measured = (
        any(
            "error" not in run for loop in throughput["bare_loops"].values() for run in loop["runs"]
        )
        or throughput["end_to_end_frames_per_s"] is not None
    )
    return 0 if measured or throughput["peer"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
