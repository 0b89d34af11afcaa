"""Throughput and size on disk of each sink on a realistic, seeded event mix.

Prints, side by side, events/s for ``jsonl`` to a file, ``sqlite``, ``parquet``, ``redis``
(Redis Streams; this script starts its own ``redis-server`` on a free loopback port and stops it
after), ``redis+cluster`` (a Redis Cluster of 3 primaries with a replica each, on loopback, started
with the test suite's launcher, ``tests/sinks/redistopology.py``) and ``redis+cluster+wait`` (the
same with ``redis_wait_replicas`` 1), next to the baseline measured in the same run, ``jsonl`` to
/dev/null, as a ratio; and
for the sinks that write files, bytes on disk per event. Each rate is the median of several
rounds; each round writes the same events, to every sink in turn, in batches of ``--batch`` (the
default ``sink_batch_size``) to a fresh file/database/directory/Redis (after one untimed warm-up
round of the first sink), then ``flush(True)`` for a sink
that buffers (Parquet writes its files then: the timing includes them), then ``close``. The
open is not timed. Bytes on disk, measured after ``close`` (median over rounds, over the events
of a round): the JSON Lines file; the SQLite database plus its ``-wal`` if one is left; the
``*.parquet`` files under the Parquet directory (not its lock file or ``.coinfeed-tmp``).
The two cluster sinks are also given as the median of their per-round ratios to ``redis``.
Parquet runs with the default roll settings, so a round of fewer than ``parquet_roll_rows``
events is one roll: one file per kind and symbol, whose size per event depends on how many
rows a roll holds. Redis keeps the stream in memory (no persistence here): no bytes on disk.

The mix: 45 % book events (a tenth of them snapshots of 20 levels a side, the rest deltas),
35 % trades, 20 % quotes over 10 symbols, plus a gap event every 5,000th. The run stops starting
new rounds after about 40 s.

    .venv/bin/python scripts/bench_sinks.py [--events N] [--rounds R] [--batch B] [--json [FILE]]

``--json`` alone prints one JSON object instead of the table; ``--json FILE`` prints the table
and writes the JSON object to FILE.

``--stream-rounds N`` adds the question "does the sink keep up with the feed": N rounds of
``coinfeed run`` on bench.py's throughput stream (the peer benchmark's with ``--peer-dir`` or
``COINFEED_PEER_BENCH``, else the built-in look-alike; served at full speed on loopback), each
round once into ``jsonl:/dev/null`` and once into each of ``--stream-sinks`` (a fresh file or
directory per run, order alternating), timed like bench.py's end-to-end figure; it prints the
median frames/s, the median of the per-round ratios to ``jsonl:/dev/null``, and the frames the
raw queue dropped in each run (0 means the sink kept up without a drop).
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
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import redis
from redis.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_throughput import PEER_DIR, prepare_stream, run_end_to_end
from harness import free_port

from coinfeed.core.events import BookEvent, Event, GapEvent, QuoteEvent, TradeEvent
from coinfeed.sinks import Sink, SinkOptions, open_sink
from coinfeed.sinks.parquet import TMP_DIR as PARQUET_TMP_DIR

if TYPE_CHECKING:
    from tests.sinks.redistopology import RedisClusterNodes

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


@contextmanager
def redis_cluster(directory: Path) -> Iterator[RedisClusterNodes]:
    """A throwaway Redis Cluster: 3 primaries, each with a replica, on loopback ports."""
    try:
        from tests.sinks.redistopology import RedisClusterNodes
    except ImportError as exc:  # the launcher lives in the repository's tests/
        raise SystemExit(f"bench_sinks: run from a clone of coinfeed ({exc})") from None
    cluster = RedisClusterNodes(directory / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


CLUSTER_SINKS = ("redis+cluster", "redis+cluster+wait")
"""Compared with ``redis`` (one server) round by round: the sizing note of docs/sinks.md."""
SINKS = (
    "jsonl:/dev/null", "jsonl", "sqlite", "parquet", "redis", "redis+cluster", "redis+cluster+wait"
)  # fmt: skip
"""Measured in this order; the first is the baseline of the ratios."""


def event_mix(events: list[Event]) -> dict[str, int]:
    """How many events of each kind (book events split into snapshots and deltas)."""
    mix = dict.fromkeys(("trade", "quote", "book_snapshot", "book_delta", "gap"), 0)
    for event in events:
        if isinstance(event, BookEvent):
            mix["book_snapshot" if event.is_snapshot else "book_delta"] += 1
        elif isinstance(event, TradeEvent):
            mix["trade"] += 1
        elif isinstance(event, QuoteEvent):
            mix["quote"] += 1
        else:
            mix["gap"] += 1
    return mix


def disk_bytes(kind: str, path: Path | None) -> int | None:
    """What a closed sink left on disk at ``path`` (None for sinks that write no file)."""
    if path is None:
        return None
    if kind == "sqlite":
        files = [path, path.with_name(path.name + "-wal")]
        return sum(file.stat().st_size for file in files if file.exists())
    if kind == "parquet":
        return sum(file.stat().st_size for file in parquet_files(path))
    return path.stat().st_size


def parquet_files(directory: Path) -> list[Path]:
    """The Parquet sink's finished files under ``directory`` (not its temporaries)."""
    return [
        file
        for file in directory.rglob("*.parquet")
        if PARQUET_TMP_DIR not in file.relative_to(directory).parts
    ]


