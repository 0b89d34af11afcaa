"""The normalized events every sink receives (docs/architecture.md), and their JSON encoding.

Events are immutable msgspec records tagged by ``kind``. Prices and sizes stay ``Decimal`` and
are written as JSON numbers with exactly the digits CoinAPI sent. ``received_at`` is passed in by
the caller (the core reads no clock); frames from one socket read share one value.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

import msgspec

from coinfeed.core.protocol import (
    BookUpdate,
    Exrate,
    Level,
    Ohlcv,
    Quote,
    TopOfBook,
    Trade,
    asset_pair,
)
from coinfeed.core.rest_protocol import RestBook, RestTrade

Source = Literal["ws", "rest"]
BookDepth = Literal["book", "book5", "book20", "book50"]
GapReason = Literal["sequence", "reconnect", "restart"]
GapRecovery = Literal["backfill", "resubscribe", "none"]
GapStatus = Literal["pending", "recovered", "unrecovered"]
PriceLevel = tuple[Decimal, Decimal]


class TradeEvent(
    msgspec.Struct, tag_field="kind", tag="trade", kw_only=True, frozen=True, gc=False
):
    symbol_id: str
    sequence: int | None
    time_exchange: str
    time_coinapi: str
    uuid: str
    price: Decimal
    size: Decimal
    taker_side: str
    source: Source
    received_at: str


class QuoteEvent(
    msgspec.Struct, tag_field="kind", tag="quote", kw_only=True, frozen=True, gc=False
):
    symbol_id: str
    sequence: int | None
    time_exchange: str
    time_coinapi: str
    ask_price: Decimal
    ask_size: Decimal
    bid_price: Decimal
    bid_size: Decimal
    source: Source
    received_at: str


class BookEvent(msgspec.Struct, tag_field="kind", tag="book", kw_only=True, frozen=True, gc=False):
    symbol_id: str
    depth: BookDepth
    sequence: int | None
    time_exchange: str
    is_snapshot: bool
    asks: list[PriceLevel]
    bids: list[PriceLevel]
    source: Source
    received_at: str


class GapEvent(msgspec.Struct, tag_field="kind", tag="gap", kw_only=True, frozen=True, gc=False):
    data_type: str
    symbol_id: str
    reason: GapReason
    missing: int | None
    recovery: GapRecovery
    status: GapStatus
    received_at: str
    id: str = ""
    """The same on a gap's ``pending`` event and its final one."""
    after_sequence: int | None = None
    before_sequence: int | None = None
    window_start: str | None = None
    window_end: str | None = None


class BarEvent(msgspec.Struct, tag_field="kind", tag="bar", kw_only=True, frozen=True, gc=False):
    """A bar built by coinfeed from the trades it delivered (``--bars``).

    ``revision`` counts re-emissions of one bar (a late trade, a gap's outcome): a consumer that
    keeps the highest revision per (symbol, period, start) has the final bar. ``complete`` is
    false while trades of the period may be missing (a pending or unrecovered trade gap, or a
    period that began before coinfeed had every trade of the symbol)."""

    symbol_id: str
    period_id: str
    time_period_start: str
    time_period_end: str
    time_open: str
    time_close: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades_count: int
    revision: int
    complete: bool
    received_at: str


class BookTopEvent(
    msgspec.Struct, tag_field="kind", tag="book_top", kw_only=True, frozen=True, gc=False
):
    """The top ``depth`` levels of a synced book at ``time``, one of a regular series
    (``--book-snapshots``): what ``/api/books`` answered at that moment."""

    symbol_id: str
    depth: int
    time: str
    sequence: int | None
    asks: list[PriceLevel]
    bids: list[PriceLevel]
    received_at: str


class OhlcvEvent(
    msgspec.Struct, tag_field="kind", tag="ohlcv", kw_only=True, frozen=True, gc=False
):
    """CoinAPI's own bar (the ``ohlcv`` stream), as sent: repeated while the period is open,
    the last one per (symbol, period, start) is final."""

    symbol_id: str
    sequence: int
    period_id: str | None
    time_period_start: str
    time_period_end: str
    time_open: str | None
    time_close: str | None
    price_open: Decimal | None
    price_high: Decimal | None
    price_low: Decimal | None
    price_close: Decimal | None
    volume_traded: Decimal
    trades_count: int
    received_at: str


class ExrateEvent(
    msgspec.Struct, tag_field="kind", tag="exrate", kw_only=True, frozen=True, gc=False
):
    """CoinAPI's VWAP-24H exchange rate of an asset pair (the ``exrate`` stream; no sequence).
    ``symbol_id`` is the pair as ``BASE/QUOTE``, so every event kind has one."""

    symbol_id: str
    asset_id_base: str
    asset_id_quote: str
    rate_type: str | None
    time: str
    rate: Decimal
    received_at: str


Event = (
    TradeEvent
    | QuoteEvent
    | BookEvent
    | GapEvent
    | BarEvent
    | BookTopEvent
    | OhlcvEvent
    | ExrateEvent
)

