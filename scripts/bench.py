#!/usr/bin/env python
"""coinfeed benchmarks: throughput against a bare receive loop, latency, reconnect and recovery.

Five figures, each printed next to its target (targets are shown, not asserted):

1. **end-to-end frames/s**: ``coinfeed run`` (a child process, sink ``jsonl:/dev/null``) consumes
   a pre-built stream of N frames served at full speed on loopback (``harness.py serve-stream``);
   timed from the server receiving the hello to the first ``/metrics`` answer (polled every
   20 ms) whose ``coinfeed_messages_received_total`` + ``coinfeed_frames_dropped_total`` reaches N;
   the rate counts processed frames only (dropped ones are reported per run).
2. **bare loop frames/s**: a child process that connects with the same WebSocket library
   (trio-websocket, or websockets' trio client for ``--transport websockets``), sends the hello
   and only counts messages, on the same stream, in the same round. Ratio (1)/(2) per round.
3. **receive-to-sink latency** at fixed rates (simulator child process, coinfeed in this
   process): per live trade, from the moment the transport hands its socket read to coinfeed
   (a wrapper around ``receive_batch``) to (a) the processor handing the event to the sink hub
   (``Processor.emit``) and (b) the sink's ``write_batch`` being called (includes the sink's
   batching: ``sink_flush_interval``, 0.5 s by default).
4. **reconnect time**: simulator in this process, ``sim.disconnect_all()`` every 2 s; samples of
   ``Connection.observe_reconnect`` (connection lost to first frame of the next connection).
   ``healthy_after`` is set to 1 s so each drop is a first retry (no backoff growth).
5. **trade-gap recovery time**: same setup, ``sim.faults.skip_next("trade", symbol, 3)`` every
   second; from the processor emitting the ``pending`` trade gap to it emitting ``recovered``
   (backfill delivered), default recovery settings.

Medians over rounds; ``--json PATH`` writes everything. Default run < 3 min, ``--quick`` < 40 s.

    .venv/bin/python scripts/bench.py [--quick] [--rounds 3] [--frames 100000]
        [--transport trio-websocket|websockets] [--json bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (
    STREAM_SYMBOLS,
    Child,
    free_port,
    metric_sum,
    parse_metrics,
    start_coinfeed,
    start_simulator,
)

TARGETS = {
    "end_to_end_ratio": ">= 0.8 x bare loop",
    "latency_p99_ms_5000": "< 1 ms p99 at 5,000 frames/s",
    "reconnect_median_s": "< 1 s median",
    "recovery_p95_ms": "< 500 ms p95",
}
SIM_SYMBOLS = "BITSTAMP_SPOT_BTC_USD,COINBASE_SPOT_ETH_USD,BINANCE_SPOT_SOL_USDT"
POLL_SECONDS = 0.02
STALL_SECONDS = 8.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# ---------------------------------------------------------------------------------------------
# (1) and (2): throughput on a pre-built stream
# ---------------------------------------------------------------------------------------------


def start_stream_server(frames: int, log: Path) -> tuple[Child, int]:
    server = Child(
        [sys.executable, str(Path(__file__).parent / "harness.py"), "serve-stream",
         "--frames", str(frames), "--timeout", "150"],
        log=log, stdout_pipe=True,
    )  # fmt: skip
    try:
        port = int(server.read_lines(1, timeout=60)[0].split()[1])
    except BaseException:
        server.stop(grace=2)
        raise
    return server, port


def run_bare(frames: int, transport: str, workdir: Path) -> dict[str, Any]:
    """One bare-loop run: frames/s from the client's hello to its N-th message."""
    server, port = start_stream_server(frames, workdir / "server-bare.log")
    client: Child | None = None
    try:
        client = Child(
            [sys.executable, str(Path(__file__).parent / "harness.py"), "bare-client",
             "--url", f"ws://127.0.0.1:{port}/v1/", "--frames", str(frames),
             "--transport", transport],
            log=workdir / "bare.log", stdout_pipe=True,
        )  # fmt: skip
        result = json.loads(client.read_lines(1, timeout=150)[0])
    finally:
        if client is not None:
            client.stop(grace=5)
        server.stop(grace=5)
    seconds = result["ended"] - result["started"]
    return {"frames_per_s": frames / seconds, "seconds": seconds,
            "cpu_share": result["cpu_seconds"] / seconds}  # fmt: skip


