"""Cost against the size of the market: ``bench.py --growth``.

Three series of end-to-end runs, one ``coinfeed run`` child per case on a generated stream
served at full speed on loopback (``harness.py serve-stream``), sink ``jsonl:/dev/null``:

- **symbols**: 10, 100, 1,000 and 5,000 symbols (over 10 exchanges), the reference mix (55 %
  book updates of 1-3 levels on 20-level books, 30 % trades, 15 % quotes);
- **book depth**: 10 symbols whose books hold 50, 1,000 and 10,000 levels per side (full-depth
  ``book`` snapshots), updates of 1-3 levels anywhere in that depth, the same mix;
- **frame size**: book updates only, of 1 level (about 200 B) and of 450 levels (about 20 KB),
  on 10 books of 1,000 levels per side.

Each case's figure is its steady state: frames counted from the first ``/metrics`` poll past the
warm-up (the snapshots and a tenth of the updates) to the poll that sees the whole stream, over
the time between the two. µs per frame is 1,000,000 / that rate; RSS is the child's resident set
at the end of the run (``VmRSS``). Rounds alternate the order of the cases; a series' growth is
the median over rounds of the largest case's cost divided by the smallest one's, in the same
round. For the frame size series the cost is per KB (a 20 KB frame carries 100 times the bytes
of a 200 B one); for the others it is per frame. A run that dropped frames is flagged: its
books went out of sync and skipped work, so its figure flatters.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import fmt, follow_counts, progress, start_stream_server
from harness import Child, free_port, start_coinfeed, status_bytes

GROWTH_TARGET = 1.5
"""Most a series' per-frame (per-KB) cost may rise from its smallest case to its largest."""
EXCHANGES = 10
POLL_SECONDS = 0.1
"""Between /metrics polls: a scrape costs the loop about a millisecond, 1 % at this interval."""
STAMP = "2026-11-28T12:00:00.0000000Z"


@attrs.frozen
class Case:
    """One generated stream: its symbols, book depth and frames."""

    series: str
    label: str
    symbols: int = 10
    depth: int = 20
    """Levels per side of every snapshot; updates land anywhere within this many ticks."""
    update_levels: tuple[int, int] = (1, 3)
    books_only: bool = False
    frames: int = 200_000
    """Frames after the snapshots."""

    @property
    def per_kb(self) -> bool:
        return self.series == "frame size"


def default_cases(scale: float = 1.0) -> list[Case]:
    """The three series; ``scale`` shortens every stream (``--quick``)."""

    def n(frames: int) -> int:
        return max(1_000, int(frames * scale))

    return [
        *(Case("symbols", f"{s:,} symbols", symbols=s, frames=n(200_000))
          for s in (10, 100, 1_000, 5_000)),
        *(Case("book depth", f"{d:,} levels per side", depth=d, frames=n(200_000))
          for d in (50, 1_000, 10_000)),
        Case("frame size", "200 B frames", depth=1_000, update_levels=(1, 1), books_only=True,
             frames=n(200_000)),
        Case("frame size", "20 KB frames", depth=1_000, update_levels=(450, 450),
             books_only=True, frames=n(2_500)),
    ]  # fmt: skip


def symbol_ids(count: int) -> list[str]:
    return [f"GROW{i % EXCHANGES}_SPOT_A{i:05d}_USD" for i in range(count)]