EVENT_KINDS: Final = tuple(cls.__struct_config__.tag for cls in typing.get_args(Event))
"""Every kind of event: trade, quote, book, gap, bar, book_top, ohlcv, exrate."""

_encoder: Final = msgspec.json.Encoder(decimal_format="number")
_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """One event as one JSON object (no newline)."""
    return _encoder.encode(event)


def encode_lines(events: Iterable[Event]) -> bytes:
    """Events as JSON lines, each ending in ``\\n`` (a whole batch, never a partial line)."""
    return _encoder.encode_lines(list(events))


def decode_event(data: bytes | str) -> Event:
    """Decode one event written by :func:`encode_event` (consumers, tests)."""
    return _decoder.decode(data)


def utc_now_iso(moment: datetime | None = None) -> str:
    """``received_at`` text for ``moment`` (the caller's clock reading), ISO 8601 UTC."""
    instant = moment if moment is not None else datetime.now(UTC)
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pairs(side: list[Level]) -> list[PriceLevel]:
    return [(level.price, level.size) for level in side]


def trade_from_ws(msg: Trade, received_at: str) -> TradeEvent:
    return TradeEvent(
        symbol_id=msg.symbol_id,
        sequence=msg.sequence,
        time_exchange=msg.time_exchange,
        time_coinapi=msg.time_coinapi,
        uuid=msg.uuid.lower(),
        price=msg.price,
        size=msg.size,
        taker_side=msg.taker_side,
        source="ws",
        received_at=received_at,
    )


def trade_from_rest(msg: RestTrade, received_at: str) -> TradeEvent:
    return TradeEvent(
        symbol_id=msg.symbol_id,
        sequence=None,
        time_exchange=msg.time_exchange,
        time_coinapi=msg.time_coinapi,
        uuid=msg.uuid.lower(),
        price=msg.price,
        size=msg.size,
        taker_side=msg.taker_side,
        source="rest",
        received_at=received_at,
    )


def quote_from_ws(msg: Quote, received_at: str) -> QuoteEvent:
    return QuoteEvent(
        symbol_id=msg.symbol_id,
        sequence=msg.sequence,
        time_exchange=msg.time_exchange,
        time_coinapi=msg.time_coinapi,
        ask_price=msg.ask_price,
        ask_size=msg.ask_size,
        bid_price=msg.bid_price,
        bid_size=msg.bid_size,
        source="ws",
        received_at=received_at,
    )


def book_from_ws(msg: BookUpdate | TopOfBook, received_at: str) -> BookEvent:
    is_snapshot = msg.is_snapshot if isinstance(msg, BookUpdate) else True
    depth: BookDepth = msg.__struct_config__.tag  # type: ignore[assignment]
    return BookEvent(
        symbol_id=msg.symbol_id,
        depth=depth,
        sequence=msg.sequence,
        time_exchange=msg.time_exchange,
        is_snapshot=is_snapshot,
        asks=_pairs(msg.asks),
        bids=_pairs(msg.bids),
        source="ws",
        received_at=received_at,
    )


def book_update_event(msg: BookUpdate, received_at: str) -> BookEvent:
    """:func:`book_from_ws` for the incremental ``book`` stream (its hot path)."""
    return BookEvent(
        symbol_id=msg.symbol_id,
        depth="book",
        sequence=msg.sequence,
        time_exchange=msg.time_exchange,
        is_snapshot=msg.is_snapshot,
        asks=[(level.price, level.size) for level in msg.asks],
        bids=[(level.price, level.size) for level in msg.bids],
        source="ws",
        received_at=received_at,
    )


def book_from_rest(msg: RestBook, received_at: str) -> BookEvent:
    """The REST ``/current`` book as an unsequenced interim view (``source`` = ``rest``)."""
    return BookEvent(
        symbol_id=msg.symbol_id,
        depth="book",
        sequence=None,
        time_exchange=msg.time_exchange,
        is_snapshot=True,
        asks=_pairs(msg.asks),
        bids=_pairs(msg.bids),
        source="rest",
        received_at=received_at,
    )


def ohlcv_from_ws(msg: Ohlcv, received_at: str) -> OhlcvEvent:
    return OhlcvEvent(
        symbol_id=msg.symbol_id,
        sequence=msg.sequence,
        period_id=msg.period_id,
        time_period_start=msg.time_period_start,
        time_period_end=msg.time_period_end,
        time_open=msg.time_open,
        time_close=msg.time_close,
        price_open=msg.price_open,
        price_high=msg.price_high,
        price_low=msg.price_low,
        price_close=msg.price_close,
        volume_traded=msg.volume_traded,
        trades_count=msg.trades_count,
        received_at=received_at,
    )


def exrate_from_ws(msg: Exrate, received_at: str) -> ExrateEvent:
    return ExrateEvent(
        symbol_id=asset_pair(msg.asset_id_base, msg.asset_id_quote),
        asset_id_base=msg.asset_id_base,
        asset_id_quote=msg.asset_id_quote,
        rate_type=msg.rate_type,
        time=msg.time,
        rate=msg.rate,
        received_at=received_at,
    )
