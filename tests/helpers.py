"""Helpers shared by the tests: settings, in-memory sinks, the service against the simulator,
waiting for a condition, event builders and a Prometheus text reader.

Tests import from here (or get fixtures from a ``conftest.py``), never from another test module.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.book import OrderBook
from coinfeed.core.events import BookEvent, Event, GapEvent, QuoteEvent, TradeEvent
from coinfeed.core.protocol import Level
from coinfeed.service import Service
from coinfeed.simulator import Simulator, SimulatorConfig, open_simulator
from tests.fakes import FakeTransport, FakeWebSocket

KEY = "5c3f9a1e-7d2b-4f60-9e81-a0b1c2d3e4f5"
"""A CoinAPI key for tests that check it never leaks."""

SYMBOLS = ("BITSTAMP_SPOT_BTC_USD", "BITSTAMP_SPOT_BTC_USDT", "COINBASE_SPOT_ETH_USD")
"""The symbols the service subscribes in :func:`running` (one is a prefix of another)."""

SYM = "BITSTAMP_SPOT_BTC_USD"
AT = "2026-11-28T10:00:00.0000000Z"


# -- settings and sinks -----------------------------------------------------------------------


def service_settings(**overrides: Any) -> Settings:
    """Settings for an in-process service: no HTTP listener, no stats line, nothing listening,
    no checkpoint on disk."""
    values: dict[str, Any] = {
        "ws_url": "ws://127.0.0.1:9/v1/",
        "rest_url": "http://127.0.0.1:9",
        "symbols": ("BITSTAMP_SPOT_BTC_USD",),
        "types": ("trade", "quote", "book"),
        "http": None,
        "stats_interval": 3600.0,
        "state_dir": None,
    }
    values.update(overrides)
    return Settings(**values)


@attrs.define(eq=False)
class MemorySink:
    """Keeps every event written (tests read ``events``); ``fail`` makes writes raise (a sink
    that is down)."""

    name: str = "memory"
    blocking: bool = False
    events: list[Event] = attrs.field(factory=list)
    closed: bool = False
    fail: bool = False

    def write_batch(self, events: list[Event]) -> None:
        if self.fail:
            raise OSError("sink down")
        self.events.extend(events)

    def close(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class SlowSink(MemorySink):
    """A sink whose writes take ``delay`` seconds (in a worker thread, like a slow disk)."""

    delay: float = 0.0
    blocking: bool = True

    def write_batch(self, events: list[Any]) -> None:
        time.sleep(self.delay)
        super().write_batch(events)


# -- the service against the simulator --------------------------------------------------------


async def wait_for(condition: Callable[[], bool], limit: float, what: str) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``limit`` seconds."""
    with trio.move_on_after(limit):
        while not condition():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


@asynccontextmanager
async def running(
    make_settings: Callable[..., Settings],
    sim_config: SimulatorConfig,
    *,
    sink: MemorySink | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[Simulator, Service, MemorySink]]:
    """The simulator and a service subscribed to :data:`SYMBOLS` on it, writing to ``sink``."""
    sink = sink or MemorySink()
    async with open_simulator(sim_config) as sim:
        values: dict[str, Any] = {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "symbols": SYMBOLS,
            "stale_after": 2.0,
            "recovery_pause": 0.02,
        }
        values.update(overrides)
        service = Service.build(make_settings(**values), sinks=[sink], handle_signals=False)
        # The ground truth holds every trade; one produced before our hello reached the
        # simulator was never owed to us. Start the market only once it is subscribed.
        sim.pause_market()
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.connected, 5, "connected")
            await wait_for(lambda: sim.stats.scope_messages >= 1, 5, "the hello to arrive")
            sim.resume_market()
            yield sim, service, sink
            service.status.request_shutdown("test over")