def check_parquet_rows(directory: Path | None, expected: int) -> None:
    """Stop the bench if the Parquet files do not hold every event of the round."""
    assert directory is not None
    rows = sum(pq.read_metadata(file).num_rows for file in parquet_files(directory))
    if rows != expected:
        raise SystemExit(f"bench_sinks: the Parquet files hold {rows} rows, not {expected}")


def check_stream_entries(client: redis.Redis | RedisCluster, expected: int) -> None:
    """Stop the bench if the streams do not hold every event of the round, once."""
    with client:
        keys = list(client.scan_iter("coinfeed:*", _type="STREAM"))
        entries = sum(client.xlen(key) for key in keys)
    if entries != expected:
        raise SystemExit(f"bench_sinks: the streams hold {entries} entries, not {expected}")


def remove(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        shutil.rmtree(path)
    else:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            file.unlink(missing_ok=True)


def time_round(sink: Sink, events: list[Event], batch: int) -> float:
    """Events/s writing ``events`` in batches to a freshly opened sink: a sink that buffers
    (``flush``, Parquet) is then flushed whole, inside the timing; ``close`` is timed too."""
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    flush = getattr(sink, "flush", None)
    started = time.perf_counter()
    for chunk in batches:
        sink.write_batch(chunk)
    if flush is not None:
        flush(True)
    sink.close()
    return len(events) / (time.perf_counter() - started)


def print_table(report: dict[str, Any]) -> None:
    mix = ", ".join(f"{count:,} {kind.replace('_', ' ')}" for kind, count in report["mix"].items())
    print(
        f"{report['events_per_round']:,} events/round, batches of {report['batch']}, "
        f"median of {report['rounds']} rounds\n  mix: {mix}"
    )
    rows = [("sink", "events/s", "ratio", "bytes/event", "rounds")]
    for kind in report["events_per_s"]:
        size = report["bytes_per_event"][kind]
        rows.append((
            kind, f"{report['events_per_s'][kind]:,}",
            f"x{report['ratio_to_jsonl_devnull'][kind]:.3f}",
            "-" if size is None else f"{size:,.1f}", str(report["rounds_run"][kind]),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        right = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        cells = [row[0].ljust(widths[0]), *right]
        print("  " + "   ".join(cells))
    print(
        f"  (ratio: to {SINKS[0]}; bytes/event: on disk after close, - for no file; "
        f"{report['seconds']} s)"
    )
    for kind, ratio in report["ratio_to_redis"].items():
        print(f"  {kind}: x{ratio:.3f} of redis (one server), median of per-round ratios")


STREAM_BASELINE = "jsonl:/dev/null"


STREAM_SINKS = ("jsonl", "sqlite", "parquet")


def measure_stream(
    rounds: int, sinks: list[str], frames: int, peer_dir: Path | None, workdir: Path
) -> dict[str, Any]:
    """``coinfeed run`` on the throughput stream into each sink, ``rounds`` times (see the
    module docstring): median frames/s, per-round ratios to the baseline, drops per run."""
    stream = prepare_stream(frames, workdir, peer_dir, "auto")
    kinds = [STREAM_BASELINE, *sinks]
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for number in range(rounds):
        order = kinds if number % 2 == 0 else kinds[::-1]
        for kind in order:
            target = kind
            if kind != STREAM_BASELINE:
                target = f"{kind}:{workdir / f'stream-{number}.{kind}'}"
            try:
                runs[kind].append(run_end_to_end(stream, None, workdir, sink=target))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                runs[kind].append({"error": f"{type(exc).__name__}: {exc}"})
            remove(Path(target.partition(":")[2]) if kind != STREAM_BASELINE else None)
            print(f"  stream round {number + 1}/{rounds} {kind}: {_run_text(runs[kind][-1])}",
                  file=sys.stderr)  # fmt: skip
    rates = {
        kind: [run["frames_per_s"] for run in values if "error" not in run]
        for kind, values in runs.items()
    }
    ratios = {
        kind: [
            sink["frames_per_s"] / base["frames_per_s"]
            for sink, base in zip(runs[kind], runs[STREAM_BASELINE], strict=True)
            if "error" not in sink and "error" not in base
        ]
        for kind in sinks
    }
    return {
        "source": stream["source"],
        "frames": stream["frames"],
        "rounds": rounds,
        "frames_per_s": {k: round(statistics.median(v)) if v else None for k, v in rates.items()},
        "ratio_to_baseline": {
            k: round(statistics.median(v), 3) if v else None for k, v in ratios.items()
        },
        "frames_dropped": {k: [run.get("frames_dropped") for run in v] for k, v in runs.items()},
        "errors": [run["error"] for values in runs.values() for run in values if "error" in run],
    }


def _run_text(run: dict[str, Any]) -> str:
    if "error" in run:
        return str(run["error"])
    return f"{run['frames_per_s']:,.0f} frames/s, {run['frames_dropped']:,.0f} dropped"


def print_stream(report: dict[str, Any]) -> None:
    print(
        f"coinfeed run on the {report['source']} stream ({report['frames']:,} frames), "
        f"median of {report['rounds']} rounds"
    )
    rows = [("sink", "frames/s", "ratio", "dropped per run")]
    for kind, rate in report["frames_per_s"].items():
        ratio = report["ratio_to_baseline"].get(kind)
        drops = ", ".join(
            f"{d:,.0f}" if d is not None else "-" for d in report["frames_dropped"][kind]
        )
        rows.append((
            kind, "-" if rate is None else f"{rate:,}",
            "x1.000" if kind == STREAM_BASELINE else "-" if ratio is None else f"x{ratio:.3f}",
            drops,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        print("  " + "   ".join(cells))
    for error in report["errors"]:
        print(f"  failed run: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per sink (median)")
    parser.add_argument("--batch", type=int, default=1000, help="events per write_batch")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="alone: print one JSON object instead of the table; with FILE: write it there too",
    )
    parser.add_argument("--stream-rounds", type=int, default=0, metavar="N",
                        help="also run coinfeed on the throughput stream N times per sink "
                             "(0: skip)")  # fmt: skip
    parser.add_argument("--stream-sinks", default="parquet,sqlite", metavar="KIND,...",
                        help="file sinks of --stream-rounds (default: parquet,sqlite)")  # fmt: skip
    parser.add_argument("--stream-frames", type=int, default=200_000, metavar="N",
                        help="frames of the stream (default: 200000, as the peer)")  # fmt: skip
    parser.add_argument("--peer-dir", type=Path, default=PEER_DIR,
                        help="the peer benchmark's checkout, for its stream")  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("events", "rounds", "batch", "stream_frames"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0, got {getattr(args, name)}")
    stream_sinks = [kind.strip() for kind in args.stream_sinks.split(",") if kind.strip()]
    unknown = [kind for kind in stream_sinks if kind not in STREAM_SINKS]
    if unknown or not stream_sinks:
        parser.error(f"--stream-sinks takes some of {', '.join(STREAM_SINKS)}, got {unknown}")
    events = make_events(args.events)
    started = time.monotonic()
    rates: dict[str, list[float]] = {kind: [] for kind in SINKS}
    sizes: dict[str, list[int]] = {kind: [] for kind in SINKS}
    with (
        tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp,
        redis_server(Path(tmp)) as url,
        redis_cluster(Path(tmp)) as cluster,
    ):
        counter = iter(range(1_000_000))

        def fresh(kind: str) -> tuple[Sink, Path | None]:
            """A new sink of ``kind`` and where it writes (None: nowhere on disk)."""
            n = next(counter)
            if kind == "jsonl:/dev/null":
                return open_sink("jsonl:/dev/null"), None
            if kind in ("jsonl", "sqlite"):
                path = Path(tmp) / f"events-{n}.{kind}"
                return open_sink(f"{kind}:{path}"), path
            if kind == "parquet":
                path = Path(tmp) / f"parquet-{n}"
                return open_sink(f"parquet:{path}", SinkOptions()), path
            if kind.startswith("redis+cluster"):
                with cluster.client() as client:
                    client.flushall(target_nodes=RedisCluster.PRIMARIES)
                wait = 1 if kind.endswith("+wait") else 0
                options = SinkOptions(redis_maxlen=100_000, redis_wait_replicas=wait)
                return open_sink(cluster.url, options), None
            with redis.Redis.from_url(url) as client:
                client.flushdb()
            return open_sink(url, SinkOptions(redis_maxlen=100_000)), None

        # One untimed round first: the first sink measured would otherwise pay the warm-up
        # (imports, allocator, caches) and read slower than the sinks after it.
        time_round(fresh(SINKS[0])[0], events, args.batch)
        # Each round measures every sink once, so a machine that slows down mid-run moves all
        # of a round's figures together and the per-round ratios stay comparable.
        for _ in range(args.rounds):
            for kind in SINKS:
                sink, path = fresh(kind)
                rates[kind].append(time_round(sink, events, args.batch))
                if kind == "parquet":
                    check_parquet_rows(path, len(events))
                if kind.startswith("redis"):
                    check_stream_entries(cluster.client() if "cluster" in kind else
                                         redis.Redis.from_url(url), len(events))  # fmt: skip
                size = disk_bytes(kind, path)
                if size is not None:
                    sizes[kind].append(size)
                remove(path)
            if time.monotonic() - started > BUDGET_S:
                break
    results = {kind: statistics.median(values) for kind, values in rates.items()}
    baseline = results[SINKS[0]]
    report: dict[str, Any] = {
        "events_per_round": args.events,
        "batch": args.batch,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        "mix": event_mix(events),
        "events_per_s": {k: round(v) for k, v in results.items()},
        "ratio_to_jsonl_devnull": {k: round(v / baseline, 3) for k, v in results.items()},
        "bytes_per_event": {
            k: round(statistics.median(v) / args.events, 2) if v else None for k, v in sizes.items()
        },
        "rounds_run": {k: len(v) for k, v in rates.items()},
        "ratio_to_redis": {
            kind: round(
                statistics.median(a / b for a, b in zip(rates[kind], rates["redis"], strict=True)),
                3,
            )
            for kind in CLUSTER_SINKS
        },
        "parquet_roll_rows": SinkOptions().parquet_roll_rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.stream_rounds > 0:
        with tempfile.TemporaryDirectory(prefix="bench-sinks-stream-") as tmp:
            report["stream"] = measure_stream(
                args.stream_rounds, stream_sinks, args.stream_frames, args.peer_dir, Path(tmp)
            )
    text = json.dumps(report, indent=2)
    if args.json == "-":
        print(text)
        return 0
    print_table(report)
    if "stream" in report:
        print_stream(report["stream"])
    if args.json is not None:
        Path(args.json).write_text(text + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
