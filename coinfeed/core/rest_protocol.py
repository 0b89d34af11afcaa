"""CoinAPI REST records, sans-I/O: what recovery reads from ``/v1/trades/…/history`` and
``/v1/orderbooks/…/current``, decoded with exact Decimals like the WebSocket records."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from coinfeed.core.protocol import Level


class RestTrade(msgspec.Struct, kw_only=True, gc=False):
    """A trade from ``/v1/trades/{symbol_id}/history`` or ``/latest`` (no sequence)."""

    symbol_id: str
    time_exchange: str
    time_coinapi: str
    uuid: str
    price: Decimal
    size: Decimal
    taker_side: str
    id_trade: str | None = None


class RestBook(msgspec.Struct, kw_only=True, gc=False):
    """``/v1/orderbooks/{symbol_id}/current``: unsequenced, never a base for WS deltas."""

    symbol_id: str
    time_exchange: str
    time_coinapi: str
    asks: list[Level]
    bids: list[Level]


class LastTrade(msgspec.Struct, kw_only=True, gc=False):
    time_exchange: str
    time_coinapi: str
    uuid: str
    price: Decimal
    size: Decimal
    taker_side: str


class RestQuote(msgspec.Struct, kw_only=True, gc=False):
    """``/v1/quotes/{symbol_id}/current``: one object, not an array."""

    symbol_id: str
    time_exchange: str
    time_coinapi: str
    ask_price: Decimal
    ask_size: Decimal
    bid_price: Decimal
    bid_size: Decimal
    last_trade: LastTrade | None = None


class RestErrorBody(msgspec.Struct, gc=False):
    """REST error body: CoinAPI uses ``error``, the official C# SDK reads ``message``."""

    error: str | None = None
    message: str | None = None

    @property
    def text(self) -> str:
        return self.error or self.message or ""


rest_trades_decoder: Final = msgspec.json.Decoder(list[RestTrade])
rest_book_decoder: Final = msgspec.json.Decoder(RestBook)
rest_quote_decoder: Final = msgspec.json.Decoder(RestQuote)
rest_error_decoder: Final = msgspec.json.Decoder(RestErrorBody)
