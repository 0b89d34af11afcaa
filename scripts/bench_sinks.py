"""Throughput of each sink's ``write_batch`` on a realistic, seeded event mix.

Prints events/s for ``jsonl`` to a file, ``sqlite`` and ``redis`` (Redis Streams; this script
starts its own ``redis-server`` on a free loopback port and stops it after), next to the baseline
measured in the same run, ``jsonl`` to /dev/null, as a ratio. Each figure is the median of
several rounds; each round writes the same events in batches of ``--batch`` (the default
``sink_batch_size``) to a fresh file/database/Redis. The mix: 45 % book events (a tenth of them
snapshots of 20 levels a side, the rest deltas), 35 % trades, 20 % quotes over 10 symbols, plus
a few gap events. The run stops starting new rounds after about 40 s.

    .venv/bin/python scripts/bench_sinks.py [--events N] [--rounds R] [--batch B] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import free_port

from coinfeed.core.events import BookEvent, Event, GapEvent, QuoteEvent, TradeEvent
from coinfeed.sinks import Sink, open_sink

BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "AVAX", "LINK"]
SYMBOLS = [f"BENCH_SPOT_{base}_USD" for base in BASES]
BUDGET_S = 40.0
AT = "2026-11-28T10:00:00.0000000Z"


def make_events(count: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []

    def price() -> Decimal:
        return Decimal(f"{rng.uniform(100, 60000):.2f}")

    def size() -> Decimal:
        return Decimal(f"{rng.uniform(0, 3):.8f}")

    for sequence in range(1, count + 1):
        symbol = rng.choice(SYMBOLS)
        roll = rng.random()
        if sequence % 5000 == 0:
            events.append(GapEvent(data_type="trade", symbol_id=symbol, reason="sequence",
                                   missing=2, recovery="backfill", status="pending",
                                   received_at=AT))  # fmt: skip
        elif roll < 0.45:
            snapshot = rng.random() < 0.1
            levels = 20 if snapshot else rng.randint(1, 5)
            events.append(BookEvent(symbol_id=symbol, depth="book", sequence=sequence,
                                    time_exchange=AT, is_snapshot=snapshot,
                                    asks=[(price(), size()) for _ in range(levels)],
                                    bids=[(price(), size()) for _ in range(levels)],
                                    source="ws", received_at=AT))  # fmt: skip
        elif roll < 0.80:
            events.append(TradeEvent(symbol_id=symbol, sequence=sequence, time_exchange=AT,
                                     time_coinapi=AT, uuid=str(uuid.UUID(int=rng.getrandbits(128))),
                                     price=price(), size=size(), taker_side="BUY", source="ws",
                                     received_at=AT))  # fmt: skip
        else:
            events.append(QuoteEvent(symbol_id=symbol, sequence=sequence, time_exchange=AT,
                                     time_coinapi=AT, ask_price=price(), ask_size=size(),
                                     bid_price=price(), bid_size=size(), source="ws",
                                     received_at=AT))  # fmt: skip
    return events


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "bench_sinks: redis-server is not installed (apt-get install redis-server)"
        )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with redis.Redis(host="127.0.0.1", port=port) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit("bench_sinks: redis-server did not start") from None
                    time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def time_round(open_fresh: Callable[[], Sink], events: list[Event], batch: int) -> float:
    """Events/s writing ``events`` in batches to a freshly opened sink (close included)."""
    sink = open_fresh()
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    started = time.perf_counter()
    for chunk in batches:
        sink.write_batch(chunk)
    sink.close()
    return len(events) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per sink (median)")
    parser.add_argument("--batch", type=int, default=1000, help="events per write_batch")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    events = make_events(args.events)
    started = time.monotonic()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp, redis_server(Path(tmp)) as url:
        counter = iter(range(1_000_000))

        def fresh(kind: str) -> Callable[[], Sink]:
            def build() -> Sink:
                n = next(counter)
                if kind == "jsonl:/dev/null":
                    return open_sink("jsonl:/dev/null")
                if kind == "jsonl":
                    return open_sink(f"jsonl:{tmp}/events-{n}.jsonl")
                if kind == "sqlite":
                    return open_sink(f"sqlite:{tmp}/events-{n}.sqlite")
                with redis.Redis.from_url(url) as client:
                    client.flushdb()
                return open_sink(url, redis_maxlen=100_000)

            return build

        for kind in ("jsonl:/dev/null", "jsonl", "sqlite", "redis"):
            rates = []
            for _ in range(args.rounds):
                rates.append(time_round(fresh(kind), events, args.batch))
                if time.monotonic() - started > BUDGET_S:
                    break
            results[kind] = statistics.median(rates)
    baseline = results["jsonl:/dev/null"]
    report = {
        "events_per_round": args.events,
        "batch": args.batch,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        "events_per_s": {k: round(v) for k, v in results.items()},
        "ratio_to_jsonl_devnull": {k: round(v / baseline, 3) for k, v in results.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.events} events/round, batches of {args.batch}, median of {args.rounds}")
        for kind, rate in results.items():
            print(f"  {kind:<16} {rate:>12,.0f} events/s   x{rate / baseline:.3f}")
        print(f"  ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
