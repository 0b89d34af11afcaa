"""The service against the simulator with the SQLite sink: every trade lands exactly once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import trio

from coinfeed.config import Settings
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.helpers import SYMBOLS, truth_uuids, wait_for


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
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.connected, 5, "connected")
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
