#!/usr/bin/env python
"""coinfeed benchmarks: throughput next to bare receive loops and cryptofeed, latency, recovery.

Figures, each printed next to its target where it has one (targets are shown, not asserted):

1. **the stream**: the throughput runs serve *the peer-bench stream* (the optional peer
   benchmark, ``--peer-dir DIR`` or ``COINFEED_PEER_BENCH``, not part of this repository:
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
4. **cryptofeed** (``--peer``): the peer benchmark's ``compare.sh --rounds R --coinfeed
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

``--growth`` runs another section instead, on its own: the cost against the size of the market
(µs per frame and RSS as symbols, book depth and frame size grow; ``scripts/bench_growth.py``
describes it), about 3 minutes for 3 rounds.

Figures 1-4 and the clients table are measured by ``scripts/bench_throughput.py``; this file
holds the command line, the in-process probes behind 5-7, the machine description, the figures
table and the JSON report.

Medians over rounds; ``--json PATH`` writes everything, with a description of the machine.
Default run about 1.5 min (``--peer`` adds about 20 s once its venv exists), ``--quick`` about
30 s.

    .venv/bin/python scripts/bench.py [--quick] [--rounds 3] [--frames 200000] [--peer]
        [--transport direct|websockets|trio-websocket] [--json bench.json]
    .venv/bin/python scripts/bench.py --growth [--rounds 3] [--quick] [--json growth.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
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
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_growth import default_cases, measure_growth, print_growth
from bench_throughput import (
    PEER_DIR,
    PEER_DIR_ENV,
    PEER_STREAM,
    ROOT,
    client_rows,
    fmt,
    measure_throughput,
    prepare_stream,
    print_clients,
    progress,
    run_peer,
)
from harness import BARE_TRANSPORTS, start_simulator

TARGETS = {
    "end_to_end_ratio": ">= 0.8 x bare loop",
    "latency_p99_ms_5000": "< 1 ms p99 at 5,000 frames/s",
    "reconnect_median_s": "< 1 s median",
    "recovery_p95_ms": "< 500 ms p95",
}
SIM_SYMBOLS = "BITSTAMP_SPOT_BTC_USD,COINBASE_SPOT_ETH_USD,BINANCE_SPOT_SOL_USDT"
VERSIONS_OF = ("coinfeed", "trio", "websockets", "trio-websocket", "msgspec", "h11", "httpx")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


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
        # The batch waits for this loop before coinfeed sees it, so it is inside the figure:
        # only trades are searched, and bytes are not decoded whole.
        for message in batch:
            if isinstance(message, str):
                if message.startswith('{"type":"trade"'):
                    at = message.find('"uuid":"')
                    if at >= 0:
                        self.received[message[at + 8 : at + 44].lower()] = now
            elif message.startswith(b'{"type":"trade"'):
                at = message.find(b'"uuid":"')
                if at >= 0:
                    self.received[message[at + 8 : at + 44].decode().lower()] = now
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
        "state_dir": None,  # a single in-process run: nothing to restart from
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
    from coinfeed.core.events import GapEvent
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
            # Gaps of one symbol end in the order they were opened: each final event closes the
            # oldest pending one, whatever its outcome (only recovered ones are timed).
            queue = pending.get(event.symbol_id)
            if queue:
                opened = queue.popleft()
                if event.status == "recovered":
                    recoveries.append(at - opened)
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


def run_growth(args: argparse.Namespace) -> int:
    """``--growth``: the cost-against-market-size table alone, and its JSON."""
    started = time.monotonic()
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="coinfeed-bench-") as tmp:
        growth = measure_growth(args.rounds, Path(tmp), default_cases(0.25 if args.quick else 1.0))
    machine["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"\ncoinfeed bench --growth ({time.monotonic() - started:.0f} s)")
    print(machine_line(machine))
    print_growth(growth)
    if args.json is not None:
        report = {"machine": machine, "growth": growth}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    measured = any(row["cost"] is not None for row in growth["cases"])
    return 0 if measured else 1


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
        help="also run the peer benchmark's compare.sh (cryptofeed; its first run needs PyPI)",
    )
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=PEER_DIR,
        help="a checkout of the optional peer benchmark (gen_frames.py, compare.sh); "
        f"default: ${PEER_DIR_ENV}, else none (the built-in stream, no cryptofeed)",
    )
    parser.add_argument(
        "--peer-timeout", type=float, default=900.0, help="seconds allowed for compare.sh (900)"
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="only the cost-against-market-size table (symbols, book depth, frame size)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    for name in ("rounds", "frames", "latency_seconds", "fault_rounds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0, got {value}")
    args.rounds = args.rounds or (1 if quick else 3)
    if args.growth:
        return run_growth(args)
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
