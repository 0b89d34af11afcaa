"""``open_simulator``: the whole simulator (market, WebSocket, REST, blackhole) in one nursery.

Everything runs in a nursery the context manager owns; leaving the block closes every client
gracefully (close frame 1001), stops hypercorn, then cancels what is left, so when it returns no
task, socket or thread of the simulator remains.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.typing import ASGIFramework
from loguru import logger

from coinfeed.simulator.config import SimulatorConfig
from coinfeed.simulator.faults import (
    BUFFER_OVERFLOW_MESSAGE,
    RestFaults,
    WsFaults,
    malformed_frame,
    oversized_frame,
)
from coinfeed.simulator.hub import Hub
from coinfeed.simulator.market import Market
from coinfeed.simulator.rest import RestApi
from coinfeed.simulator.truth import Truth
from coinfeed.simulator.ws import WsServer, serve_blackhole


@attrs.frozen
class SimulatorStats:
    """A point-in-time copy of the simulator's counters (``sim.stats``)."""

    market_events: int
    ws_connections_open: int
    ws_connections_total: int
    frames_sent: int
    frames_skipped: int
    frames_discarded: int
    heartbeats_sent: int
    frames_injected: int
    buffer_overflows: int
    market_lag_seconds: float
    hello_messages: int
    scope_messages: int
    hello_rate_violations: int
    rest_requests_total: int
    rest_in_flight: int
    rest_peak_in_flight: int
    rest_by_status: dict[int, int]
    rest_faults_injected: int


@attrs.define(eq=False)
class Simulator:
    """A running simulator: URLs, ground truth, fault controls and stats."""

    config: SimulatorConfig
    hub: Hub
    rest: RestApi
    ws_url: str = ""
    rest_url: str = ""
    blackhole_url: str = ""

    @property
    def truth(self) -> Truth:
        """Ground truth: trades, true books, per-connection counters."""
        return self.hub.truth

    @property
    def faults(self) -> WsFaults:
        """WebSocket faults: profile and one-shot triggers (``skip_next`` …)."""
        return self.hub.faults

    @property
    def rest_faults(self) -> RestFaults:
        """REST faults: profile and one-shot triggers (``fail_next``, ``delay_next``)."""
        return self.rest.faults

    @property
    def stats(self) -> SimulatorStats:
        """Counters now (a copy)."""
        totals, hs, rs = self.truth.totals(), self.hub.stats, self.rest.stats
        return SimulatorStats(
            market_events=hs.market_events,
            ws_connections_open=len(self.hub.sessions),
            ws_connections_total=hs.connections_total,
            frames_sent=sum(totals.sent),
            frames_skipped=sum(totals.skipped),
            frames_discarded=totals.discarded,
            heartbeats_sent=totals.heartbeats,
            frames_injected=totals.injected,
            buffer_overflows=hs.buffer_overflows,
            market_lag_seconds=hs.lag_seconds,
            hello_messages=hs.hello_messages,
            scope_messages=hs.scope_messages,
            hello_rate_violations=hs.hello_rate_violations,
            rest_requests_total=rs.requests_total,
            rest_in_flight=rs.in_flight,
            rest_peak_in_flight=rs.peak_in_flight,
            rest_by_status=dict(rs.by_status),
            rest_faults_injected=rs.faults_injected,
        )

    # -- market controls ----------------------------------------------------------------------

    def pause_market(self) -> None:
        """Stop producing events (the book and trades stay as they are)."""
        self.hub.paused = True

    def resume_market(self) -> None:
        """Produce events again (time paused is skipped, not caught up)."""
        self.hub.paused = False

    def step_market(self, count: int) -> None:
        """Produce ``count`` events now, paused or not."""
        self.hub.step(count)

    # -- connection faults (every open connection) --------------------------------------------

    async def disconnect_all(self) -> None:
        """Cut every connection's TCP at once, without a WebSocket close; waits until gone."""
        for s in list(self.hub.sessions.values()):
            s.abort()
        with trio.move_on_after(self.config.close_timeout):
            await self.hub.wait_no_sessions()

    def stall(self, seconds: float) -> None:
        """Send nothing at all (no heartbeats either) for ``seconds``; TCP stays open."""
        until = trio.current_time() + seconds
        for s in self.hub.sessions.values():
            s.stall(until)

    def send_error_all(self, message: str = BUFFER_OVERFLOW_MESSAGE) -> None:
        """Send an ``error`` frame to every connection, then close them."""
        now = trio.current_time()
        for s in list(self.hub.sessions.values()):
            s.fail(message, now=now)

    def send_reconnect_all(self, within_seconds: int = 1) -> None:
        """Send a ``reconnect`` frame to every connection and close each after the delay."""
        for s in list(self.hub.sessions.values()):
            self.hub.send_reconnect(s, within_seconds)

    def inject_raw_all(self, data: bytes | str) -> None:
        """Queue one raw text frame (must be UTF-8) on every connection, in stream order."""
        frame = data.encode() if isinstance(data, str) else data
        for s in list(self.hub.sessions.values()):
            s.push(frame)

    def inject_malformed_all(self, kind: str, symbol_id: str | None = None) -> None:
        """Queue a bad frame on every connection: ``not_json``, ``wrong_price``,
        ``sequence_string`` (wrong field types) or ``unknown_type`` (``{"type":"symbol",…}``)."""
        self.inject_raw_all(malformed_frame(kind, symbol_id or self.config.symbols[0]))

    def inject_oversized_all(self, size: int | None = None) -> None:
        """Queue a valid JSON frame of ``size`` bytes (default: profile ``oversize_bytes``)."""
        n = self.hub.faults.profile.oversize_bytes if size is None else size
        self.inject_raw_all(oversized_frame(n, self.config.symbols[0]))


