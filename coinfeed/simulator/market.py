"""The seeded market: trades, quotes and L2 books for N symbols (pure: no trio, no I/O, no clock).

How this works: one ``random.Random(seed)`` drives every decision, one event at a time, so the
sequence of events (prices, sizes, uuids, book changes) is the same for a seed however it is cut
into batches. Prices and sizes are integers in units of each symbol's smallest step and become
exact ``Decimal`` values (up to 9 decimals, trailing zeros kept) only in the emitted events.
Each book side keeps a dict price -> size plus a sorted price list for top-N reads; new asks are
always above the best bid and new bids below the best ask, so the book never crosses.
Timestamps are not chosen here: the caller stamps events with the wall clock.
"""

from __future__ import annotations

import bisect
import decimal
import random
import zlib
from collections.abc import Container
from decimal import Decimal
from typing import Final, NamedTuple

import attrs

Pair = tuple[Decimal, Decimal]
"""(price, size) of one level."""

EXACT: Final = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
"""Decimal arithmetic that never rounds: sums of prices and sizes (volumes, VWAP notionals) are
exact however many trades they add up (the default context keeps only 28 digits)."""

TAKER_SIDES = ("BUY", "SELL", "BUY_ESTIMATED", "SELL_ESTIMATED", "UNKNOWN")
_TAKER_CUTS = (0.45, 0.90, 0.94, 0.98)
"""Cumulative shares of the taker sides above (45 %, 45 %, 4 %, 4 %, 2 %)."""


@attrs.frozen
class SymbolSpec:
    """Price grid of one symbol: a start price and the decimals of price and size."""

    symbol_id: str
    start_price: int
    """In price units (10**-price_scale)."""
    price_scale: int
    size_scale: int


_KNOWN: dict[str, tuple[int, int, int]] = {
    "BITSTAMP_SPOT_BTC_USD": (6_500_000, 2, 8),
    "BITSTAMP_SPOT_BTC_USDT": (6_501_000, 2, 8),
    "COINBASE_SPOT_ETH_USD": (350_000, 2, 8),
    "BINANCE_SPOT_BTC_USDT": (6_499_000, 2, 8),
    "KRAKEN_SPOT_XRP_USD": (52_000, 5, 6),
    "COINBASE_SPOT_SOL_USD": (150_000, 3, 9),
}


def spec_for(symbol_id: str) -> SymbolSpec:
    """The price grid for a symbol id: fixed for the default ids, derived from the id otherwise."""
    known = _KNOWN.get(symbol_id)
    if known is not None:
        return SymbolSpec(symbol_id, *known)
    h = zlib.crc32(symbol_id.encode())
    return SymbolSpec(symbol_id, 1_000 + h % 1_000_000, 2, 4 + h % 6)


class MarketTrade(NamedTuple):
    """An execution at the best ask (taker buys) or best bid (taker sells)."""

    symbol: int
    uuid: str
    """Lower-case UUIDv4."""
    price: Decimal
    size: Decimal
    taker_side: str


class MarketQuote(NamedTuple):
    """Best bid and ask (L1) of one symbol at this point."""

    symbol: int
    ask_price: Decimal
    ask_size: Decimal
    bid_price: Decimal
    bid_size: Decimal


class MarketBookChange(NamedTuple):
    """A book change (changed levels, absolute sizes, 0 deletes) or a full snapshot.

    ``top`` holds the top-5 levels per side after the event when the caller asked for them.
    """

    symbol: int
    is_snapshot: bool
    asks: list[Pair]
    bids: list[Pair]
    top: tuple[list[Pair], list[Pair]] | None


MarketEvent = MarketTrade | MarketQuote | MarketBookChange


@attrs.define
class _Side:
    """One side of a book. ``keys`` is sorted best first (bids are stored negated)."""

    sign: int
    levels: dict[int, int] = attrs.field(factory=dict)
    keys: list[int] = attrs.field(factory=list)

    def set(self, price: int, size: int) -> None:
        if size:
            if price not in self.levels:
                bisect.insort(self.keys, self.sign * price)
            self.levels[price] = size
        elif self.levels.pop(price, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, self.sign * price)]

    def best(self) -> int:
        return self.sign * self.keys[0]

    def price_at(self, index: int) -> int:
        return self.sign * self.keys[index]

    def top(self, n: int | None) -> list[tuple[int, int]]:
        keys = self.keys if n is None else self.keys[:n]
        return [(self.sign * k, self.levels[self.sign * k]) for k in keys]


