"""What a ``/metrics`` scrape costs the event loop, at 10 and at 1,000 symbols.

For each size a service is built on a fake feed (no traffic), its symbols spread over 3 or 50
exchanges, every exchange given latency samples (so ``coinfeed_latency_seconds`` has all its
label sets, the part that grows with the market), and its HTTP listener started. A client in a
child process, as Prometheus is, then scrapes ``/metrics`` ``--scrapes`` times, one after the
other, asking for gzip as Prometheus does (``--identity``: plain text). A trio
instrument sums the time of every task step of the event loop meanwhile, less what it sums over
as long a time without scrapes (timers): that difference per scrape is the event-loop time a
scrape costs (the request handling, reading the numbers); the longest single step is the
longest stall. The baseline, measured in the same run on the same registry,
is what the handler did before the text moved to a worker thread: ``generate_latest`` on the
loop (its median time per call).

    .venv/bin/python scripts/bench_scrape.py [--scrapes N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from prometheus_client import generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.latency import BUCKETS, Histogram
from coinfeed.main import GIL_SWITCH_INTERVAL
from coinfeed.service import Service

SIZES = ((10, 3), (1000, 50))
"""(symbols, exchanges) of each measured service."""


class _NoFeed:
    """A transport whose connect never completes: the service runs its HTTP side, no feed."""

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> Any:
        await trio.sleep_forever()


class StepClock(trio.abc.Instrument):
    """Sums the duration of every task step, and keeps the longest."""

    def __init__(self) -> None:
        self.total = self.longest = 0.0
        self._started: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._started is None:  # the step that added this instrument
            return
        step = time.perf_counter() - self._started
        self._started = None
        self.total += step
        self.longest = max(self.longest, step)


_CLIENT = """
import sys, httpx
url, encoding = sys.argv[1], sys.argv[2]
with httpx.Client(headers={"Accept-Encoding": encoding}) as client:
    for line in sys.stdin:
        for _ in range(int(line)):
            response = client.get(url)
            response.raise_for_status()
        print(len(response.content), response.num_bytes_downloaded, flush=True)
"""
"""The scraper, in a process of its own as Prometheus is: in a thread of the measured process
its own work (parsing each answer) would hold the GIL and lengthen the loop's steps."""


class _Lines:
    """Lines from a child's pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise RuntimeError("the scraping client exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


async def measure(
    symbol_count: int, exchanges: int, scrapes: int, encoding: str = "gzip"
) -> dict[str, Any]:
    symbols = tuple(f"EX{i % exchanges}_SPOT_S{i}_USD" for i in range(symbol_count))
    settings = Settings(
        symbols=symbols, http=ListenAddress("127.0.0.1", 0), state_dir=None,
        ws_url="ws://127.0.0.1:9/v1/", rest_url="http://127.0.0.1:9", sinks=("jsonl:/dev/null",),
        stats_interval=3600.0, connect_timeout=3600.0,
    )  # fmt: skip
    service = Service.build(settings, transport=_NoFeed(), handle_signals=False)
    latency = service.processor.latency
    assert latency is not None
    for stage in ("exchange_to_coinapi", "coinapi_to_coinfeed"):
        for exchange in {f"EX{i}" for i in range(exchanges)}:
            counts = [0] * (len(BUCKETS) + 1)
            counts[5] = 3
            latency.histograms[(stage, exchange)] = Histogram(counts, 0.03, 3)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        url = f"{service.http_url}/metrics"

        client = await trio.lowlevel.open_process(
            [sys.executable, "-c", _CLIENT, url, encoding],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None
        orders, answers = client.stdin, _Lines(client.stdout)

        async def scrape(times: int) -> list[int]:
            """(body bytes, bytes on the wire) after ``times`` scrapes one after the other."""
            await orders.send_all(b"%d\n" % times)
            return [int(n) for n in (await answers.next()).split()]

        await scrape(3)  # warm-up
        clock = StepClock()
        trio.lowlevel.add_instrument(clock)
        started = time.perf_counter()
        size, wire_size = await scrape(scrapes)
        elapsed = time.perf_counter() - started
        trio.lowlevel.remove_instrument(clock)
        # What the loop does anyway over as long (timers, the connect attempt's task): not the
        # scrapes' cost.
        idle = StepClock()
        trio.lowlevel.add_instrument(idle)
        await trio.sleep(elapsed)
        trio.lowlevel.remove_instrument(idle)
        on_loop = []
        for _ in range(scrapes):
            t = time.perf_counter()
            generate_latest(service.metrics.registry)
            on_loop.append(time.perf_counter() - t)
        await orders.aclose()
        await client.wait()
        service.status.request_shutdown("bench over")
    return {
        "symbols": symbol_count,
        "exchanges": exchanges,
        "body_bytes": size,
        "wire_bytes": wire_size,
        "loop_ms_per_scrape": round((clock.total - idle.total) / scrapes * 1000, 3),
        "idle_loop_ms": round(idle.total * 1000, 3),
        "longest_step_ms": round(clock.longest * 1000, 3),
        "wall_ms_per_scrape": round(elapsed / scrapes * 1000, 3),
        "baseline_render_on_loop_ms": round(statistics.median(on_loop) * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes per size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--identity",
        action="store_true",
        help="ask for plain text (default: gzip, as Prometheus asks)",
    )
    args = parser.parse_args(argv)
    if args.scrapes <= 0:
        parser.error(f"--scrapes must be above 0, got {args.scrapes}")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as coinfeed run and demo have it
    encoding = "identity" if args.identity else "gzip"
    rows = [trio.run(measure, n, exchanges, args.scrapes, encoding) for n, exchanges in SIZES]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"/metrics, {args.scrapes} scrapes one after the other per size, {encoding}")
    print(
        "  symbols  exchanges   bytes  on wire  loop ms/scrape  longest step ms  before: on loop ms"
    )
    for r in rows:
        print(f"  {r['symbols']:>7}  {r['exchanges']:>9}  {r['body_bytes']:>6}  "
              f"{r['wire_bytes']:>7}  {r['loop_ms_per_scrape']:>14}  {r['longest_step_ms']:>15}  "
              f"{r['baseline_render_on_loop_ms']:>18}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