def generate(case: Case, path: Path, seed: int = 11) -> dict[str, Any]:
    """Write the case's stream to ``path``, one frame per line; return its description.

    The text is written directly (not through the protocol records): the 20 KB case has a
    million levels, and the records would make generating it slower than measuring it.
    """
    rng = random.Random(seed)
    symbols = symbol_ids(case.symbols)
    mids = {s: rng.randint(2 * case.depth + 10_000, 5_000_000) for s in symbols}
    sequences = dict.fromkeys(((k, s) for k in ("book", "trade", "quote") for s in symbols), 0)

    def seq(kind: str, symbol: str) -> int:
        sequences[kind, symbol] += 1
        return sequences[kind, symbol]

    def price(ticks: int) -> str:
        return f"{ticks // 100}.{ticks % 100:02d}"

    def size() -> str:
        amount = rng.randint(1, 500_000_000)
        return f"{amount // 100_000_000}.{amount % 100_000_000:08d}"

    def level(ticks: int, text: str) -> str:
        return f'{{"price":{price(ticks)},"size":{text}}}'

    def book(symbol: str, snapshot: bool, asks: list[str], bids: list[str]) -> str:
        return (
            f'{{"type":"book","symbol_id":"{symbol}","sequence":{seq("book", symbol)},'
            f'"time_exchange":"{STAMP}","time_coinapi":"{STAMP}",'
            f'"is_snapshot":{"true" if snapshot else "false"},'
            f'"asks":[{",".join(asks)}],"bids":[{",".join(bids)}]}}'
        )

    written = snapshot_frames = 0
    total_bytes = 0
    with path.open("w") as out:

        def emit(text: str) -> None:
            nonlocal written, total_bytes
            out.write(text)
            out.write("\n")
            written += 1
            total_bytes += len(text)

        for symbol, mid in mids.items():
            emit(book(symbol, True,
                      [level(mid + i, size()) for i in range(1, case.depth + 1)],
                      [level(mid - i, size()) for i in range(1, case.depth + 1)]))  # fmt: skip
        snapshot_frames = written
        low, high = case.update_levels
        for _ in range(case.frames):
            symbol = rng.choice(symbols)
            mid = mids[symbol]
            draw = 0.0 if case.books_only else rng.random()
            if draw < 0.55:
                asks: list[str] = []
                bids: list[str] = []
                for _ in range(rng.randint(low, high)):
                    offset = rng.randint(1, case.depth)
                    amount = "0" if rng.random() < 0.2 else size()
                    if rng.random() < 0.5:
                        asks.append(level(mid + offset, amount))
                    else:
                        bids.append(level(mid - offset, amount))
                emit(book(symbol, False, asks, bids))
            elif draw < 0.85:
                emit(
                    f'{{"type":"trade","symbol_id":"{symbol}","sequence":{seq("trade", symbol)},'
                    f'"time_exchange":"{STAMP}","time_coinapi":"{STAMP}",'
                    f'"uuid":"{rng.getrandbits(128):032x}","price":{price(mid)},'
                    f'"size":{size()},"taker_side":"{rng.choice(("BUY", "SELL"))}"}}'
                )
            else:
                emit(
                    f'{{"type":"quote","symbol_id":"{symbol}","sequence":{seq("quote", symbol)},'
                    f'"time_exchange":"{STAMP}","time_coinapi":"{STAMP}",'
                    f'"ask_price":{price(mid + 1)},"ask_size":{size()},'
                    f'"bid_price":{price(mid - 1)},"bid_size":{size()}}}'
                )
    steady = written - snapshot_frames
    return {"file": str(path), "frames": written, "symbols": symbols,
            "snapshot_frames": snapshot_frames,
            "warm_up": snapshot_frames + steady // 10,
            "avg_frame_bytes": total_bytes / written}  # fmt: skip


