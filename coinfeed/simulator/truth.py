"""Ground truth: every trade the market produced (within retention), each book's true state,
the final OHLCV bars and the last exchange rates sent, and what every connection was sent and
skipped.

Trades are stored as their encoded REST JSON (lower-case uuid); their ``time_exchange`` string
sorts like the time itself (fixed width, UTC), so REST history is a bisect and a join.
Retention is a count per symbol (``trade_retention``, 50,000 by default, about 260 bytes per
trade): beyond it the oldest trades are evicted, from REST history and from the truth alike.
Bars exist only for the (symbol, period)s some connection subscribed, while it did; the last
:data:`BARS_KEPT` of each are kept.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping

import attrs
import msgspec

from coinfeed.core.protocol import Exrate, Ohlcv, levels
from coinfeed.core.rest_protocol import LastTrade, RestBook, RestQuote, RestTrade
from coinfeed.simulator.clock import Latency, StampedTrade, WireClock, stamp_offsets, ticks_of
from coinfeed.simulator.market import Market
from coinfeed.simulator.ohlcv import BarKey
from coinfeed.simulator.scope import EXRATE_TYPE, PRODUCED_TYPES

DATA_TYPES = (*PRODUCED_TYPES, EXRATE_TYPE)
"""The data types the simulator produces, in stream-index order (``exrate`` has no stream)."""
BARS_KEPT = 10_000
"""Final bars kept per (symbol, period): 2.8 hours of ``1SEC`` bars."""

_trades_decoder = msgspec.json.Decoder(list[RestTrade])
_trade_decoder = msgspec.json.Decoder(RestTrade)


@attrs.define
class TradeLog:
    """One symbol's trades as REST JSON, oldest first, bounded by ``retention``.

    ``time_exchange`` sits at a fixed offset in every body of a symbol (the record's field
    order is fixed), so the log keeps no separate time index: bisect reads it from the bodies.
    """

    symbol_id: str
    retention: int
    bodies: list[bytes] = attrs.field(factory=list)
    produced: int = 0
    """Trades ever appended, evicted ones included."""
    _at: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._at = (
            len(b'{"symbol_id":"') + len(self.symbol_id.encode()) + len(b'","time_exchange":"')
        )

    def time_of(self, body: bytes) -> str:
        """The ``time_exchange`` of one stored body."""
        return body[self._at : self._at + 28].decode()

    def append(self, body: bytes) -> None:
        """Record one trade (its REST JSON); evicts the oldest beyond retention (amortized)."""
        self.bodies.append(body)
        self.produced += 1
        excess = len(self.bodies) - self.retention
        if excess > max(1024, self.retention // 8):
            del self.bodies[:excess]

    def _first(self) -> int:
        return max(0, len(self.bodies) - self.retention)

    def history(self, start: str, end: str, limit: int) -> list[bytes]:
        """Trades with ``start <= time_exchange < end``, oldest first, at most ``limit``."""
        key = self.time_of
        lo = bisect.bisect_left(self.bodies, start, lo=self._first(), key=key)
        hi = bisect.bisect_left(self.bodies, end, lo=lo, key=key)
        return self.bodies[lo : min(hi, lo + limit)]

    def since(self, start: str) -> list[bytes]:
        """Trades with ``time_exchange >= start``, oldest first."""
        lo = bisect.bisect_left(self.bodies, start, lo=self._first(), key=self.time_of)
        return self.bodies[lo:]

    def latest(self, limit: int) -> list[bytes]:
        """The newest ``limit`` trades, newest first."""
        first = max(self._first(), len(self.bodies) - limit)
        return self.bodies[first:][::-1]

    def all(self) -> list[bytes]:
        """Every retained trade, oldest first."""
        return self.bodies[self._first() :]


@attrs.define
class SessionCounters:
    """What one connection was sent, skipped and had discarded, per data type."""

    connection_id: int
    sent: list[int] = attrs.field(factory=lambda: [0] * len(DATA_TYPES))
    """Frames handed to the send queue, per data type (index as in :data:`DATA_TYPES`)."""
    skipped: list[int] = attrs.field(factory=lambda: [0] * len(DATA_TYPES))
    """Sequence numbers used without a frame (skip faults, stalls), per data type."""
    discarded: int = 0
    """Frames queued but never written (buffer overflow, error, disconnect)."""
    heartbeats: int = 0
    injected: int = 0
    """Frames sent by fault injection (raw, malformed, oversized, duplicates, control)."""
    open: bool = True

    def sent_of(self, data_type: str) -> int:
        """Frames of ``data_type`` handed to the send queue."""
        return self.sent[DATA_TYPES.index(data_type)]

    def skipped_of(self, data_type: str) -> int:
        """Sequence numbers of ``data_type`` used without sending a frame."""
        return self.skipped[DATA_TYPES.index(data_type)]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view with per-type dicts."""
        return {
            "connection_id": self.connection_id,
            "open": self.open,
            "sent": dict(zip(DATA_TYPES, self.sent, strict=True)),
            "skipped": dict(zip(DATA_TYPES, self.skipped, strict=True)),
            "discarded": self.discarded,
            "heartbeats": self.heartbeats,
            "injected": self.injected,
        }

    def add_into(self, total: SessionCounters) -> None:
        """Add these counts into ``total``."""
        for i in range(len(DATA_TYPES)):
            total.sent[i] += self.sent[i]
            total.skipped[i] += self.skipped[i]
        total.discarded += self.discarded
        total.heartbeats += self.heartbeats
        total.injected += self.injected


