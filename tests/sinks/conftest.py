"""Fixtures for the sink tests: a real redis-server, and small event factories."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from coinfeed.core.events import BookEvent, GapEvent, QuoteEvent, TradeEvent
from tests.service.conftest import make_settings
from tests.sinks.redisserver import RedisServer

__all__ = ["make_settings", "redis_server"]

SYM = "BITSTAMP_SPOT_BTC_USD"
AT = "2026-11-28T10:00:00.0000000Z"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
    )
