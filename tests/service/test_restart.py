"""Across a restart: a SIGKILLed coinfeed, started again on its state_dir, loses no trade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trio

from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.coinfeed_process import start_coinfeed, stop_gracefully
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
    db, state, log = tmp_path / "trades.db", tmp_path / "state", tmp_path / "coinfeed.log"
    async with open_simulator(SimulatorConfig(rate=1500, seed=21)) as sim:
        args = [
            "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--symbols", ",".join(SYMBOLS),
            "--types", "trade", "--sink", f"sqlite:{db}", "--http", "off",
            "--state-dir", str(state), "--recovery-pause", "0.01", "--log-format", "json",
        ]  # fmt: skip
        first = await start_coinfeed(args, log)
        try:
            with trio.fail_after(20):
                while len(stored_trades(db)) < 500 or not (state / "checkpoint.json").exists():
                    await trio.sleep(0.1)
            await trio.sleep(1.5)  # a checkpoint newer than the first trades
        finally:
            first.kill()  # SIGKILL: no shutdown, no final checkpoint
            await first.wait()
        before_restart = stored_trades(db)
        await trio.sleep(3)  # the outage: the market goes on
        second = await start_coinfeed(args, log)
        try:
            with trio.fail_after(30):
                while ("BITSTAMP_SPOT_BTC_USD", "recovered") not in set(restart_gaps(db)):
                    await trio.sleep(0.2)
            await trio.sleep(1.5)
            sim.pause_market()
            await trio.sleep(1.5)  # the last live trades reach the sink
            await stop_gracefully(second, log)
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
        truth = {t.uuid.lower(): t.time_exchange for s in SYMBOLS for t in sim.truth.trades(s)}

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
