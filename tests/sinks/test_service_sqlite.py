"""The service against the simulator with the SQLite sink: every trade lands exactly once, and
the books rebuilt from ``book_updates`` are the service's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from coinfeed.config import Settings
from coinfeed.core.book import BookState, PriceSize
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.helpers import SYMBOLS, book_from_sqlite, truth_uuids, wait_for


def stored_trades(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:  # a second reader: WAL lets it read while we write
        uuids = [str(u) for (u,) in conn.execute("SELECT uuid FROM trades")]
    conn.close()
    return uuids


async def test_every_simulated_trade_is_in_the_table_exactly_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = tmp_path / "feed.sqlite"
    async with open_simulator(SimulatorConfig(rate=3000, seed=12)) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS, sinks=(f"sqlite:{path}",),
            stale_after=2.0, recovery_pause=0.02, sink_batch_size=200, sink_flush_interval=0.3,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        # Trades made before the hello reached the simulator were never owed to us.
        sim.pause_market()
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.connected, 5, "connected")
            await wait_for(lambda: sim.stats.scope_messages >= 1, 5, "the hello to arrive")
            sim.resume_market()
            await trio.sleep(0.7)
            for symbol in SYMBOLS:  # holes that only a REST backfill can fill
                sim.faults.skip_next("trade", symbol, 3)
            await trio.sleep(0.7)
            await sim.disconnect_all()
            # Written continuously, not only at shutdown.
            await wait_for(lambda: len(stored_trades(path)) > 100, 5, "trades in the database")
            sim.pause_market()
            expected = truth_uuids(sim)
            await wait_for(
                lambda: (
                    set(stored_trades(path)) >= expected and service.recovery.pending_backfills == 0
                ),
                20,
                "every trade in SQLite",
            )
            service.status.request_shutdown("test over")
    stored = stored_trades(path)
    assert len(stored) == len(set(stored)) == len(expected)
    assert set(stored) == expected
    conn = sqlite3.connect(path)
    sources = dict(conn.execute("SELECT source, count(*) FROM trades GROUP BY source"))
    conn.close()
    assert sources.get("rest", 0) > 0, "the backfilled trades should be there too"


def query(path: Path, sql: str, *params: object) -> list[Any]:
    with sqlite3.connect(path) as conn:  # a second reader, as above
        found = conn.execute(sql, params).fetchall()
    conn.close()
    return found


def as_text(top: tuple[list[PriceSize], list[PriceSize]]) -> tuple[list[tuple[str, str]], ...]:
    """Levels as exact text: equal Decimals with other digits (``2.50`` vs ``2.5``) differ."""
    return tuple([(str(price), str(size)) for price, size in side] for side in top)


async def test_the_books_rebuilt_from_book_updates_are_the_services_books(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = tmp_path / "feed.sqlite"
    ws_snapshots = (
        "SELECT count(*) FROM book_updates"
        " WHERE symbol_id = ? AND depth = 'book' AND source = 'ws' AND is_snapshot = 1"
    )
    async with open_simulator(SimulatorConfig(rate=2000, seed=5)) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS, sinks=(f"sqlite:{path}",),
            types=("trade", "book"), stale_after=2.0, recovery_pause=0.02, sink_batch_size=200,
            sink_flush_interval=0.1,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        books = service.processor.books

        def all_synced() -> bool:
            return not books.unsynced_of(SYMBOLS)

        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(all_synced, 5, "every book synced")
            await trio.sleep(0.7)
            for symbol in SYMBOLS:  # book gaps: each book is out of sync until a new snapshot
                sim.faults.skip_next("book", symbol, 3)
            await wait_for(
                lambda: (
                    all_synced()
                    and all(query(path, ws_snapshots, symbol)[0][0] >= 2 for symbol in SYMBOLS)
                ),
                8,
                "every book resynced, its second snapshot in the database",
            )
            await trio.sleep(0.5)  # deltas on the new snapshots
            sim.pause_market()
            counts: list[int] = []

            def all_written() -> bool:
                counts.append(query(path, "SELECT count(*) FROM book_updates")[0][0])
                idle = all(q.depth == 0 for q in service.queue_statistics().values())
                return idle and len(counts) > 10 and counts[-1] == counts[-10]

            await wait_for(all_written, 5, "the sink to write every book event")
            service.status.request_shutdown("test over")
    for symbol in SYMBOLS:
        live = books.get(symbol)
        assert live is not None and live.state is BookState.SYNCED
        expected = live.top(10_000)
        assert expected[0] and expected[1], f"{symbol}: the simulated book should have levels"
        rebuilt = book_from_sqlite(path, symbol).top(10_000)
        assert rebuilt == expected, symbol
        assert as_text(rebuilt) == as_text(expected), symbol
    deltas = query(path, "SELECT count(*) FROM book_updates WHERE is_snapshot = 0")[0][0]
    assert deltas > 100
    # book_snapshots still gets exactly the snapshots (the REST interim views among them).
    assert query(path, "SELECT count(*) FROM book_snapshots") == query(
        path, "SELECT count(*) FROM book_updates WHERE is_snapshot = 1"
    )
    gaps = query(path, "SELECT DISTINCT symbol_id FROM gaps WHERE data_type = 'book'")
    assert {symbol for (symbol,) in gaps} == set(SYMBOLS)