def run_end_to_end(frames: int, transport: str | None, workdir: Path) -> dict[str, Any]:
    """One ``coinfeed run`` on the stream: frames/s from the hello to the N-th frame counted."""
    server, port = start_stream_server(frames, workdir / "server-e2e.log")
    http_port = free_port()
    args = [
        "--ws-url", f"ws://127.0.0.1:{port}/v1/", "--rest-url", "http://127.0.0.1:9",
        "--symbols", ",".join(STREAM_SYMBOLS), "--types", "trade,quote,book",
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
    return {"frames_per_s": counted / seconds, "seconds": seconds, "frames_dropped": dropped,
            "exit_code": code}  # fmt: skip


def measure_throughput(
    rounds: int, frames: int, transport: str | None, workdir: Path
) -> dict[str, Any]:
    """Alternate bare and coinfeed runs; medians and the per-round ratio."""
    bare_runs: list[dict[str, Any]] = []
    e2e_runs: list[dict[str, Any]] = []
    ratios: list[float] = []
    for index in range(rounds):
        order = ("bare", "e2e") if index % 2 == 0 else ("e2e", "bare")
        results: dict[str, dict[str, Any]] = {}
        for which in order:
            if which == "bare":
                results[which] = run_bare(frames, transport or "trio-websocket", workdir)
            else:
                results[which] = run_end_to_end(frames, transport, workdir)
            progress(f"round {index + 1}/{rounds} {which:4} "
                     f"{results[which]['frames_per_s']:>10,.0f} frames/s")  # fmt: skip
        bare_runs.append(results["bare"])
        e2e_runs.append(results["e2e"])
        ratios.append(results["e2e"]["frames_per_s"] / results["bare"]["frames_per_s"])
    return {
        "frames": frames,
        "rounds": rounds,
        "bare_frames_per_s": statistics.median(r["frames_per_s"] for r in bare_runs),
        "end_to_end_frames_per_s": statistics.median(r["frames_per_s"] for r in e2e_runs),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "bare_runs": bare_runs,
        "end_to_end_runs": e2e_runs,
    }


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
# Report
# ---------------------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
    t = report["throughput"]
    lat = {entry["rate"]: entry for entry in report["latency"]}
    rows = [
        ("(1) end-to-end frames/s (coinfeed run)", fmt(t["end_to_end_frames_per_s"]),
         f"frames dropped per run: {[int(r['frames_dropped']) for r in t['end_to_end_runs']]}"),
        (f"(2) bare {report['transport']} loop frames/s", fmt(t["bare_frames_per_s"]), ""),
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
    print(f"\ncoinfeed bench ({report['machine']['python']}, {report['machine']['cpus']} cpus, "
          f"{report['elapsed_s']:.0f} s)")  # fmt: skip
    print(f"{'figure':<{width}}  {'measured':>17}  target")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smallest settings (< 40 s)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (3)")
    parser.add_argument("--frames", type=int, default=None, help="stream length (100,000)")
    parser.add_argument("--rates", default=None, help="latency rates (1000,5000,10000)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="per rate (5)")
    parser.add_argument("--fault-rounds", type=int, default=None, help="disconnects/gaps (10)")
    parser.add_argument("--transport", default=None, choices=("trio-websocket", "websockets"),
                        help="passed to coinfeed run --transport (default: its own)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.frames = args.frames or (40_000 if quick else 100_000)
    args.rates = [float(r) for r in (args.rates or ("1000,5000" if quick else
                                                      "1000,5000,10000")).split(",")]  # fmt: skip
    args.latency_seconds = args.latency_seconds or (2.0 if quick else 5.0)
    args.fault_rounds = args.fault_rounds or (3 if quick else 10)

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    warnings: Counter[str] = Counter()
    logger.add(lambda m: warnings.update([m.record["message"]]), level="WARNING")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="coinfeed-bench-") as tmp:
        workdir = Path(tmp)
        progress(f"throughput: {args.rounds} round(s) of {args.frames:,} frames")
        throughput = measure_throughput(args.rounds, args.frames, args.transport, workdir)
        in_process = trio.run(run_in_process, args, workdir)
    report: dict[str, Any] = {
        "transport": args.transport or "trio-websocket",
        "machine": {"python": f"{platform.python_implementation()} {platform.python_version()}",
                    "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "settings": {"quick": quick, "rounds": args.rounds, "frames": args.frames,
                     "rates": args.rates, "latency_seconds": args.latency_seconds,
                     "fault_rounds": args.fault_rounds},
        "targets": TARGETS,
        "throughput": throughput,
        **in_process,
        "in_process_warnings": dict(warnings),
        "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    print_table(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
