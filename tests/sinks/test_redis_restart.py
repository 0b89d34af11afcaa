"""Across a restart into Redis: a SIGKILLed coinfeed, started again on its state_dir, backfills
from its checkpoint the trades it may already have written; none is appended twice."""

from __future__ import annotations

import json
from pathlib import Path

from coinfeed.simulator import SimulatorConfig, open_simulator
from tests.coinfeed_process import kill_and_restart
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
    async with open_simulator(SimulatorConfig(rate=1500, seed=22)) as sim:
        run = await kill_and_restart(
            sim, redis_server.url, tmp_path, stored=lambda: trades_in(redis_server),
            recovered=lambda: sorted(restart_gaps(redis_server))
            == sorted((symbol, "recovered") for symbol in SYMBOLS),
            outage=2,
        )  # fmt: skip
    truth = run.truth

    stored = trades_in(redis_server)
    uuids = [uuid for uuid, _ in stored]
    assert len(uuids) == len(set(uuids)), f"{len(uuids) - len(set(uuids))} trades appended twice"
    first_stored = min(at for _, at in stored)
    expected = {u for u, at in truth.items() if at >= first_stored}
    missing = expected - set(uuids)
    assert not missing, f"{len(missing)} of {len(expected)} trades missing"