@asynccontextmanager
async def open_simulator(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """Start market, WebSocket, REST and blackhole listeners; stop them all on exit."""
    cfg = config or SimulatorConfig()
    market = Market(
        cfg.symbols,
        seed=cfg.seed,
        mix=cfg.mix,
        depth=cfg.book_depth,
        snapshot_every=cfg.snapshot_every,
    )
    truth = Truth(market, cfg.trade_retention, cfg.latency)
    fault_rng = random.Random(f"faults-{cfg.seed}")
    hub = Hub(cfg, market, truth, WsFaults(cfg.faults, fault_rng))
    rest = RestApi(cfg, truth, RestFaults(cfg.faults, random.Random(f"rest-{cfg.seed}")))
    sim = Simulator(cfg, hub, rest)
    stop_rest = trio.Event()
    async with trio.open_nursery() as nursery:
        ws_port = await nursery.start(WsServer(cfg, hub).serve)
        hole_port = await nursery.start(serve_blackhole, cfg.host, cfg.blackhole_port)
        binds = await nursery.start(_serve_rest, rest, cfg, stop_rest)
        nursery.start_soon(hub.run)
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        sim.ws_url = f"ws://{host}:{ws_port}/v1/"
        sim.blackhole_url = f"ws://{host}:{hole_port}/v1/"
        sim.rest_url = binds[0]
        logger.info(
            "simulator up ws_url={} rest_url={} profile={}",
            sim.ws_url,
            sim.rest_url,
            cfg.faults.name,
        )
        try:
            yield sim
        finally:
            with trio.move_on_after(cfg.close_timeout + 1, shield=True):
                await _close_gracefully(sim, stop_rest)
            nursery.cancel_scope.cancel()


async def _close_gracefully(sim: Simulator, stop_rest: trio.Event) -> None:
    now = trio.current_time()
    for s in list(sim.hub.sessions.values()):
        s.close_after(0, now=now, code=1001)
    stop_rest.set()
    with trio.move_on_after(sim.config.close_timeout):
        await sim.hub.wait_no_sessions()


async def _serve_rest(
    rest: RestApi,
    cfg: SimulatorConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    hc = hypercorn.config.Config()
    hc.bind = [f"{cfg.host}:{cfg.rest_port}"]
    hc.accesslog = None
    hc.loglevel = "WARNING"
    hc.graceful_timeout = cfg.close_timeout
    app = cast(ASGIFramework, rest.app())  # Starlette is an ASGI app; the stubs disagree
    await hypercorn.trio.serve(app, hc, shutdown_trigger=stop.wait, task_status=task_status)