def run_case(stream: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One ``coinfeed run`` on a case's stream: steady-state frames/s, drops, RSS."""
    server, port = start_stream_server(stream, workdir / "server-growth.log")
    http_port = free_port()
    config = workdir / "growth.toml"
    # 5,000 symbols would not fit one command-line argument (128 KiB on Linux).
    config.write_text(f"symbols = {json.dumps(stream['symbols'])}\n")
    args = [
        "--config", str(config),
        "--ws-url", f"ws://127.0.0.1:{port}/v1/", "--rest-url", "http://127.0.0.1:9",
        "--types", "trade,quote,book", "--sink", "jsonl:/dev/null",
        "--http", f"127.0.0.1:{http_port}", "--log-level", "WARNING",
        "--stats-interval", "3600",
    ]  # fmt: skip
    coinfeed: Child = start_coinfeed(args, log=workdir / "coinfeed-growth.log")
    start: tuple[float, float] | None = None
    rss = None
    try:
        server.read_lines(1, timeout=60)  # the hello
        for now, counted, dropped in follow_counts(http_port, stream["frames"], POLL_SECONDS):
            if start is None and counted + dropped >= stream["warm_up"]:
                start = (now, counted)
        rss = status_bytes(coinfeed.pid, "VmRSS")
    finally:
        coinfeed.stop(grace=15)
        server.stop(grace=5)
    assert start is not None
    seconds = now - start[0]
    rate = (counted - start[1]) / seconds if seconds > 0 else None
    us = None if not rate else 1e6 / rate
    return {"frames_per_s": rate, "us_per_frame": us,
            "us_per_kb": None if us is None else us * 1000 / stream["avg_frame_bytes"],
            "seconds": seconds, "frames_dropped": dropped, "rss_bytes": rss}  # fmt: skip


def measure_growth(rounds: int, workdir: Path, cases: list[Case] | None = None) -> dict[str, Any]:
    """Every case once per round (order alternating); per-case medians and per-series growth."""
    cases = cases or default_cases()
    streams = []
    for case in cases:
        progress(f"growth: generating {case.label} ({case.series})")
        streams.append(generate(case, workdir / f"growth-{len(streams)}.jsonl"))
    runs: list[list[dict[str, Any]]] = [[] for _ in cases]
    for number in range(rounds):
        order = list(range(len(cases)))
        if number % 2:
            order.reverse()
        for index in order:
            progress(f"growth round {number + 1}/{rounds}: {cases[index].label}")
            try:
                runs[index].append(run_case(streams[index], workdir))
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                runs[index].append({"error": str(exc)})
    table = []
    for case, stream, case_runs in zip(cases, streams, runs, strict=True):
        ok = [r for r in case_runs if "error" not in r]
        cost_key = "us_per_kb" if case.per_kb else "us_per_frame"

        def median(key: str, ok: list[dict[str, Any]] = ok) -> float | None:
            values = [r[key] for r in ok if r.get(key) is not None]
            return statistics.median(values) if values else None

        table.append({
            "series": case.series, "case": case.label, "symbols": case.symbols,
            "depth": case.depth, "avg_frame_bytes": round(stream["avg_frame_bytes"], 1),
            "frames": stream["frames"], "frames_per_s": median("frames_per_s"),
            "us_per_frame": median("us_per_frame"), "us_per_kb": median("us_per_kb"),
            "cost": median(cost_key), "cost_unit": "µs/KB" if case.per_kb else "µs/frame",
            "rss_bytes": median("rss_bytes"),
            "frames_dropped": [r.get("frames_dropped") for r in case_runs],
            "complete": f"{len(ok)}/{len(case_runs)}", "runs": case_runs,
        })  # fmt: skip
    return {"rounds": rounds, "target": GROWTH_TARGET, "cases": table,
            "series": summarize_series(cases, runs, table)}  # fmt: skip


def summarize_series(
    cases: list[Case], runs: list[list[dict[str, Any]]], table: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per series: the largest case's cost over the smallest one's (median of per-round
    ratios) and, for symbols, RSS per added symbol."""
    summary: dict[str, Any] = {}
    for series in dict.fromkeys(case.series for case in cases):
        members = [i for i, case in enumerate(cases) if case.series == series]
        first, last = members[0], members[-1]
        key = "us_per_kb" if cases[first].per_kb else "us_per_frame"
        ratios = [
            b[key] / a[key]
            for a, b in zip(runs[first], runs[last], strict=True)
            if a.get(key) and b.get(key)
        ]
        growth = statistics.median(ratios) if ratios else None
        entry: dict[str, Any] = {
            "growth": growth, "ratios": ratios, "per": "KB" if cases[first].per_kb else "frame",
            "within_target": None if growth is None else growth <= GROWTH_TARGET,
        }  # fmt: skip
        small, large = table[first]["rss_bytes"], table[last]["rss_bytes"]
        if series == "symbols" and small and large:
            added = cases[last].symbols - cases[first].symbols
            entry["rss_bytes_per_symbol"] = (large - small) / added
        summary[series] = entry
    return summary


def print_growth(growth: dict[str, Any]) -> None:
    print(f"\ncost against the size of the market ({growth['rounds']} round(s), medians)")
    header = (f"{'series':<11} {'case':<22} {'frame B':>8} {'frames/s':>9} "
              f"{'µs/frame':>9} {'µs/KB':>7} {'RSS MB':>7}  drops")  # fmt: skip
    print(header)
    for row in growth["cases"]:
        rss = row["rss_bytes"]
        print(f"{row['series']:<11} {row['case']:<22} {row['avg_frame_bytes']:>8,.0f} "
              f"{fmt(row['frames_per_s']):>9} {fmt(row['us_per_frame'], '.2f'):>9} "
              f"{fmt(row['us_per_kb'], '.2f'):>7} "
              f"{fmt(None if rss is None else rss / 2**20, '.0f'):>7}  "
              f"{row['frames_dropped']}")  # fmt: skip
    for series, entry in growth["series"].items():
        growth_text = fmt(entry["growth"], ".2f")
        verdict = {True: "within", False: "OVER", None: "not measured"}[entry["within_target"]]
        line = (f"{series}: cost per {entry['per']}, largest / smallest case "
                f"{growth_text} (per round: {', '.join(f'{r:.2f}' for r in entry['ratios'])}); "
                f"{verdict} the {growth['target']}x target")  # fmt: skip
        if "rss_bytes_per_symbol" in entry:
            line += f"; RSS per added symbol {entry['rss_bytes_per_symbol'] / 1024:,.1f} KiB"
        print(line)
