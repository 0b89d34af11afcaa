"""Builders of the event kinds that came after trade, quote, book and gap (those are in
tests/helpers.py): coinfeed's bars, the regular top-of-book series, CoinAPI's bars and exchange
rates. Numbers are awkward on purpose: trailing zeros, exponents, more digits than a float."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from coinfeed.core.events import BarEvent, BookTopEvent, Event, ExrateEvent, OhlcvEvent
from tests.helpers import AT, SYM

PAIR = "BTC/USD"
"""An exchange rate's symbol id: the asset pair, with a ``/``."""
MINUTE_END = "2026-11-28T10:01:00.0000000Z"
RECEIVED = "2026-11-28T10:01:00.250000Z"
"""coinfeed's clock, as ``received_at`` is written (Python's isoformat, microseconds)."""


def bar(
    revision: int = 0,
    *,
    complete: bool = True,
    close: str = "770.000000000",
    symbol: str = SYM,
    start: str = AT,
    period: str = "1MIN",
) -> BarEvent:
    return BarEvent(
        symbol_id=symbol, period_id=period, time_period_start=start,
        time_period_end=MINUTE_END, time_open="2026-11-28T10:00:00.1234567Z",
        time_close="2026-11-28T10:00:59.9999999Z", open=Decimal("769.50"),
        high=Decimal("1E+3"), low=Decimal("0.00000050"), close=Decimal(close),
        volume=Decimal("123456789012345678901234567890.5"), trades_count=7 + revision,
        revision=revision, complete=complete, received_at=RECEIVED,
    )  # fmt: skip


def book_top(
    sequence: int | None = 42, *, symbol: str = SYM, time: str = "2026-11-28T10:00:01.000250Z"
) -> BookTopEvent:
    """``time`` is coinfeed's clock, like ``received_at`` (Python's isoformat; with no fraction
    at a whole second)."""
    return BookTopEvent(
        symbol_id=symbol, depth=2, time=time, sequence=sequence,
        asks=[(Decimal("101.50"), Decimal("2")), (Decimal("101.25"), Decimal("1E-9"))],
        bids=[(Decimal("99.0"), Decimal("3.000"))], received_at=RECEIVED,
    )  # fmt: skip


def ohlcv(
    sequence: int,
    *,
    close: str | None = "0.00000050",
    period: str | None = "1MIN",
    end: str = MINUTE_END,
    symbol: str = SYM,
) -> OhlcvEvent:
    """``close`` None: a period without trades (CoinAPI sends no prices then)."""
    price = None if close is None else Decimal(close)
    traded = price is not None
    return OhlcvEvent(
        symbol_id=symbol, sequence=sequence, period_id=period, time_period_start=AT,
        time_period_end=end, time_open=AT if traded else None,
        time_close=AT if traded else None, price_open=price, price_high=price, price_low=price,
        price_close=price, volume_traded=Decimal("12.50" if traded else "0E-8"),
        trades_count=sequence if traded else 0, received_at=RECEIVED,
    )  # fmt: skip


def exrate(rate: str = "65013.000000000", *, time: str = AT) -> ExrateEvent:
    return ExrateEvent(
        symbol_id=PAIR, asset_id_base="BTC", asset_id_quote="USD",
        rate_type="BASE_ALL_CROSSES_TO_REF", time=time, rate=Decimal(rate), received_at=RECEIVED,
    )  # fmt: skip


def one_of_each() -> list[Event]:
    """One event of each newer kind, and a second ohlcv: one without prices or period_id."""
    return [bar(), book_top(), ohlcv(1), ohlcv(2, close=None, period=None), exrate()]


def nanos(text: str) -> int:
    """ISO 8601 UTC text (``Z``, up to 9 fractional digits or none) as ns since the epoch."""
    whole, _, fraction = text.removesuffix("Z").partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0"))
