"""CoinAPI WebSocket V1 and REST wire format, sans-I/O.

How this works: every server frame becomes one typed msgspec record (a tagged union on
``type``) with prices and sizes as exact ``Decimal`` values taken from the JSON text
(:mod:`coinfeed.core.decoding` decodes and checks them). The same records encode the server side
(the simulator uses them), so there is one wire format in the code base, not two.

Traps handled here (``docs/protocol.md``): the heartbeat type is spelled ``hearbeat`` on
the wire (``heartbeat`` is accepted too); symbol filters are prefix matches, so exact ids get a
trailing ``$``; timestamps have 7 fractional digits and are kept as the raw strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

# ---------------------------------------------------------------------------------------------
# Server -> client records
# ---------------------------------------------------------------------------------------------

MAX_SEQUENCE: Final = 2**63 - 1
"""Sequences are signed 64-bit on every sink that stores them (SQLite INTEGER, Redis ids)."""
SequenceNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]


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
"""Every ``type`` the decoder turns into a record (:mod:`coinfeed.core.decoding`)."""

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


def _day_periods() -> dict[str, int]:
    units = (
        ("SEC", 1, (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
        ("MIN", 60, (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
        ("HRS", 3_600, (1, 2, 3, 4, 6, 8, 12)),
        ("DAY", 86_400, (1,)),
    )
    return {f"{n}{unit}": n * seconds for unit, seconds, counts in units for n in counts}


DAY_PERIODS: Final[Mapping[str, int]] = _day_periods()
"""CoinAPI's period ids whose length divides a day -> that length in seconds, shortest first
(the others, 2DAY to 5YRS, do not line up with UTC midnight)."""

SYMBOL_SCOPED_TYPES: Final = frozenset(
    ["trade", "quote", "book", "book5", "book20", "book50", "book_l3", "ohlcv"]
)
"""Types subscribed by symbol filters; ``exrate`` is subscribed by asset pairs instead."""


def scope_message(
    kind: ScopeType,
    types: Iterable[str],
    symbols: Iterable[str],
    *,
    apikey: str | None = None,
    heartbeat: bool = True,
    periods: Sequence[str] = (),
) -> ScopeMessage:
    """Build a scope message for exact symbol ids (each gets the trailing ``$``). Only the
    types subscribed by symbol are included; ``periods`` go with ``ohlcv``."""
    wanted = [t for t in types if t in SYMBOL_SCOPED_TYPES]
    return ScopeMessage(
        type=kind,
        apikey=apikey,
        heartbeat=heartbeat,
        subscribe_data_type=wanted,
        subscribe_filter_symbol_id=[exact_symbol_filter(s) for s in symbols],
        subscribe_filter_period_id=list(periods) if "ohlcv" in wanted and periods else None,
    )


def exchange_of(symbol_id: str) -> str:
    """CoinAPI symbol ids start with the exchange id: ``BITSTAMP_SPOT_BTC_USD``."""
    return symbol_id.partition("_")[0]


def assets_of(symbol_id: str) -> tuple[str, str] | None:
    """(base, quote) of a symbol id, if it names them: CoinAPI ids are
    ``EXCHANGE_TYPE_BASE_QUOTE[_…]``."""
    parts = symbol_id.split("_")
    return (parts[2], parts[3]) if len(parts) >= 4 and parts[2] and parts[3] else None


def asset_pair(base: str, quote: str) -> str:
    """A pair as CoinAPI's asset filter spells it, and an exchange rate's ``symbol_id``."""
    return f"{base}/{quote}"


def asset_pair_of(symbol_id: str) -> str | None:
    """``BASE/QUOTE`` of a symbol id (``BITSTAMP_SPOT_BTC_USD`` -> ``BTC/USD``), if it names
    one."""
    assets = assets_of(symbol_id)
    return asset_pair(*assets) if assets is not None else None


def exrate_pairs(symbols: Iterable[str]) -> tuple[str, ...]:
    """The asset pairs of ``symbols``, in order, once each: what ``exrate`` is subscribed for."""
    pairs = (asset_pair_of(symbol_id) for symbol_id in symbols)
    return tuple(dict.fromkeys(pair for pair in pairs if pair is not None))


def exrate_subscription(pairs: Sequence[str]) -> ScopeMessage:
    """``exrate`` needs an asset filter, and a scope crosses every type with every filter: it
    is added by a ``subscribe`` of its own, so the pairs do not widen the symbol streams."""
    return ScopeMessage(
        type="subscribe",
        heartbeat=True,
        subscribe_data_type=["exrate"],
        subscribe_filter_asset_id=list(pairs),
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


class TimestampReader:
    """Epoch seconds of CoinAPI timestamps with each minute's epoch cached, for hot paths (bars,
    latency): one dict lookup and one number parse per time. Only CoinAPI's own form
    (``yyyy-MM-ddTHH:mm:ss.fffffffZ``) takes the cache; any other ISO form, an offset say, is
    parsed in full, so it cannot put a wrong minute in the cache."""

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: dict[str, int] = {}

    def _minute(self, text: str) -> int | None:
        if len(text) != 28 or text[-1] != "Z" or text[16] != ":" or not text[17:19].isdigit():
            return None
        prefix = text[:16]
        minute = self._minutes.get(prefix)
        if minute is None:
            if len(self._minutes) >= 4096:  # a day-long backfill must not grow it for ever
                self._minutes.clear()
            minute = self._minutes[prefix] = int(parse_time(prefix + ":00Z").timestamp())
        return minute

    def second(self, text: str) -> int:
        """Whole seconds, floored, computed exactly (a float would round 59.9999999 up)."""
        minute = self._minute(text)
        if minute is None:
            return int(parse_time(text).timestamp() // 1)
        return minute + int(text[17:19])

    def seconds(self, text: str) -> float:
        """Seconds as a float: the 100 ns digits to float precision. ``ValueError`` for text
        that is not a time."""
        minute = self._minute(text)
        if minute is None:
            return parse_time(text).timestamp()
        return minute + float(text[17:27])


def format_time(moment: datetime) -> str:
    """Format an aware datetime the way CoinAPI does: UTC, 7 fractional digits, ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def levels(pairs: Sequence[tuple[Decimal, Decimal]]) -> list[Level]:
    """Build a level list from ``(price, size)`` pairs (tests, simulator)."""
    return [Level(p, s) for p, s in pairs]
