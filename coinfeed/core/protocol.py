"""CoinAPI WebSocket V1 and REST wire format, sans-I/O.

How this works: every server frame is decoded straight into one typed msgspec record (a tagged
union on ``type``) with prices and sizes as exact ``Decimal`` values taken from the JSON text.
A frame that cannot become a record (not JSON, wrong field types, an unknown ``type``, larger
than the configured limit) comes back as an :class:`InvalidFrame` naming the reason; decoding
never raises. The same records encode the server side (the simulator uses them), so there is one
wire format in the code base, not two.

Traps handled here (``docs/protocol.md``): the heartbeat type is spelled ``hearbeat`` on
the wire (``heartbeat`` is accepted too); symbol filters are prefix matches, so exact ids get a
trailing ``$``; timestamps have 7 fractional digits and are kept as the raw strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec

# ---------------------------------------------------------------------------------------------
# Server -> client records
# ---------------------------------------------------------------------------------------------

MAX_SEQUENCE: Final = 2**63 - 1
"""Sequences are signed 64-bit on every sink that stores them (SQLite INTEGER, Redis ids)."""
SequenceNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]

FUTURE_TOLERANCE: Final = timedelta(minutes=10)
"""How far past coinfeed's own clock a trade's ``time_exchange`` may be: exchange clocks run a
little ahead at times, but a trade stamped later than this would become the start of every later
backfill window of its symbol. Keep the host's clock on NTP."""
EARLIEST_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""No trade is older (CoinAPI's history starts in 2010); earlier times are bad values, and far
earlier ones would overflow the window arithmetic."""


class Level(msgspec.Struct, frozen=True, gc=False):
    """One aggregated price level: ``size`` is the total resting at ``price`` (0 deletes)."""

    price: Decimal
    size: Decimal


class L3Entry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One order of a ``book_l3`` message; ``id`` is absent when the venue only has L2."""

    price: Decimal
    size: Decimal
    id: str | None = None
    update_type: str | None = None


class Trade(msgspec.Struct, tag_field="type", tag="trade", kw_only=True, gc=False):
    """An execution. ``size == 0`` is a CoinAPI marker, not a trade."""

    symbol_id: str
    sequence: SequenceNumber
    time_exchange: str
    time_coinapi: str
    uuid: str
    price: Decimal
    size: Decimal
    taker_side: str


class Quote(msgspec.Struct, tag_field="type", tag="quote", kw_only=True, gc=False):
    """Level 1 state. A size of 0 means "unknown", not an empty side."""

    symbol_id: str
    sequence: SequenceNumber
    time_exchange: str
    time_coinapi: str
    ask_price: Decimal
    ask_size: Decimal
    bid_price: Decimal
    bid_size: Decimal


class BookUpdate(msgspec.Struct, tag_field="type", tag="book", kw_only=True, gc=False):
    """Full L2: a snapshot (every level) or an update (changed levels, absolute sizes)."""

    symbol_id: str
    sequence: SequenceNumber
    time_exchange: str
    time_coinapi: str
    is_snapshot: bool
    asks: list[Level]
    bids: list[Level]


class _TopOfBook(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    symbol_id: str
    sequence: SequenceNumber
    time_exchange: str
    time_coinapi: str
    asks: list[Level]
    bids: list[Level]


class Book5(_TopOfBook, tag="book5"):
    """Top-5 snapshot per side; every message is complete state."""


class Book20(_TopOfBook, tag="book20"):
    """Top-20 snapshot per side; every message is complete state."""


class Book50(_TopOfBook, tag="book50"):
    """Top-50 snapshot per side; every message is complete state."""


class BookL3(msgspec.Struct, tag_field="type", tag="book_l3", kw_only=True, gc=False):
    """Order-by-order book message (snapshot or update)."""

    symbol_id: str
    sequence: SequenceNumber
    time_exchange: str
    time_coinapi: str
    is_snapshot: bool
    asks: list[L3Entry]
    bids: list[L3Entry]


class Ohlcv(msgspec.Struct, tag_field="type", tag="ohlcv", kw_only=True, gc=False):
    """A bar; repeated while the period is open, the last one per period is final."""

    symbol_id: str
    sequence: SequenceNumber
    time_period_start: str
    time_period_end: str
    period_id: str | None = None
    time_open: str | None = None
    time_close: str | None = None
    price_open: Decimal | None = None
    price_high: Decimal | None = None
    price_low: Decimal | None = None
    price_close: Decimal | None = None
    volume_traded: Decimal
    trades_count: int


class Exrate(msgspec.Struct, tag_field="type", tag="exrate", kw_only=True, gc=False):
    """A VWAP-24H exchange rate (no sequence)."""

    asset_id_base: str
    asset_id_quote: str
    time: str
    rate: Decimal
    rate_type: str | None = None


class Heartbeat(msgspec.Struct, tag_field="type", tag="hearbeat", gc=False):
    """Sent after each second of silence. The wire spelling really is ``hearbeat``."""


class HeartbeatCorrected(msgspec.Struct, tag_field="type", tag="heartbeat", gc=False):
    """The ``heartbeat`` spelling some third-party specs use; treated like :class:`Heartbeat`."""


class Error(msgspec.Struct, tag_field="type", tag="error", gc=False):
    """Terminal: the server closes the connection after it. ``message`` may be null or absent."""

    message: str | None = ""


class Reconnect(msgspec.Struct, tag_field="type", tag="reconnect", kw_only=True, gc=False):
    """A planned server restart: the server closes the socket by ``before_time``."""

    within_seconds: int = 0
    before_time: str | None = None


ServerMessage = (
    Trade
    | Quote
    | BookUpdate
    | Book5
    | Book20
    | Book50
    | BookL3
    | Ohlcv
    | Exrate
    | Heartbeat
    | HeartbeatCorrected
    | Error
    | Reconnect
)
TopOfBook = Book5 | Book20 | Book50

KNOWN_TYPES: Final = frozenset(
    [
        "trade",
        "quote",
        "book",
        "book5",
        "book20",
        "book50",
        "book_l3",
        "ohlcv",
        "exrate",
        "hearbeat",
        "heartbeat",
        "error",
        "reconnect",
    ]
)
"""Every ``type`` :func:`FrameDecoder.decode` turns into a record."""

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


# ---------------------------------------------------------------------------------------------
# Client -> server messages
# ---------------------------------------------------------------------------------------------

ScopeType = Literal["hello", "subscribe", "unsubscribe"]


class ScopeMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``hello`` (replace scope), ``subscribe`` (add) or ``unsubscribe`` (remove)."""

    type: ScopeType
    apikey: str | None = None
    heartbeat: bool = False
    subscribe_data_type: list[str]
    subscribe_filter_symbol_id: list[str] | None = None
    subscribe_filter_asset_id: list[str] | None = None
    subscribe_filter_exchange_id: list[str] | None = None
    subscribe_filter_period_id: list[str] | None = None
    subscribe_update_limit_ms_quote: int | None = None
    subscribe_update_limit_ms_book_snapshot: int | None = None


def exact_symbol_filter(symbol_id: str) -> str:
    """CoinAPI matches symbol filters by prefix; a trailing ``$`` makes the match exact."""
    return symbol_id if symbol_id.endswith("$") else symbol_id + "$"


def scope_message(
    kind: ScopeType,
    types: Iterable[str],
    symbols: Iterable[str],
    *,
    apikey: str | None = None,
    heartbeat: bool = True,
) -> ScopeMessage:
    """Build a scope message for exact symbol ids (each gets the trailing ``$``)."""
    return ScopeMessage(
        type=kind,
        apikey=apikey,
        heartbeat=heartbeat,
        subscribe_data_type=list(types),
        subscribe_filter_symbol_id=[exact_symbol_filter(s) for s in symbols],
    )


_client_decoder: Final = msgspec.json.Decoder(ScopeMessage)


def decode_scope_message(frame: bytes | str) -> ScopeMessage:
    """Decode a client scope message (the simulator's side). Raises ``msgspec.MsgspecError``."""
    return _client_decoder.decode(frame)


# ---------------------------------------------------------------------------------------------
# Encoding (client messages, and the server side for the simulator)
# ---------------------------------------------------------------------------------------------

_encoder: Final = msgspec.json.Encoder(decimal_format="number")
encode: Final = _encoder.encode
"""Encode any record of this module as JSON bytes; Decimals as numbers with their digits."""


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """Parse a CoinAPI timestamp (``yyyy-MM-ddTHH:mm:ss.fffffffZ``) to an aware UTC datetime.

    The 7th fractional digit (100 ns) is truncated; keep the raw string where it matters. A
    timestamp without an offset is UTC (``astimezone`` alone would read it as local time).
    Raises ``ValueError`` for text that is not an ISO 8601 timestamp.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """Format an aware datetime the way CoinAPI does: UTC, 7 fractional digits, ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def levels(pairs: Sequence[tuple[Decimal, Decimal]]) -> list[Level]:
    """Build a level list from ``(price, size)`` pairs (tests, simulator)."""
    return [Level(p, s) for p, s in pairs]
