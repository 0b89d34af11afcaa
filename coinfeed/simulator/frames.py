"""Market events as wire frames: each event encoded once, with its ``sequence`` cut out.

How this works: every frame of a stream starts with the same bytes up to the sequence number
(``{"type":"trade","symbol_id":"X","sequence":``), taken from the real encoder. An event is
encoded once with ``sequence`` 0; the part after that ``0`` is the suffix. A connection's frame
is then ``prefix + its own sequence + suffix``: one bytes formatting per frame and connection,
not one JSON encoding. OHLCV bars go the same way; exchange rates have no sequence and are one
frame for every connection. Timestamps come from the wall clock in 100 ns ticks, never going
backwards, spread evenly over a batch and shifted per symbol by fixed offsets (an injected
latency, see ``clock.stamp_offsets``), so a symbol's times keep their order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal

import attrs

from coinfeed.core.protocol import (
    Book5,
    Book20,
    Book50,
    BookUpdate,
    Exrate,
    Ohlcv,
    Quote,
    Reconnect,
    Trade,
    encode,
    levels,
)
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.simulator.clock import Latency, StampedTrade, WireClock, stamp_offsets
from coinfeed.simulator.exrate import RATE_TYPE
from coinfeed.simulator.market import MarketBookChange, MarketEvent, MarketTrade, Pair
from coinfeed.simulator.ohlcv import Bar
from coinfeed.simulator.scope import PRODUCED_TYPES
from coinfeed.simulator.session import WireItem
from coinfeed.simulator.truth import Truth

TRADE, QUOTE, BOOK, BOOK5, BOOK20, BOOK50, OHLCV = range(len(PRODUCED_TYPES))
EXRATE = len(PRODUCED_TYPES)
"""Type index of ``exrate`` in the per-type counters (it has no stream)."""
TOP_DEPTH = {BOOK5: 5, BOOK20: 20, BOOK50: 50}


@attrs.define
class FrameEncoder:
    """Encodes market events for every stream (stream index = type index * N + symbol index)."""

    symbols: tuple[str, ...]
    latency: Mapping[str, Latency] = attrs.field(factory=dict)
    tapped: list[bool] = attrs.field(init=False)
    """Per symbol index, whether its trades are collected in :attr:`stamped` (for bars, rates)."""
    stamped: list[StampedTrade] = attrs.field(factory=list)
    """Trades of tapped symbols since the caller last took them."""
    _stamps: list[tuple[str, int, int]] = attrs.field(init=False)
    """Per symbol index: its id and its ``time_exchange`` and ``time_coinapi`` offsets."""
    _prefixes: list[bytes] = attrs.field(init=False)
    _clock: WireClock = attrs.field(factory=WireClock)
    _last_wall: int = 0

    def __attrs_post_init__(self) -> None:
        self._prefixes = [
            _sequence_prefix(t, s) for t in range(len(PRODUCED_TYPES)) for s in self.symbols
        ]
        self._stamps = [(s, *stamp_offsets(s, self.latency)) for s in self.symbols]
        self.tapped = [False] * len(self.symbols)
        self.stamp_now()

    @property
    def exchange_offsets(self) -> list[int]:
        """Per symbol index, ticks from the clock to the ``time_exchange`` it stamps."""
        return [to_exchange for _, to_exchange, _ in self._stamps]

    def stamp_now(self) -> int:
        """Wall clock in 100 ns ticks, never going backwards."""
        self._last_wall = max(self._last_wall, time.time_ns() // 100)
        return self._last_wall

    def encode_batch(
        self, events: list[MarketEvent], demand: list[int], truth: Truth
    ) -> list[WireItem]:
        """Record trades in ``truth`` (REST JSON) and, of tapped symbols, in :attr:`stamped`;
        frames for the streams with demand."""
        start, end = self._last_wall, self.stamp_now()
        span, n = end - start, len(events)
        nsym, stamps, fmt = len(self.symbols), self._stamps, self._clock.format
        tapped, stamped = self.tapped, self.stamped
        items: list[WireItem] = []
        for k, ev in enumerate(events):
            ticks = start + (k + 1) * span // n
            sym = ev.symbol
            symbol_id, to_exchange, to_coinapi = stamps[sym]
            te, tc = fmt(ticks + to_exchange), fmt(ticks + to_coinapi)
            if isinstance(ev, MarketTrade):
                if tapped[sym]:
                    stamped.append(StampedTrade(sym, ticks + to_exchange, ev.price, ev.size))
                truth.record_trade(
                    sym,
                    encode(
                        RestTrade(
                            symbol_id=symbol_id,
                            time_exchange=te,
                            time_coinapi=tc,
                            uuid=ev.uuid,
                            price=ev.price,
                            size=ev.size,
                            taker_side=ev.taker_side,
                        )
                    ),
                )
                sid = sym
                if demand[sid]:
                    body = encode(
                        Trade(
                            symbol_id=symbol_id,
                            sequence=0,
                            time_exchange=te,
                            time_coinapi=tc,
                            uuid=ev.uuid.upper(),
                            price=ev.price,
                            size=ev.size,
                            taker_side=ev.taker_side,
                        )
                    )
                    items.append(self.item(sid, TRADE, symbol_id, body))
            elif isinstance(ev, MarketBookChange):
                truth.book_time[sym] = truth.quote_time[sym] = te
                sid = BOOK * nsym + sym
                if demand[sid]:
                    body = encode(
                        BookUpdate(
                            symbol_id=symbol_id,
                            sequence=0,
                            time_exchange=te,
                            time_coinapi=tc,
                            is_snapshot=ev.is_snapshot,
                            asks=levels(ev.asks),
                            bids=levels(ev.bids),
                        )
                    )
                    items.append(self.item(sid, BOOK, symbol_id, body))
                if ev.top is not None:
                    sid = BOOK5 * nsym + sym
                    body = self.encode_book(BOOK5, sym, 0, ticks, *ev.top)
                    items.append(self.item(sid, BOOK5, symbol_id, body))
            else:
                truth.quote_time[sym] = te
                sid = QUOTE * nsym + sym
                if demand[sid]:
                    body = encode(
                        Quote(
                            symbol_id=symbol_id,
                            sequence=0,
                            time_exchange=te,
                            time_coinapi=tc,
                            ask_price=ev.ask_price,
                            ask_size=ev.ask_size,
                            bid_price=ev.bid_price,
                            bid_size=ev.bid_size,
                        )
                    )
                    items.append(self.item(sid, QUOTE, symbol_id, body))
        return items

    def item(self, sid: int, tix: int, symbol_id: str, body: bytes) -> WireItem:
        """A routable frame from a body encoded with ``sequence`` 0."""
        prefix = self._prefixes[sid]
        return WireItem(sid, tix, symbol_id, prefix, body[len(prefix) + 1 :])

    def encode_book(
        self,
        type_index: int,
        sym: int,
        sequence: int,
        ticks: int,
        asks: list[Pair],
        bids: list[Pair],
        *,
        is_snapshot: bool = False,
    ) -> bytes:
        """A book, book5, book20 or book50 frame body of symbol index ``sym``."""
        symbol_id, to_exchange, to_coinapi = self._stamps[sym]
        te, tc = self._clock.format(ticks + to_exchange), self._clock.format(ticks + to_coinapi)
        return encode(
            _book_record(type_index, symbol_id, sequence, te, tc, asks, bids, is_snapshot)
        )

    def bar_record(self, sym: int, period_id: str, bar: Bar) -> Ohlcv:
        """The ``ohlcv`` record of a bar of symbol index ``sym`` (``sequence`` 0)."""
        fmt = self._clock.format
        return Ohlcv(
            symbol_id=self.symbols[sym],
            sequence=0,
            period_id=period_id,
            time_period_start=fmt(bar.start),
            time_period_end=fmt(bar.end),
            time_open=fmt(bar.time_open),
            time_close=fmt(bar.time_close),
            price_open=bar.price_open,
            price_high=bar.price_high,
            price_low=bar.price_low,
            price_close=bar.price_close,
            volume_traded=bar.volume,
            trades_count=bar.trades,
        )

    def bar_item(self, sym: int, record: Ohlcv) -> WireItem:
        """A routable ``ohlcv`` frame: one stream (one sequence) per symbol, all periods."""
        return self.item(OHLCV * len(self.symbols) + sym, OHLCV, record.symbol_id, encode(record))

    def exrate_record(self, base: str, quote: str, rate: Decimal, ticks: int) -> Exrate:
        """The ``exrate`` record of a rate computed at clock tick ``ticks``."""
        return Exrate(
            asset_id_base=base,
            asset_id_quote=quote,
            rate_type=RATE_TYPE,
            time=self._clock.format(ticks),
            rate=rate,
        )

    def reconnect_frame(self, within_seconds: int) -> bytes:
        """A ``reconnect`` frame whose ``before_time`` is ``within_seconds`` from now."""
        before = self._clock.format(self.stamp_now() + within_seconds * 10_000_000)
        return encode(Reconnect(within_seconds=within_seconds, before_time=before))


def _book_record(
    type_index: int,
    symbol_id: str,
    sequence: int,
    te: str,
    tc: str,
    asks: list[Pair],
    bids: list[Pair],
    is_snapshot: bool = False,
) -> BookUpdate | Book5 | Book20 | Book50:
    a, b = levels(asks), levels(bids)
    if type_index == BOOK:
        return BookUpdate(
            symbol_id=symbol_id,
            sequence=sequence,
            time_exchange=te,
            time_coinapi=tc,
            is_snapshot=is_snapshot,
            asks=a,
            bids=b,
        )
    record: type[Book5] | type[Book20] | type[Book50] = (
        Book5 if type_index == BOOK5 else Book20 if type_index == BOOK20 else Book50
    )
    return record(
        symbol_id=symbol_id, sequence=sequence, time_exchange=te, time_coinapi=tc, asks=a, bids=b
    )


def _sequence_prefix(type_index: int, symbol_id: str) -> bytes:
    """The encoded bytes of a frame up to its sequence number, from the real encoder."""
    zero, t = Decimal(0), "1970-01-01T00:00:00.0000000Z"
    sample: Trade | Quote | BookUpdate | Book5 | Book20 | Book50 | Ohlcv
    if type_index == OHLCV:
        sample = Ohlcv(
            symbol_id=symbol_id,
            sequence=0,
            time_period_start=t,
            time_period_end=t,
            volume_traded=zero,
            trades_count=0,
        )
    elif type_index == TRADE:
        sample = Trade(
            symbol_id=symbol_id,
            sequence=0,
            time_exchange=t,
            time_coinapi=t,
            uuid="",
            price=zero,
            size=zero,
            taker_side="",
        )
    elif type_index == QUOTE:
        sample = Quote(
            symbol_id=symbol_id,
            sequence=0,
            time_exchange=t,
            time_coinapi=t,
            ask_price=zero,
            ask_size=zero,
            bid_price=zero,
            bid_size=zero,
        )
    else:
        sample = _book_record(type_index, symbol_id, 0, t, t, [], [])
    body = encode(sample)
    return body[: body.index(b'"sequence":0') + len(b'"sequence":')]
