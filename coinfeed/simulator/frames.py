"""Market events as wire frames: each event encoded once, with its ``sequence`` cut out.

How this works: every frame of a stream starts with the same bytes up to the sequence number
(``{"type":"trade","symbol_id":"X","sequence":``), taken from the real encoder. An event is
encoded once with ``sequence`` 0; the part after that ``0`` is the suffix. A connection's frame
is then ``prefix + its own sequence + suffix``: one bytes formatting per frame and connection,
not one JSON encoding. Timestamps come from the wall clock in 100 ns ticks, never going
backwards, spread evenly over a batch.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import attrs

from coinfeed.core.protocol import (
    Book5,
    Book20,
    Book50,
    BookUpdate,
    Quote,
    Reconnect,
    Trade,
    encode,
    format_time,
    levels,
)
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.simulator.market import MarketBookChange, MarketEvent, MarketTrade, Pair
from coinfeed.simulator.scope import PRODUCED_TYPES
from coinfeed.simulator.session import WireItem
from coinfeed.simulator.truth import Truth

TRADE, QUOTE, BOOK, BOOK5, BOOK20, BOOK50 = range(len(PRODUCED_TYPES))
TOP_DEPTH = {BOOK5: 5, BOOK20: 20, BOOK50: 50}
_COINAPI_LAG = 5_000
"""``time_coinapi`` trails ``time_exchange`` by 0.5 ms (100 ns units)."""


class WireClock:
    """Formats 100 ns ticks since the epoch as CoinAPI timestamps, caching the seconds part."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, ticks: int) -> str:
        """``yyyy-MM-ddTHH:mm:ss.fffffffZ`` for ``ticks`` (same text as ``format_time``)."""
        second, frac = divmod(ticks, 10_000_000)
        if second != self._second:
            self._second = second
            self._prefix = format_time(datetime.fromtimestamp(second, UTC))[:20]
        return f"{self._prefix}{frac:07d}Z"


@attrs.define
class FrameEncoder:
    """Encodes market events for every stream (stream index = type index * N + symbol index)."""

    symbols: tuple[str, ...]
    _prefixes: list[bytes] = attrs.field(init=False)
    _clock: WireClock = attrs.field(factory=WireClock)
    _last_wall: int = 0

    def __attrs_post_init__(self) -> None:
        self._prefixes = [
            _sequence_prefix(t, s) for t in range(len(PRODUCED_TYPES)) for s in self.symbols
        ]
        self.stamp_now()

    def stamp_now(self) -> int:
        """Wall clock in 100 ns ticks, never going backwards."""
        self._last_wall = max(self._last_wall, time.time_ns() // 100)
        return self._last_wall

    def encode_batch(
        self, events: list[MarketEvent], demand: list[int], truth: Truth
    ) -> list[WireItem]:
        """Record trades (REST JSON) in ``truth``; frames for the streams with demand."""
        start, end = self._last_wall, self.stamp_now()
        span, n = end - start, len(events)
        nsym, symbols, fmt = len(self.symbols), self.symbols, self._clock.format
        items: list[WireItem] = []
        for k, ev in enumerate(events):
            ticks = start + (k + 1) * span // n
            te, tc = fmt(ticks), fmt(ticks + _COINAPI_LAG)
            sym = ev.symbol
            symbol_id = symbols[sym]
            if isinstance(ev, MarketTrade):
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
        te, tc = self._clock.format(ticks), self._clock.format(ticks + _COINAPI_LAG)
        symbol_id = self.symbols[sym]
        return encode(
            _book_record(type_index, symbol_id, sequence, te, tc, asks, bids, is_snapshot)
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
    sample: Trade | Quote | BookUpdate | Book5 | Book20 | Book50
    if type_index == TRADE:
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
