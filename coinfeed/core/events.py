"""The normalized events every sink receives (docs/architecture.md), and their JSON encoding.

Events are immutable msgspec records tagged by ``kind``. Prices and sizes stay ``Decimal`` and
are written as JSON numbers with exactly the digits CoinAPI sent. ``received_at`` is passed in by
the caller (the core reads no clock); frames from one socket read share one value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

import msgspec

from coinfeed.core.protocol import BookUpdate, Level, Quote, TopOfBook, Trade
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


Event = TradeEvent | QuoteEvent | BookEvent | GapEvent

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
