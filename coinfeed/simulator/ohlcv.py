"""OHLCV bars of the subscribed (symbol, period)s, built from the simulator's own trades (pure).

How this works: the supported period ids are CoinAPI's whose length divides a day (``1SEC`` …
``1DAY``), so every period is aligned to UTC midnight and a trade's period is its
``time_exchange`` minus the remainder. :class:`OhlcvBars` keeps one open bar per tracked
(symbol, period) and folds in every trade of that symbol (start inclusive, end exclusive) with
exact decimals. A bar closes when a trade of a later period arrives, or when the clock passes
its end (a quiet market); open bars that changed are reported again on request (the caller's
interim timer). A bar that starts being tracked mid-period is first filled from the retained
trades of its period, so every bar is built from exactly the trades the market produced in it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Final

import attrs

from coinfeed.core.protocol import DAY_PERIODS
from coinfeed.simulator.clock import TICKS_PER_SECOND, StampedTrade
from coinfeed.simulator.market import EXACT

PERIODS: Final[Mapping[str, int]] = {
    period_id: seconds * TICKS_PER_SECOND for period_id, seconds in DAY_PERIODS.items()
}
"""Period id -> length in 100 ns ticks, shortest first: every CoinAPI period dividing a day."""

BarKey = tuple[int, str]
"""(symbol index, period id)."""

TradeHistory = Callable[[int, int], list[StampedTrade]]
"""``(symbol index, since ticks)`` -> that symbol's retained trades from then on, oldest first."""


@attrs.define
class Bar:
    """One period's open, high, low, close and volume so far (times in ticks)."""

    start: int
    end: int
    time_open: int
    time_close: int
    price_open: Decimal
    price_high: Decimal
    price_low: Decimal
    price_close: Decimal
    volume: Decimal
    trades: int = 1
    changed: bool = True
    """Changed since it was last reported."""

    @classmethod
    def first(cls, trade: StampedTrade, length: int) -> Bar:
        """The bar of the period ``trade`` falls in, holding that trade only."""
        start = trade.ticks - trade.ticks % length
        p = trade.price
        return cls(start, start + length, trade.ticks, trade.ticks, p, p, p, p, trade.size)

    def add(self, trade: StampedTrade) -> None:
        """Fold in a later trade of the same period."""
        p = trade.price
        if p > self.price_high:
            self.price_high = p
        elif p < self.price_low:
            self.price_low = p
        self.price_close = p
        self.time_close = trade.ticks
        self.volume = EXACT.add(self.volume, trade.size)
        self.trades += 1
        self.changed = True

    def merge(self, later: Bar) -> None:
        """Fold in a bar of later trades that lies within this one's period."""
        if later.price_high > self.price_high:
            self.price_high = later.price_high
        if later.price_low < self.price_low:
            self.price_low = later.price_low
        self.price_close, self.time_close = later.price_close, later.time_close
        self.volume = EXACT.add(self.volume, later.volume)
        self.trades += later.trades
        self.changed = True

    def widened(self, length: int) -> Bar:
        """A copy of this bar as the bar of the ``length`` period it lies in."""
        start = self.start - self.start % length
        return attrs.evolve(self, start=start, end=start + length, changed=True)


BarUpdate = tuple[BarKey, Bar, bool]
"""A bar to send: its key, the bar and whether it is final (its period closed)."""


