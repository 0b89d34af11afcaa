"""Across a restart into Redis: a SIGKILLed coinfeed, started again on its state_dir, backfills
from its checkpoint the trades it may already have written; none is appended twice."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.coinfeed_process import start_coinfeed, stop_gracefully
from tests.helpers import SYMBOLS
from tests.sinks.redisserver import RedisServer, stream


def trades_in(server: RedisServer) -> list[tuple[str, str]]:
    """(uuid, time_exchange) of every entry of the trade streams, duplicates kept."""
    with server.client() as client:
        return [
            (trade["uuid"], trade["time_exchange"])
            for symbol in SYMBOLS
            for _, fields in client.xrange(stream("trade", symbol))
            for trade in [json.loads(fields[b"json"])]
        ]


def restart_gaps(server: RedisServer) -> list[tuple[str, str]]:
    """(symbol, status) of the final gap events of reason ``restart``."""
    with server.client() as client:
        gaps = [
            json.loads(fields[b"json"])
            for symbol in SYMBOLS
            for _, fields in client.xrange(stream("gap", symbol))
        ]
    return [
        (g["symbol_id"], g["status"])
        for g in gaps
        if g["reason"] == "restart" and g["status"] != "pending"
    ]


async def test_sigkill_then_restart_appends_no_trade_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    state, log = tmp_path / "state", tmp_path / "coinfeed.log"
    async with open_simulator(SimulatorConfig(rate=1500, seed=22)) as sim:
        args = [
            "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--symbols", ",".join(SYMBOLS),
            "--types", "trade", "--sink", redis_server.url, "--http", "off",
            "--state-dir", str(state), "--recovery-pause", "0.01", "--log-format", "json",
        ]  # fmt: skip
        first = await start_coinfeed(args, log)
        try:
            with trio.fail_after(20):
                while (
                    len(trades_in(redis_server)) < 500 or not (state / "checkpoint.json").exists()
                ):
                    await trio.sleep(0.1)
            await trio.sleep(1.5)
        finally:
            first.kill()  # SIGKILL: what it wrote after its last checkpoint is written again
            await first.wait()
        await trio.sleep(2)  # the outage: the market goes on
        second = await start_coinfeed(args, log)
        try:
            with trio.fail_after(30):
                while sorted(restart_gaps(redis_server)) != sorted(
                    (symbol, "recovered") for symbol in SYMBOLS
                ):
                    await trio.sleep(0.2)
            sim.pause_market()
            await trio.sleep(1.5)  # the last live trades reach the sink
            await stop_gracefully(second, log)
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
        truth = {t.uuid.lower(): t.time_exchange for s in SYMBOLS for t in sim.truth.trades(s)}

    stored = trades_in(redis_server)
    uuids = [uuid for uuid, _ in stored]
    assert len(uuids) == len(set(uuids)), f"{len(uuids) - len(set(uuids))} trades appended twice"
    first_stored = min(at for _, at in stored)
    expected = {u for u, at in truth.items() if at >= first_stored}
    missing = expected - set(uuids)
    assert not missing, f"{len(missing)} of {len(expected)} trades missing"
