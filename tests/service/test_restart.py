"""Across a restart: a SIGKILLed coinfeed, started again on its state_dir, loses no trade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.coinfeed_process import kill_and_restart
from tests.helpers import SYMBOLS


def stored_trades(db: Path) -> dict[str, str]:
    """uuid -> time_exchange of every trade in the SQLite sink (empty before it exists)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            return {u.lower(): t for u, t in conn.execute("SELECT uuid, time_exchange FROM trades")}
        except sqlite3.OperationalError:  # the schema is not there yet
            return {}


def restart_gaps(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute("SELECT symbol_id, status FROM gaps WHERE reason = 'restart' ORDER BY id")
        )


async def test_sigkill_then_restart_backfills_the_outage_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "trades.db", tmp_path / "coinfeed.log"
    async with open_simulator(SimulatorConfig(rate=1500, seed=21)) as sim:
        run = await kill_and_restart(
            sim, f"sqlite:{db}", tmp_path, stored=lambda: stored_trades(db),
            recovered=lambda: ("BITSTAMP_SPOT_BTC_USD", "recovered") in set(restart_gaps(db)),
            outage=3,
        )  # fmt: skip
    truth, before_restart = run.truth, run.stored_at_kill

    stored = stored_trades(db)
    first_stored = min(stored.values())
    expected = {u for u, at in truth.items() if at >= first_stored}
    outage = {
        u
        for u, at in truth.items()
        if u not in before_restart and at > max(before_restart.values())
    }
    assert len(outage) > 1000, "the outage should have cost trades"
    missing = expected - stored.keys()
    assert not missing, f"{len(missing)} of {len(expected)} trades missing"
    gaps = restart_gaps(db)
    assert {symbol for symbol, _ in gaps} == set(SYMBOLS)
    assert sorted(status for _, status in gaps) == ["pending"] * len(SYMBOLS) + ["recovered"] * len(
        SYMBOLS
    )
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["message"].startswith("restart checkpoint found") for r in records)