@attrs.define
class OhlcvBars:
    """The open bar of every tracked (symbol, period), and which closed or changed."""

    exchange_offsets: list[int]
    """Per symbol index, ticks from the clock to its ``time_exchange`` (latency shifts it)."""
    tracked: frozenset[BarKey] = attrs.field(default=frozenset(), init=False)
    """The (symbol, period)s bars are built for."""
    _open: dict[BarKey, Bar | None] = attrs.field(factory=dict, init=False)
    """Per tracked key, the bar of the current period (``None`` before its first trade)."""
    _keys_of: list[list[tuple[BarKey, int]]] = attrs.field(init=False)
    """Per symbol index, the keys and period lengths of its bars (what :meth:`add` updates)."""
    _next_close: int = attrs.field(default=sys.maxsize, init=False)
    """No bar can be due before this clock tick (a lower bound, recomputed when reached)."""

    def __attrs_post_init__(self) -> None:
        self._keys_of = [[] for _ in self.exchange_offsets]

    def watches(self, sym: int) -> bool:
        """Whether trades of symbol index ``sym`` go into some bar."""
        return bool(self._keys_of[sym])

    def track(self, keys: frozenset[BarKey], now: int, history: TradeHistory) -> None:
        """Build bars for exactly ``keys`` from clock tick ``now`` on.

        Bars no longer tracked are dropped unsent; a newly tracked one starts with the
        retained trades of its current period, fetched once per symbol.
        """
        self.tracked = keys
        for key in self._open.keys() - keys:
            del self._open[key]
        added: dict[int, list[str]] = {}
        for sym, period in sorted(keys - self._open.keys()):
            added.setdefault(sym, []).append(period)
        for sym, periods in added.items():
            exchange_now = now + self.exchange_offsets[sym]
            starts = {p: exchange_now - exchange_now % PERIODS[p] for p in periods}
            trades = history(sym, min(starts.values()))
            for period, start in starts.items():
                since = [t for t in trades if t.ticks >= start]
                self._open[(sym, period)] = _bar_of(since, PERIODS[period])
        for sym, keys_of in enumerate(self._keys_of):
            keys_of[:] = [((sym, p), n) for p, n in PERIODS.items() if (sym, p) in self._open]
        self._next_close = self._earliest_close()

    def add(self, trades: Iterable[StampedTrade]) -> list[BarUpdate]:
        """Fold in produced trades (in time order per symbol); returns the bars they closed.

        Each trade goes once into its symbol's one-second chunk, and chunks go into the bars:
        a chunk never straddles a period boundary (every period is whole seconds), so this gives
        the same bars as trade by trade, and 28 periods cost hardly more than one.
        """
        closed: list[BarUpdate] = []
        chunks: dict[int, Bar] = {}
        keys_of = self._keys_of
        for trade in trades:
            if not keys_of[trade.symbol] or not trade.size:  # size 0 is a marker, not a trade
                continue
            chunk = chunks.get(trade.symbol)
            if chunk is not None and trade.ticks < chunk.end:
                chunk.add(trade)
                continue
            if chunk is not None:
                self._merge(trade.symbol, chunk, closed)
            chunks[trade.symbol] = Bar.first(trade, TICKS_PER_SECOND)
        for sym, chunk in chunks.items():
            self._merge(sym, chunk, closed)
        return closed

    def _merge(self, sym: int, chunk: Bar, closed: list[BarUpdate]) -> None:
        """Fold a chunk into every bar of its symbol, closing the bars of earlier periods."""
        bars = self._open
        for key, length in self._keys_of[sym]:
            bar = bars[key]
            if bar is not None and chunk.start < bar.end:
                bar.merge(chunk)
                continue
            if bar is not None:
                closed.append((key, bar, True))
            bar = bars[key] = chunk.widened(length)
            self._next_close = min(self._next_close, bar.end - self.exchange_offsets[sym])

    def close_due(self, now: int) -> list[BarUpdate]:
        """Close the bars whose period ended by clock tick ``now`` (no later trade can join)."""
        if now < self._next_close:
            return []
        closed: list[BarUpdate] = []
        offsets = self.exchange_offsets
        for key, bar in self._open.items():
            if bar is not None and bar.end <= now + offsets[key[0]]:
                closed.append((key, bar, True))
        for key, _, _ in closed:
            self._open[key] = None
        self._next_close = self._earliest_close()
        return closed

    def changed(self) -> list[BarUpdate]:
        """The open bars that changed since they were last reported (now reported)."""
        out: list[BarUpdate] = []
        for key, bar in self._open.items():
            if bar is not None and bar.changed:
                bar.changed = False
                out.append((key, bar, False))
        return out

    def _earliest_close(self) -> int:
        offsets = self.exchange_offsets
        ends = [b.end - offsets[k[0]] for k, b in self._open.items() if b is not None]
        return min(ends, default=sys.maxsize)


def _bar_of(trades: list[StampedTrade], length: int) -> Bar | None:
    """The bar of ``trades`` (all of one period), or ``None`` for no trade."""
    trades = [t for t in trades if t.size]
    if not trades:
        return None
    bar = Bar.first(trades[0], length)
    for t in trades[1:]:
        bar.add(t)
    return bar
