"""Decoding server frames, sans-I/O: bytes in, a checked record or the reason it is invalid out.

How this works: :class:`FrameDecoder` decodes a frame straight into its msgspec record
(:mod:`coinfeed.core.protocol`), then checks the values the service relies on. A frame that cannot
become a record (not JSON, wrong field types, an unknown ``type``, larger than the configured
limit) or holds a value no market sends comes back as an :class:`InvalidFrame` naming the
reason; decoding never raises. :func:`peek_frame` is the cheapest decode, for dropped frames.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, Protocol

import msgspec

from coinfeed.core.protocol import (
    KNOWN_TYPES,
    Book5,
    Book20,
    Book50,
    BookUpdate,
    Exrate,
    Ohlcv,
    Quote,
    ServerMessage,
    TopOfBook,
    Trade,
)

FUTURE_TOLERANCE: Final = timedelta(minutes=10)
"""How far past coinfeed's own clock a trade's ``time_exchange`` may be: exchange clocks run a
little ahead at times, but a trade stamped later than this would become the start of every later
backfill window of its symbol. Keep the host's clock on NTP."""
EARLIEST_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""No trade is older (CoinAPI's history starts in 2010); earlier times are bad values, and far
earlier ones would overflow the window arithmetic."""

InvalidReason = Literal["not_json", "invalid_schema", "unknown_type", "too_large", "invalid_value"]
INVALID_REASONS: Final[tuple[InvalidReason, ...]] = (
    "not_json",
    "invalid_schema",
    "unknown_type",
    "too_large",
    "invalid_value",
)
"""``invalid_value``: well-formed, but a value no market sends (a sequence out of range or
jumping implausibly far, a negative or non-finite price or size, a trade time that is not a time
or lies in the future)."""


class InvalidFrame(msgspec.Struct, frozen=True, gc=False):
    """A frame that did not decode. ``detail`` is short and safe to log (no frame contents)."""

    reason: InvalidReason
    detail: str
    size: int


class FrameHead(msgspec.Struct, gc=False):
    """The cheapest decode of a frame: enough to know which stream it belonged to."""

    type: str = ""
    symbol_id: str = ""
    sequence: int | None = None
    time_exchange: str | None = None


DEFAULT_MAX_FRAME_BYTES: Final = 8 * 1024 * 1024

_server_decoder: Final[msgspec.json.Decoder[ServerMessage]] = msgspec.json.Decoder(ServerMessage)
_head_decoder: Final = msgspec.json.Decoder(FrameHead)


class _TypeOnly(msgspec.Struct, gc=False):
    type: str = ""


_type_decoder: Final = msgspec.json.Decoder(_TypeOnly)


class FrameDecoder:
    """Decodes server frames into records; never raises on bad input.

    ``max_frame_bytes`` bounds what is decoded at all: a larger frame is reported as
    ``too_large`` without being parsed.
    """

    __slots__ = ("_decode", "max_frame_bytes", "not_after")

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.not_after = datetime.max.replace(tzinfo=UTC)
        """The latest acceptable trade time; the caller moves it with its clock (the core
        reads none): its time plus :data:`FUTURE_TOLERANCE`."""
        self._decode = _server_decoder.decode

    def decode(self, frame: bytes | str) -> ServerMessage | InvalidFrame:
        """Decode one WebSocket text frame; values are checked too (``invalid_value``)."""
        if len(frame) > self.max_frame_bytes:
            return InvalidFrame(
                "too_large", f"{len(frame)} bytes > {self.max_frame_bytes}", len(frame)
            )
        try:
            msg = self._decode(frame)
        except msgspec.ValidationError as exc:
            return _classify_validation_error(frame, exc)
        except msgspec.DecodeError as exc:
            return InvalidFrame("not_json", str(exc), len(frame))
        except UnicodeEncodeError:
            # A str frame holding a lone surrogate cannot be UTF-8: not JSON text.
            return InvalidFrame("not_json", "text is not valid UTF-8", len(frame))
        except RecursionError:
            # msgspec recurses once per nesting level; no CoinAPI record nests deeply.
            return InvalidFrame(
                "invalid_schema", "nested deeper than the decoder allows", len(frame)
            )
        check = _VALUE_CHECKS.get(type(msg))
        if check is None:
            return msg
        problem = check(msg, self.not_after)
        if problem is None:
            return msg
        return InvalidFrame("invalid_value", problem, len(frame))


def _book_problem(book: BookUpdate | TopOfBook, _not_after: datetime) -> str | None:
    # Every level of every book message passes here: the checks are written out, not called.
    for side in (book.asks, book.bids):
        for level in side:
            price = level.price
            size = level.size
            if (
                price.is_signed()
                or size.is_signed()
                or not (price.is_finite() and size.is_finite())
            ):
                return f"level {price} x {size}"
    return None


def _quote_problem(quote: Quote, _not_after: datetime) -> str | None:
    for value in (quote.ask_price, quote.ask_size, quote.bid_price, quote.bid_size):
        if value.is_signed() or not value.is_finite():
            return f"quote amount {value}"
    return None


def _ohlcv_problem(bar: Ohlcv, _not_after: datetime) -> str | None:
    for value in (
        bar.price_open, bar.price_high, bar.price_low, bar.price_close, bar.volume_traded,
    ):  # fmt: skip
        if value is not None and (value.is_signed() or not value.is_finite()):
            return f"ohlcv amount {value}"
    if bar.trades_count < 0:
        return f"ohlcv trades_count {bar.trades_count}"
    return None


def _exrate_problem(rate: Exrate, _not_after: datetime) -> str | None:
    if rate.rate.is_signed() or not rate.rate.is_finite():
        return f"exrate rate {rate.rate}"
    return None


def checked_time(text: str, not_after: datetime) -> datetime | None:
    """``text`` as an aware datetime if it is a time no later than ``not_after``, else None."""
    try:
        moment = datetime.fromisoformat(text)  # aware datetimes compare across zones
    except (ValueError, TypeError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment if EARLIEST_TIME <= moment <= not_after else None


class TradeValues(Protocol):
    """What :func:`trade_problem` reads: a WebSocket trade and a REST one alike."""

    @property
    def price(self) -> Decimal: ...
    @property
    def size(self) -> Decimal: ...
    @property
    def time_exchange(self) -> str: ...


def trade_problem(trade: TradeValues, not_after: datetime) -> str | None:
    """Why a trade's values are impossible (None when they are fine). Its ``time_exchange``
    starts and ends backfill windows, so it must be a time from :data:`EARLIEST_TIME` to
    ``not_after``."""
    price = trade.price
    size = trade.size
    if price.is_signed() or size.is_signed() or not (price.is_finite() and size.is_finite()):
        return f"price {price} size {size}"
    if checked_time(trade.time_exchange, not_after) is None:
        return f"time_exchange {trade.time_exchange[:40]!r} is not a time up to {not_after:%F %T}"
    return None


def _classify_validation_error(frame: bytes | str, exc: msgspec.ValidationError) -> InvalidFrame:
    # Read only ``type``: an unknown type's other fields (a string ``sequence``, say) must not
    # turn ``unknown_type`` into ``invalid_schema``.
    try:
        kind = _type_decoder.decode(frame).type
    except (msgspec.DecodeError, RecursionError):
        kind = ""
    if kind and kind not in KNOWN_TYPES:
        return InvalidFrame("unknown_type", f"type={kind[:40]!r}", len(frame))
    text = str(exc)
    if "` >= " in text or "` <= " in text:  # a constraint of the schema: the value is out of range
        return InvalidFrame("invalid_value", text, len(frame))
    return InvalidFrame("invalid_schema", text, len(frame))


_VALUE_CHECKS: Final[dict[type, Callable[[Any, datetime], str | None]]] = {
    BookUpdate: _book_problem,
    Trade: trade_problem,
    Quote: _quote_problem,
    Book5: _book_problem,
    Book20: _book_problem,
    Book50: _book_problem,
    Ohlcv: _ohlcv_problem,
    Exrate: _exrate_problem,
}
"""The records whose values the service uses, and what makes one impossible: negative (``-0``
too) or non-finite amounts, and for trades a time that is not a plausible one. 0 stays valid:
CoinAPI uses it as a marker."""


def peek_frame(frame: bytes | str) -> FrameHead | None:
    """Read only ``type``, ``symbol_id``, ``sequence``, ``time_exchange``; ``None`` on failure.

    Used where a frame is dropped unread, to mark its stream for repair at once.
    """
    try:
        return _head_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
        return None