@asynccontextmanager
async def serving_fake_feed(
    make_settings: Callable[..., Settings], ws: FakeWebSocket, **overrides: Any
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """A service reading ``ws`` instead of CoinAPI, its HTTP listener on a free loopback port,
    and a client for it; shut down on exit."""
    settings = make_settings(http=ListenAddress("127.0.0.1", 0), **overrides)
    service = Service.build(
        settings, transport=FakeTransport([ws]), sinks=[MemorySink()], handle_signals=False
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            yield service, client
        service.status.request_shutdown("test over")


async def settle(sim: Simulator, service: Service) -> None:
    """End a run with faults in a quiet state: faults off, every book of :data:`SYMBOLS`
    synced again, the market paused and every event handed to the sinks."""
    books = service.processor.books
    sim.faults.set_profile("none")
    await wait_for(
        lambda: not books.unsynced_of(SYMBOLS),
        10,
        "every book synced again",
    )
    sim.pause_market()
    await wait_for(
        lambda: all(q.depth == 0 for q in service.queue_statistics().values()),
        5,
        "every event handed to the sinks",
    )


def book_from_sqlite(path: Path, symbol: str) -> OrderBook:
    """``symbol``'s WS ``book`` rows of the SQLite sink's ``book_updates`` applied in id order
    (a second reader: WAL lets it read while the sink writes)."""
    book = OrderBook(symbol)
    with sqlite3.connect(path) as conn:
        stored = conn.execute(
            "SELECT is_snapshot, sequence, asks, bids FROM book_updates"
            " WHERE symbol_id = ? AND depth = 'book' AND source = 'ws' ORDER BY id",
            (symbol,),
        ).fetchall()
    conn.close()
    for is_snapshot, sequence, asks, bids in stored:
        ask_levels = [Level(Decimal(p), Decimal(s)) for p, s in json.loads(asks)]
        bid_levels = [Level(Decimal(p), Decimal(s)) for p, s in json.loads(bids)]
        if is_snapshot:
            book.apply_snapshot(ask_levels, bid_levels, sequence)
        else:
            book.apply_update(ask_levels, bid_levels, sequence)
    return book


def truth_uuids(sim: Simulator) -> set[str]:
    """Every trade uuid the simulated market produced for :data:`SYMBOLS`."""
    return {t.uuid.lower() for s in SYMBOLS for t in sim.truth.trades(s)}


# -- events -----------------------------------------------------------------------------------


def trade(
    n: int, *, symbol: str = SYM, price: str = "770.000000000", size: str = "0.5"
) -> TradeEvent:
    return TradeEvent(
        symbol_id=symbol,
        sequence=n,
        time_exchange=AT,
        time_coinapi=AT,
        uuid=f"00000000-0000-4000-8000-{n:012d}",
        price=Decimal(price),
        size=Decimal(size),
        taker_side="BUY",
        source="ws",
        received_at="2026-11-28T10:00:00.000001Z",
    )


def quote(n: int, *, symbol: str = SYM) -> QuoteEvent:
    return QuoteEvent(
        symbol_id=symbol,
        sequence=n,
        time_exchange=AT,
        time_coinapi=AT,
        ask_price=Decimal("101.50"),
        ask_size=Decimal("0.00000050"),
        bid_price=Decimal("99.0"),
        bid_size=Decimal("1E-9"),
        source="ws",
        received_at=AT,
    )


def book(n: int, *, snapshot: bool, symbol: str = SYM) -> BookEvent:
    return BookEvent(
        symbol_id=symbol,
        depth="book",
        sequence=n,
        time_exchange=AT,
        is_snapshot=snapshot,
        asks=[(Decimal("101.50"), Decimal("2")), (Decimal("101.25"), Decimal("1E-9"))],
        bids=[(Decimal("99.0"), Decimal("3.000"))],
        source="ws",
        received_at=AT,
    )


def gap(*, symbol: str = SYM) -> GapEvent:
    return GapEvent(
        data_type="trade",
        symbol_id=symbol,
        reason="sequence",
        missing=3,
        recovery="backfill",
        status="pending",
        received_at=AT,
        id="1a2b3c4d-1",
        after_sequence=4,
        before_sequence=8,
        window_start=AT,
        window_end=AT,
    )


# -- metrics ----------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- the fixture the command-line and config tests use (imported by their conftest.py) -------


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No COINAPI_KEY or COINFEED_* from the developer's shell leaks into a test, and
    setup_logging()'s reconfigured global logger is replaced by a default one afterwards."""
    for name in list(os.environ):
        if name == "COINAPI_KEY" or name.startswith("COINFEED_"):
            monkeypatch.delenv(name)
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(_write_to_current_stderr)


def _write_to_current_stderr(message: str) -> None:
    # Looked up at each call: pytest swaps sys.stderr while it captures output.
    sys.stderr.write(message)