class TruthSnapshot(msgspec.Struct, kw_only=True):
    """What ``GET /_sim/truth`` returns: trades, book and final bars (by period) per symbol, the
    last exchange rate per pair, counters per connection."""

    trades: dict[str, list[RestTrade]]
    trades_produced: dict[str, int]
    books: dict[str, RestBook]
    ohlcv: dict[str, dict[str, list[Ohlcv]]]
    exrates: list[Exrate]
    connections: list[msgspec.Raw]
    totals: msgspec.Raw


_CLOSED_KEPT = 1_000


@attrs.define
class Truth:
    """The simulator's ground truth, shared by the market task, WebSocket and REST."""

    market: Market
    retention: int
    latency: Mapping[str, Latency] = attrs.field(factory=dict)
    logs: list[TradeLog] = attrs.field(init=False)
    index: dict[str, int] = attrs.field(init=False)
    book_time: list[str] = attrs.field(init=False)
    """Per symbol, the ``time_exchange`` of its last book change."""
    quote_time: list[str] = attrs.field(init=False)
    last_trade: list[bytes | None] = attrs.field(init=False)
    connections: dict[int, SessionCounters] = attrs.field(factory=dict)
    _evicted: SessionCounters = attrs.field(factory=lambda: SessionCounters(-1))
    _coinapi_lag: list[int] = attrs.field(init=False)
    """Per symbol, ``time_coinapi - time_exchange`` in ticks (as its frames carry them)."""
    _clock: WireClock = attrs.field(factory=WireClock)
    _bars: dict[BarKey, deque[Ohlcv]] = attrs.field(factory=dict)
    _rates: dict[tuple[str, str], Exrate] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        n = len(self.market.symbols)
        self.logs = [TradeLog(s, self.retention) for s in self.market.symbols]
        self.index = {s: i for i, s in enumerate(self.market.symbols)}
        self.book_time = ["1970-01-01T00:00:00.0000000Z"] * n
        self.quote_time = list(self.book_time)
        self.last_trade = [None] * n
        offsets = [stamp_offsets(s, self.latency) for s in self.market.symbols]
        self._coinapi_lag = [o.coinapi - o.exchange for o in offsets]

    # -- in-process accessors -----------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol id of the market."""
        return self.market.symbols

    def trades(self, symbol_id: str) -> list[RestTrade]:
        """Every retained trade of ``symbol_id``, oldest first (``[]`` for an unknown id)."""
        i = self.index.get(symbol_id)
        if i is None:
            return []
        return _trades_decoder.decode(b"[" + b",".join(self.logs[i].all()) + b"]")

    def trades_produced(self, symbol_id: str) -> int:
        """How many trades the market ever produced for ``symbol_id`` (evicted ones included)."""
        i = self.index.get(symbol_id)
        return 0 if i is None else self.logs[i].produced

    def book(self, symbol_id: str, limit_levels: int | None = None) -> RestBook | None:
        """The true current book (``None`` for an unknown id)."""
        i = self.index.get(symbol_id)
        if i is None:
            return None
        asks, bids = self.market.top(i, limit_levels)
        t = self.book_time[i]
        return RestBook(
            symbol_id=symbol_id,
            time_exchange=t,
            time_coinapi=self._coinapi_time(i, t),
            asks=levels(asks),
            bids=levels(bids),
        )

    def quote(self, symbol_id: str) -> RestQuote | None:
        """The current L1 with the last trade (``None`` for an unknown id)."""
        i = self.index.get(symbol_id)
        if i is None:
            return None
        q, t, body = self.market.quote(i), self.quote_time[i], self.last_trade[i]
        last = None
        if body is not None:
            rt = _trade_decoder.decode(body)
            last = LastTrade(
                time_exchange=rt.time_exchange,
                time_coinapi=rt.time_coinapi,
                uuid=rt.uuid,
                price=rt.price,
                size=rt.size,
                taker_side=rt.taker_side,
            )
        return RestQuote(
            symbol_id=symbol_id,
            time_exchange=t,
            time_coinapi=self._coinapi_time(i, t),
            ask_price=q.ask_price,
            ask_size=q.ask_size,
            bid_price=q.bid_price,
            bid_size=q.bid_size,
            last_trade=last,
        )

    def ohlcv(self, symbol_id: str, period_id: str) -> list[Ohlcv]:
        """The final bars sent for ``symbol_id`` and ``period_id``, oldest first.

        Only while some connection subscribed them; ``sequence`` is 0 (numbers are per
        connection). ``[]`` for an unknown id or period.
        """
        i = self.index.get(symbol_id)
        return [] if i is None else list(self._bars.get((i, period_id), ()))

    def exrate(self, base: str, quote: str) -> Exrate | None:
        """The last exchange rate sent for ``base``/``quote`` (``None`` before the first)."""
        return self._rates.get((base, quote))

    def stamped_trades(self, sym: int, since: int) -> list[StampedTrade]:
        """Retained trades of symbol index ``sym`` with ``time_exchange`` at or after tick
        ``since``, oldest first (what bars and rates start from)."""
        bodies = self.logs[sym].since(self._clock.format(since))
        if not bodies:
            return []
        trades = _trades_decoder.decode(b"[" + b",".join(bodies) + b"]")
        return [StampedTrade(sym, ticks_of(t.time_exchange), t.price, t.size) for t in trades]

    def totals(self) -> SessionCounters:
        """Counters summed over every connection so far (open and closed)."""
        total = SessionCounters(-1)
        self._evicted.add_into(total)
        for c in self.connections.values():
            c.add_into(total)
        return total

    def snapshot(self, symbol_ids: Iterable[str] | None = None) -> TruthSnapshot:
        """Everything at once (what ``/_sim/truth`` serves); unknown ids are left out."""
        ids = [s for s in (symbol_ids or self.symbols) if s in self.index]
        books = {s: b for s in ids if (b := self.book(s)) is not None}
        ohlcv: dict[str, dict[str, list[Ohlcv]]] = {}
        for (i, period), bars in self._bars.items():
            if self.symbols[i] in ids:
                ohlcv.setdefault(self.symbols[i], {})[period] = list(bars)
        enc = msgspec.json.encode
        return TruthSnapshot(
            trades={s: self.trades(s) for s in ids},
            trades_produced={s: self.trades_produced(s) for s in ids},
            books=books,
            ohlcv=ohlcv,
            exrates=list(self._rates.values()),
            connections=[msgspec.Raw(enc(c.to_dict())) for c in self.connections.values()],
            totals=msgspec.Raw(enc(self.totals().to_dict())),
        )

    # -- recording (market task, WebSocket sessions) ------------------------------------------

    def record_trade(self, sym: int, body: bytes) -> None:
        """Store one produced trade's REST JSON."""
        self.logs[sym].append(body)
        self.last_trade[sym] = body

    def record_bar(self, key: BarKey, bar: Ohlcv) -> None:
        """Keep one final bar (the last :data:`BARS_KEPT` per symbol and period)."""
        kept = self._bars.get(key)
        if kept is None:
            kept = self._bars[key] = deque(maxlen=BARS_KEPT)
        kept.append(bar)

    def record_rate(self, rate: Exrate) -> None:
        """Keep the exchange rate just sent (the last one per pair)."""
        self._rates[(rate.asset_id_base, rate.asset_id_quote)] = rate

    def _coinapi_time(self, sym: int, time_exchange: str) -> str:
        return self._clock.format(ticks_of(time_exchange) + self._coinapi_lag[sym])

    def open_connection(self, connection_id: int) -> SessionCounters:
        """Start counting for a new connection; keeps the last 1,000 closed ones in detail."""
        counters = SessionCounters(connection_id)
        self.connections[connection_id] = counters
        if len(self.connections) > 2 * _CLOSED_KEPT:
            closed = [c for c in self.connections.values() if not c.open]
            for c in closed[: len(closed) - _CLOSED_KEPT]:
                c.add_into(self._evicted)
                del self.connections[c.connection_id]
        return counters
