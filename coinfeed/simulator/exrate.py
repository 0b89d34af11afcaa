"""Exchange rates: a VWAP of the simulator's own trades per asset pair (pure).

How this works: a pair's rate is the volume-weighted average price of the trades of every symbol
trading that pair (``BITSTAMP_SPOT_BTC_USDT`` and ``BINANCE_SPOT_BTC_USDT`` for BTC/USDT) that
the simulator retains, within the last 24 hours: CoinAPI's VWAP-24H over what the truth holds.
While a pair is tracked each of its symbols keeps a window mirroring its retained trades (the
same count as the trade log's retention), with running sums of notional and volume kept exact,
so a trade costs two additions and a rate one exact division, rounded half-even to 9 decimals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Final

import attrs

from coinfeed.simulator.clock import TICKS_PER_SECOND, StampedTrade
from coinfeed.simulator.market import EXACT

RATE_DECIMALS: Final = 9
RATE_TYPE: Final = "BASE_QUOTE_ISOLATED"
"""A rate of one pair from that pair's own markets (no crosses)."""
WINDOW_TICKS: Final = 86_400 * TICKS_PER_SECOND

TradeHistory = Callable[[int, int], list[StampedTrade]]
"""``(symbol index, since ticks)`` -> that symbol's retained trades from then on, oldest first."""


def vwap(notional: Decimal, volume: Decimal) -> Decimal:
    """``notional / volume`` rounded half-even to :data:`RATE_DECIMALS` decimals, exactly."""
    units = round(Fraction(notional) / Fraction(volume) * 10**RATE_DECIMALS)
    return EXACT.scaleb(Decimal(units), -RATE_DECIMALS)


@attrs.define
class _Window:
    """One symbol's retained trades of the last 24 hours, with exact running sums."""

    trades: deque[StampedTrade] = attrs.field(factory=deque)
    notional: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)

    def push(self, trade: StampedTrade) -> None:
        self.trades.append(trade)
        self.notional = EXACT.add(self.notional, EXACT.multiply(trade.price, trade.size))
        self.volume = EXACT.add(self.volume, trade.size)

    def trim(self, keep: int, since: int) -> None:
        """Drop the oldest trades beyond ``keep`` and those before tick ``since``."""
        trades = self.trades
        while trades and (len(trades) > keep or trades[0].ticks < since):
            old = trades.popleft()
            self.notional = EXACT.subtract(self.notional, EXACT.multiply(old.price, old.size))
            self.volume = EXACT.subtract(self.volume, old.size)


@attrs.define
class ExchangeRates:
    """The VWAP of every tracked pair over its symbols' retained trades."""

    pair_symbols: list[tuple[int, ...]]
    """Per pair index, the indexes of the symbols trading it."""
    retention: int
    """Trades kept per symbol, as in the trade log (``trade_retention``)."""
    _tracked: frozenset[int] = attrs.field(default=frozenset(), init=False)
    _windows: dict[int, _Window] = attrs.field(factory=dict, init=False)

    @property
    def tracked(self) -> frozenset[int]:
        """The pairs rates are computed for."""
        return self._tracked

    def watches(self, sym: int) -> bool:
        """Whether trades of symbol index ``sym`` count towards a tracked rate."""
        return sym in self._windows

    def track(self, pairs: frozenset[int], history: TradeHistory) -> None:
        """Compute rates for exactly ``pairs``; a newly watched symbol starts from its retained
        trades."""
        self._tracked = pairs
        wanted = {sym for pair in pairs for sym in self.pair_symbols[pair]}
        for sym in self._windows.keys() - wanted:
            del self._windows[sym]
        for sym in sorted(wanted - self._windows.keys()):
            window = self._windows[sym] = _Window()
            for trade in history(sym, 0):
                window.push(trade)

    def add(self, trades: Iterable[StampedTrade]) -> None:
        """Count produced trades of watched symbols (others are ignored)."""
        windows, keep = self._windows, self.retention
        for trade in trades:
            window = windows.get(trade.symbol)
            if window is not None:
                window.push(trade)
                if len(window.trades) > keep:
                    window.trim(keep, 0)

    def rates(self, now: int) -> list[tuple[int, Decimal]]:
        """(pair, rate) of every tracked pair with trades in the 24 hours before tick ``now``."""
        since = now - WINDOW_TICKS
        for window in self._windows.values():
            window.trim(self.retention, since)
        out: list[tuple[int, Decimal]] = []
        for pair in sorted(self._tracked):
            windows = [self._windows[sym] for sym in self.pair_symbols[pair]]
            volume = _total(w.volume for w in windows)
            if volume:
                out.append((pair, vwap(_total(w.notional for w in windows), volume)))
        return out


def _total(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for v in values:
        total = EXACT.add(total, v)
    return total
