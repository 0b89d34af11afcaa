"""The service against the simulator with the Parquet sink: the history DuckDB reads holds what
the JSON Lines sink of the same run holds, books rebuild exactly, and kill -9 leaves whole files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.observability.http import MAX_BOOK_DEPTH
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.sinks.parquet_history import book_at
from tests.coinfeed_process import child_environment
from tests.helpers import SYMBOLS, settle, wait_for


def jsonl_events(path: Path) -> list[dict[str, object]]:
    # parse_float=str: the digits exactly as the line holds them.
    return [json.loads(line, parse_float=str) for line in path.read_text().splitlines()]


def parquet(directory: Path, kind: str) -> str:
    return f"read_parquet('{directory}/kind={kind}/**/*.parquet', hive_partitioning = true)"


async def test_duckdb_reads_every_trade_of_the_run_once_with_the_same_digits(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    history, lines = tmp_path / "history", tmp_path / "events.jsonl"
    async with open_simulator(SimulatorConfig(rate=3000, seed=21, faults="gaps")) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS,
            sinks=(f"jsonl:{lines}", f"parquet:{history}"), stale_after=2.0,
            recovery_pause=0.02, sink_flush_interval=0.2, parquet_roll_seconds=0.5,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.connected, 5, "connected")
            # Files appear while it runs (rolls of 0.5 s), not only at shutdown.
            await wait_for(
                lambda: any(history.glob("kind=trade/*/*/*.parquet")), 5, "a first trade file"
            )
            await trio.sleep(1.5)
            service.status.request_shutdown("test over")
    events = jsonl_events(lines)
    trades = {e["uuid"]: (e["price"], e["size"]) for e in events if e["kind"] == "trade"}
    assert len(trades) > 500
    stored = duckdb.sql(f"SELECT uuid, price, size FROM {parquet(history, 'trade')}").fetchall()
    assert len(stored) == len({uuid for uuid, _, _ in stored}), "no trade twice"
    assert {uuid: (price, size) for uuid, price, size in stored} == trades
    for kind in ("quote", "book", "gap"):
        expected = sum(1 for e in events if e["kind"] == kind)
        [(count,)] = duckdb.sql(f"SELECT count(*) FROM {parquet(history, kind)}").fetchall()
        assert count == expected, kind
    assert sum(1 for e in events if e["kind"] == "gap") > 0, "the gaps profile makes gaps"


async def test_the_book_rebuilt_at_the_last_event_is_what_api_books_showed_after_gaps(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    history = tmp_path / "history"
    shown: dict[str, dict[str, Any]] = {}
    async with open_simulator(SimulatorConfig(rate=2000, seed=8, faults="gaps")) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS, types=("trade", "book"),
            sinks=(f"parquet:{history}",), stale_after=2.0, recovery_pause=0.02,
            sink_flush_interval=0.1, parquet_roll_seconds=0.3,
            http=ListenAddress("127.0.0.1", 0),
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        books = service.processor.books
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await trio.sleep(3.0)  # 1 % of the frames skipped: book gaps and resyncs
            await settle(sim, service)
            assert service.http_url is not None
            async with httpx.AsyncClient(base_url=service.http_url) as client:
                for symbol in SYMBOLS:
                    answer = await client.get(f"/api/books/{symbol}?depth={MAX_BOOK_DEPTH}")
                    shown[symbol] = json.loads(answer.text, parse_float=str, parse_int=str)
            service.status.request_shutdown("test over")
    [(last,)] = duckdb.sql(f"SELECT max(received_at) FROM {parquet(history, 'book')}").fetchall()
    assert isinstance(last, datetime)
    resynced = duckdb.sql(
        f"SELECT count(*) FROM {parquet(history, 'gap')} WHERE data_type = 'book'"
        " AND status = 'recovered'"
    ).fetchall()[0][0]
    assert resynced > 0, "the run should have resynced books"
    for symbol in SYMBOLS:
        api = shown[symbol]
        assert api["state"] == "synced" and api["asks"] and api["bids"], symbol
        live = books.get(symbol)
        assert live is not None and len(api["asks"]) + len(api["bids"]) == live.level_count
        rebuilt = book_at(history, symbol, last).as_json()
        # The API's numbers parsed as their text: the sequence too.
        assert (rebuilt["state"], str(rebuilt["sequence"])) == ("synced", api["sequence"]), symbol
        # Every level, with the same digits (/api/books writes prices as JSON numbers).
        assert rebuilt["asks"] == api["asks"], symbol
        assert rebuilt["bids"] == api["bids"], symbol
    # The command prints the same book.
    done = await trio.run_process(
        [sys.executable, "-m", "coinfeed", "book", str(history), SYMBOLS[0], "--at",
         last.isoformat(), "--json", "--depth", "5"],
        capture_stdout=True, capture_stderr=True, env=child_environment(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    printed = json.loads(done.stdout)
    api = shown[SYMBOLS[0]]
    assert printed["state"] == "synced" and str(printed["sequence"]) == api["sequence"]
    assert printed["asks"] == api["asks"][:5]
    assert printed["bids"] == api["bids"][:5]
    assert [Decimal(p) for p, _ in printed["asks"]] == sorted(
        Decimal(p) for p, _ in printed["asks"]
    )


async def test_kill_9_leaves_only_whole_files_that_duckdb_reads(tmp_path: Path) -> None:
    history = tmp_path / "history"
    command = [sys.executable, "-m", "coinfeed", "demo", "--sink", f"parquet:{history}",
               "--parquet-roll-seconds", "0.5", "--http", "off", "--faults", "gaps",
               "--log-level", "WARNING"]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while len(list(history.glob("kind=*/*/*/*.parquet"))) < 10:
                await trio.sleep(0.05)
        await trio.sleep(1.23)  # somewhere in the middle of a roll
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    found = list(history.glob("kind=*/*/*/*.parquet"))
    for path in found:  # each one whole: DuckDB reads its footer and every row
        duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
    [(trades,)] = duckdb.sql(f"SELECT count(*) FROM {parquet(history, 'trade')}").fetchall()
    assert trades > 0
    # The next start deletes what the kill left half written, and appends new files.
    with trio.fail_after(60):
        demo = await trio.run_process(
            [*command, "--duration", "1.5"], env=child_environment(), capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert demo.returncode == 0, demo.stderr.decode()
    assert list((history / ".coinfeed-tmp").iterdir()) == []
    assert len(list(history.glob("kind=*/*/*/*.parquet"))) > len(found)