@attrs.define
class _Book:
    mid: int
    asks: _Side = attrs.field(factory=lambda: _Side(1))
    bids: _Side = attrs.field(factory=lambda: _Side(-1))
    book_events: int = 0


@attrs.define
class Market:
    """N symbols' books, trades and quotes, advanced one seeded event at a time."""

    symbols: tuple[str, ...]
    seed: int = 1
    mix: tuple[float, float, float] = (0.55, 0.30, 0.15)
    depth: int = 30
    snapshot_every: int = 1_000
    specs: list[SymbolSpec] = attrs.field(init=False)
    _rng: random.Random = attrs.field(init=False)
    _books: list[_Book] = attrs.field(init=False)
    _cuts: tuple[float, float] = attrs.field(init=False)
    _prices: list[dict[int, Decimal]] = attrs.field(init=False)
    version: list[int] = attrs.field(init=False)
    """Per symbol, a counter bumped on every book change (for periodic top-N views)."""

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.specs = [spec_for(s) for s in self.symbols]
        total = sum(self.mix)
        self._cuts = (self.mix[0] / total, (self.mix[0] + self.mix[1]) / total)
        self._books = [self._initial_book(spec) for spec in self.specs]
        self.version = [0] * len(self.symbols)
        self._prices = [{} for _ in self.symbols]

    def _initial_book(self, spec: SymbolSpec) -> _Book:
        book, rng = _Book(spec.start_price), self._rng
        step = _step(spec)
        for i in range(self.depth):
            book.asks.set(spec.start_price + (i + 1) * step, self._size(spec, rng))
            book.bids.set(spec.start_price - (i + 1) * step, self._size(spec, rng))
        return book

    # -- generation ---------------------------------------------------------------------------

    def generate(self, count: int, *, top_for: Container[int] = ()) -> list[MarketEvent]:
        """The next ``count`` events; book events of symbols in ``top_for`` carry top-5 levels."""
        rnd, nsym = self._rng.random, len(self.symbols)
        book_cut, trade_cut = self._cuts
        out: list[MarketEvent] = []
        for _ in range(count):
            x = rnd()
            sym = int(rnd() * nsym)
            if x < book_cut:
                out.append(self._book_event(sym, sym in top_for))
            elif x < trade_cut:
                out.append(self._trade(sym))
            else:
                out.append(self.quote(sym))
        return out

    def _book_event(self, sym: int, want_top: bool) -> MarketBookChange:
        book, spec = self._books[sym], self.specs[sym]
        book.book_events += 1
        if self.snapshot_every and book.book_events % self.snapshot_every == 0:
            asks, bids = self.book(sym)
            return MarketBookChange(sym, True, asks, bids, self.top(sym, 5) if want_top else None)
        rnd = self._rng.random
        changes: tuple[dict[int, int], dict[int, int]] = ({}, {})
        if rnd() < 0.1:
            self._move_mid(book, spec, changes)
        for _ in range(1 + (rnd() < 0.4) + (rnd() < 0.15)):
            is_ask = rnd() < 0.5
            side = book.asks if is_ask else book.bids
            price, size = self._change(spec, book.mid, side)
            side.set(price, size)
            changes[0 if is_ask else 1][price] = size
        self.version[sym] += 1
        ss, dec_price = spec.size_scale, self._price
        asks = [(dec_price(sym, p), _dec(s, ss)) for p, s in sorted(changes[0].items())]
        bids = [
            (dec_price(sym, p), _dec(s, ss)) for p, s in sorted(changes[1].items(), reverse=True)
        ]
        return MarketBookChange(sym, False, asks, bids, self.top(sym, 5) if want_top else None)

    def _move_mid(
        self, book: _Book, spec: SymbolSpec, changes: tuple[dict[int, int], dict[int, int]]
    ) -> None:
        """Random-walk the mid by one step; levels it crosses are deleted (size 0)."""
        step = _step(spec)
        book.mid = max(2 * step, book.mid + (step if self._rng.random() < 0.5 else -step))
        for side, out in ((book.asks, changes[0]), (book.bids, changes[1])):
            while side.keys and side.sign * side.best() <= side.sign * book.mid:
                out[side.best()] = 0
                side.set(side.best(), 0)
            if not side.keys:
                price = book.mid + side.sign * step
                out[price] = self._size(spec, self._rng)
                side.set(price, out[price])

    def _change(self, spec: SymbolSpec, mid: int, side: _Side) -> tuple[int, int]:
        """One level change on ``side``: resize, delete or add a level (price, new size).

        Asks stay above the mid and bids below it, so the book never crosses; deletions favour
        far levels and additions near ones, which keeps the top of the book dense.
        """
        rng, n, lo = self._rng, len(side.keys), max(2, self.depth - 10)
        r = rng.random()
        if n > self.depth + 10 or (n > lo and r < 0.2):
            return side.price_at(int(n * (1.0 - rng.random() ** 2))), 0
        if n < lo or r < 0.55:
            k = 1 + int(rng.random() ** 2 * self.depth * 1.5)
            return mid + side.sign * k * _step(spec), self._size(spec, rng)
        return side.price_at(int(n * rng.random() ** 2)), self._size(spec, rng)

    def _trade(self, sym: int) -> MarketTrade:
        rng, spec, book = self._rng, self.specs[sym], self._books[sym]
        side = TAKER_SIDES[bisect.bisect(_TAKER_CUTS, rng.random())]
        price = book.asks.best() if side.startswith("BUY") else book.bids.best()
        size = 1 + int(rng.random() * 10 ** max(1, spec.size_scale - 1))
        return MarketTrade(
            sym, _uuid4(rng), self._price(sym, price), _dec(size, spec.size_scale), side
        )

    @staticmethod
    def _size(spec: SymbolSpec, rng: random.Random) -> int:
        return 1 + int(rng.random() * 2 * 10**spec.size_scale)

    # -- state --------------------------------------------------------------------------------

    def quote(self, sym: int) -> MarketQuote:
        """The current L1 of symbol index ``sym``."""
        book, spec = self._books[sym], self.specs[sym]
        ask, bid = book.asks.best(), book.bids.best()
        ss = spec.size_scale
        return MarketQuote(
            sym,
            self._price(sym, ask),
            _dec(book.asks.levels[ask], ss),
            self._price(sym, bid),
            _dec(book.bids.levels[bid], ss),
        )

    def top(self, sym: int, n: int | None) -> tuple[list[Pair], list[Pair]]:
        """The best ``n`` levels per side (all with ``None``), best first: (asks, bids)."""
        book, spec = self._books[sym], self.specs[sym]
        ss = spec.size_scale
        return (
            [(self._price(sym, p), _dec(s, ss)) for p, s in book.asks.top(n)],
            [(self._price(sym, p), _dec(s, ss)) for p, s in book.bids.top(n)],
        )

    def _price(self, sym: int, units: int) -> Decimal:
        """Prices repeat (levels near the mid), so their Decimals are cached per symbol."""
        cache = self._prices[sym]
        price = cache.get(units)
        if price is None:
            if len(cache) > 100_000:
                cache.clear()
            price = cache[units] = _dec(units, self.specs[sym].price_scale)
        return price

    def book(self, sym: int) -> tuple[list[Pair], list[Pair]]:
        """The whole true book of symbol index ``sym``: (asks, bids), best first."""
        return self.top(sym, None)


def _step(spec: SymbolSpec) -> int:
    """Level spacing in price units: about a basis point of the start price, at least 1."""
    return max(1, spec.start_price // 10_000)


def _dec(units: int, scale: int) -> Decimal:
    return Decimal(units).scaleb(-scale) if units else Decimal(0)


def _uuid4(rng: random.Random) -> str:
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
