"""Everything the WebSocket skipped (gaps, a dropped connection) is in REST history."""

from __future__ import annotations

import itertools
from datetime import timedelta

import attrs
import httpx
import trio
from simclient import BTC, ETH, collect, connect, drain, scope

from coinfeed.core.protocol import Trade, format_time, parse_time
from coinfeed.core.rest_protocol import RestTrade, rest_trades_decoder
from coinfeed.simulator import PROFILES, SimulatorConfig, open_simulator


async def _history(rest: httpx.AsyncClient, symbol: str, start: str, end: str) -> list[RestTrade]:
    """[start, end] inclusive, split at UTC midnights (CoinAPI windows lie within one day)."""
    rows: list[RestTrade] = []
    t, stop, window_start = parse_time(start), parse_time(end), start
    while True:
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        last = midnight >= stop
        window_end = end if last else format_time(midnight)
        params = {"time_start": window_start, "time_end": window_end}
        r = await rest.get(f"/v1/trades/{symbol}/history", params=params | {"limit": 100_000})
        assert r.status_code == 200, r.text
        rows += rest_trades_decoder.decode(r.content)
        if last:
            break
        t, window_start = midnight, format_time(midnight)
    tail = await rest.get(f"/v1/trades/{symbol}/history", params={"time_start": end, "limit": 1})
    return rows + [t for t in rest_trades_decoder.decode(tail.content) if t.time_exchange == end]


async def test_trades_skipped_or_missed_while_disconnected_are_all_in_rest_history() -> None:
    gaps = attrs.evolve(PROFILES["gaps"], skip_probability=0.03)
    config = SimulatorConfig(rate=20_000, faults=gaps)
    hello = scope(["trade", "quote"], [f"{BTC}$", f"{ETH}$"])
    runs: list[list[Trade]] = []
    async with open_simulator(config) as sim:
        async with connect(sim, hello) as ws:
            runs.append([m for m in await collect(ws, count=800) if isinstance(m, Trade)])
            await sim.disconnect_all()
        await trio.sleep(0.2)  # the market moves on while nobody is connected
        async with connect(sim, hello) as ws:
            first = await collect(ws, count=800)
            sim.pause_market()
            runs.append([m for m in first + await drain(ws, idle=0.1) if isinstance(m, Trade)])
        skipped = sum(c.skipped_of("trade") for c in sim.truth.connections.values())
        holes_total = 0
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            for symbol in (BTC, ETH):
                ws_runs = [[t for t in run if t.symbol_id == symbol] for run in runs]
                start, end = ws_runs[0][0].time_exchange, ws_runs[1][-1].time_exchange
                rest_rows = await _history(rest, symbol, start, end)
                truth = [t for t in sim.truth.trades(symbol) if start <= t.time_exchange <= end]
                assert rest_rows == truth
                position = {t.uuid: i for i, t in enumerate(rest_rows)}
                ws_uuids = [t.uuid.lower() for run in ws_runs for t in run]
                assert set(ws_uuids) <= set(position)
                holes = 0
                for run in ws_runs:  # each sequence gap is exactly the REST trades in between
                    for a, b in itertools.pairwise(run):
                        between = position[b.uuid.lower()] - position[a.uuid.lower()] - 1
                        assert between == b.sequence - a.sequence - 1
                        holes += between
                offline = (
                    position[ws_runs[1][0].uuid.lower()] - position[ws_runs[0][-1].uuid.lower()]
                )
                assert offline > 1  # trades produced while disconnected
                holes_total += holes
                assert len(rest_rows) == len(ws_uuids) + holes + offline - 1
        assert 0 < holes_total <= skipped  # skips after a run's last trade are not holes
