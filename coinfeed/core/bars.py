"""Bars built from the trades coinfeed delivers (``--bars``), exact and gap-aware.

How this works: :class:`BarBuilder` sees every trade event the processor emits, live or
backfilled, and folds it into the bar of each configured period (by ``time_exchange``, periods
start-inclusive and end-exclusive, aligned to the UTC day). A bar is emitted once its period has
ended plus ``grace`` on the processor's wall clock. Emitted bars are kept for a while: a trade
that arrives later (a REST backfill) or a trade gap's outcome re-emits the bar with ``revision``
incremented, so a consumer keeping the highest revision has exact bars.

A bar is ``complete`` unless trades of its period may be missing: a trade gap of its symbol that
overlaps the period is pending or ended ``unrecovered``, or the period began before coinfeed had
every trade of the symbol (before it went live, or before the restart checkpoint it backfilled
from). Trades with size 0 are CoinAPI's markers, not trades, and are left out.

Memory stays bounded: bars are kept for revision ``REVISION_WINDOW`` seconds after their period
ended (longer while a pending gap overlaps them), at most ``RETAINED_PER_SERIES`` per symbol and
period; a trade older than that is counted in ``late_trades`` and changes nothing.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import attrs

from coinfeed.core.events import BarEvent, Event, GapEvent, TradeEvent
from coinfeed.core.protocol import DAY_PERIODS, TimestampReader, format_time, parse_time

REVISION_WINDOW: Final = 300.0
"""Seconds after its period ended that a bar can still be revised."""
RETAINED_PER_SERIES: Final = 1024
"""Emitted bars kept per (symbol, period) at most, whatever their age."""
_add: Final = decimal.Context(prec=60).add
"""Volumes are sums of exact sizes: 60 significant digits hold any sum of CoinAPI's 9-decimal
amounts exactly (a hostile 1E+400 is rounded, never raised)."""


@attrs.frozen
class Period:
    """A bar period: CoinAPI's id (``1SEC``, ``5MIN``, ``1HRS``, ``1DAY``) and its length."""

    period_id: str
    seconds: int


def parse_period(text: str) -> Period:
    """A CoinAPI period id whose length divides a day (:data:`DAY_PERIODS`, ``01hrs`` too);
    ``ValueError`` names what is accepted."""
    period_id = text.strip().upper()
    count, unit = period_id[:-3], period_id[-3:]
    if count.isdigit():
        period_id = f"{int(count)}{unit}"
    seconds = DAY_PERIODS.get(period_id)
    if seconds is None:
        raise ValueError(
            f"{text!r} is not a CoinAPI period id that divides a day: " + ", ".join(DAY_PERIODS)
        )
    return Period(period_id, seconds)


@attrs.define(slots=True, eq=False)
class _Bar:
    symbol_id: str
    period: Period
    start: int
    start_text: str
    end_text: str
    """The period's bounds as CoinAPI writes times."""
    open: Decimal
    time_open: str
    close: Decimal
    time_close: str
    high: Decimal
    low: Decimal
    volume: Decimal
    trades_count: int = 1
    forgotten: bool = False
    """Dropped from memory: no longer revised."""
    revision: int = -1
    """-1 until first emitted."""
    emitted_complete: bool = False
    dirty: bool = False
    """A trade came after the last emission."""
    queued: bool = False
    """Waiting in the builder's list of bars to emit again."""

    @property
    def end(self) -> int:
        return self.start + self.period.seconds

    def add(self, price: Decimal, size: Decimal, time_exchange: str) -> None:
        # Open and close by exchange time; among equal times the first to arrive opens and the
        # last to arrive closes (a stable sort of the stored trades gives the same bar).
        if time_exchange < self.time_open:
            self.open, self.time_open = price, time_exchange
        if time_exchange >= self.time_close:
            self.close, self.time_close = price, time_exchange
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.volume = _add(self.volume, size)
        self.trades_count += 1
        self.dirty = True


@attrs.define(slots=True)
class _Window:
    start: float
    end: float

    def overlaps(self, bar: _Bar) -> bool:
        return self.start < bar.end and self.end >= bar.start


def _gap_window(gap: GapEvent) -> _Window:
    """Exchange-time bounds of a gap's missing trades (unknown bounds: unbounded)."""
    start = parse_time(gap.window_start).timestamp() if gap.window_start else float("-inf")
    end = parse_time(gap.window_end).timestamp() if gap.window_end else float("inf")
    return _Window(start, end)


UNRECOVERED_KEPT: Final = 1000
"""Unrecovered trade windows remembered per symbol (the newest), to mark bars they overlap."""


@attrs.define(slots=True, eq=False)
class BarBuilder:
    """Bars of every symbol for ``periods`` (see the module docstring)."""

    periods: tuple[Period, ...]
    grace: float = 2.0
    covered_from: Mapping[str, float] = attrs.field(factory=dict)
    """Per symbol, the epoch time from which coinfeed has every trade (restart checkpoint)."""
    late_trades: int = 0
    """Trades for bars no longer kept: counted, they change nothing."""
    _live_since: float | None = attrs.field(default=None, init=False)
    _series: dict[tuple[str, int], dict[int, _Bar]] = attrs.field(factory=dict, init=False)
    """Per (symbol, period seconds), bars by period start, oldest created first."""
    _latest: dict[str, list[_Bar | None]] = attrs.field(factory=dict, init=False)
    """Per symbol, the bar each period's last trade went to: most trades go to it again."""
    _forgotten_before: dict[tuple[str, int], int] = attrs.field(factory=dict, init=False)
    """Per series, the end of the newest bar dropped from memory: older periods are final."""
    _open: list[_Bar] = attrs.field(factory=list, init=False)
    """Bars not emitted yet."""
    _again: list[_Bar] = attrs.field(factory=list, init=False)
    """Emitted bars to emit again if they changed."""
    _pending: dict[str, dict[str, _Window]] = attrs.field(factory=dict, init=False)
    _unrecovered: dict[str, list[_Window]] = attrs.field(factory=dict, init=False)
    _next_due: float = attrs.field(default=float("inf"), init=False)
    _next_forget: float = attrs.field(default=0.0, init=False)
    _times: TimestampReader = attrs.field(factory=TimestampReader, init=False)
    _texts: dict[int, str] = attrs.field(factory=dict, init=False)

    def _time_text(self, epoch_seconds: int) -> str:
        """A period bound as CoinAPI writes times, cached: bars of every symbol share them."""
        text = self._texts.get(epoch_seconds)
        if text is None:
            if len(self._texts) >= 4096:
                self._texts.clear()
            text = self._texts[epoch_seconds] = format_time(
                datetime.fromtimestamp(epoch_seconds, UTC)
            )
        return text

    @property
    def next_due(self) -> float:
        """Epoch time at which :meth:`emit_due` has something to emit (inf: nothing)."""
        return self._next_due

    def went_live(self, at: datetime) -> None:
        """The first connection's subscription time: earlier periods miss trades."""
        if self._live_since is None:
            self._live_since = at.timestamp()

    def observe(self, events: Iterable[Event]) -> None:
        """Fold the trades among ``events`` into bars and note trade gaps."""
        add_trade = self._add_trade
        for event in events:
            if type(event) is TradeEvent:
                if event.size:
                    add_trade(event)
            elif type(event) is GapEvent and event.data_type == "trade":
                self._on_gap(event)

    def _add_trade(self, trade: TradeEvent) -> None:
        latest = self._latest.get(trade.symbol_id)
        if latest is None:
            latest = self._latest[trade.symbol_id] = [None] * len(self.periods)
        price, size, time_exchange = trade.price, trade.size, trade.time_exchange
        # CoinAPI's fixed-width form compares as text: most trades fall in the bar the previous
        # one did, found without parsing the time.
        canonical = len(time_exchange) == 28 and time_exchange[27] == "Z"
        for index, bar in enumerate(latest):
            if bar is None or not canonical or not bar.start_text <= time_exchange < bar.end_text:
                at = self._times.second(time_exchange)
                latest[index] = self._bar_for(trade, self.periods[index], at)
                continue
            if bar.forgotten:
                self.late_trades += 1
                continue
            bar.add(price, size, time_exchange)
            if bar.revision >= 0:
                self._emit_again(bar)

    def _bar_for(self, trade: TradeEvent, period: Period, at: int) -> _Bar | None:
        """Add ``trade`` to its bar of ``period`` outside the fast path: another bar than the
        last one of the symbol, or a new one. None when that bar is no longer kept."""
        start = at - at % period.seconds
        key = (trade.symbol_id, period.seconds)
        bars = self._series.get(key)
        if bars is None:
            bars = self._series[key] = {}
        bar = bars.get(start)
        if bar is not None:
            bar.add(trade.price, trade.size, trade.time_exchange)
            if bar.revision >= 0:
                self._emit_again(bar)
            return bar
        if start < self._forgotten_before.get(key, 0):
            self.late_trades += 1
            return None
        price, time_exchange = trade.price, trade.time_exchange
        bar = bars[start] = _Bar(
            trade.symbol_id, period, start, self._time_text(start),
            self._time_text(start + period.seconds), price, time_exchange, price, time_exchange,
            price, price, trade.size,
        )  # fmt: skip
        self._open.append(bar)
        self._next_due = min(self._next_due, bar.end + self.grace)
        return bar

    def _emit_again(self, bar: _Bar) -> None:
        if not bar.queued:
            bar.queued = True
            self._again.append(bar)
            self._next_due = float("-inf")

    def _on_gap(self, gap: GapEvent) -> None:
        symbol_id = gap.symbol_id
        window = _gap_window(gap)
        if gap.status == "pending":
            self._pending.setdefault(symbol_id, {})[gap.id] = window
        else:
            pending = self._pending.get(symbol_id)
            if pending is not None:
                pending.pop(gap.id, None)
            if gap.status == "unrecovered":
                windows = self._unrecovered.setdefault(symbol_id, [])
                windows.append(window)
                del windows[:-UNRECOVERED_KEPT]
        # Emitted bars under the window may change their ``complete``: check them again.
        for period in self.periods:
            for bar in self._series.get((symbol_id, period.seconds), {}).values():
                if bar.revision >= 0 and window.overlaps(bar):
                    self._emit_again(bar)

    def complete(self, bar: _Bar) -> bool:
        """Whether every trade of the bar's period has been seen (see the module docstring)."""
        covered_from = self.covered_from.get(bar.symbol_id, self._live_since)
        if covered_from is None or bar.start < covered_from:
            return False
        for window in self._pending.get(bar.symbol_id, {}).values():
            if window.overlaps(bar):
                return False
        return not any(window.overlaps(bar) for window in self._unrecovered.get(bar.symbol_id, ()))

    def emit_due(self, now: float, received_at: str, out: list[Event]) -> None:
        """Emit the bars due at epoch time ``now`` and the revisions waiting, then forget, at
        most once a second, what can no longer be revised."""
        if now >= self._next_forget:
            self._next_forget = now + 1.0
            self._forget(now)
        if now < self._next_due:
            return
        again, self._again = self._again, []
        for bar in again:
            bar.queued = False
            self._emit(bar, received_at, out)
        still_open: list[_Bar] = []
        next_due = float("inf")
        for bar in self._open:
            due = bar.end + self.grace
            if now >= due:
                self._emit(bar, received_at, out)
            else:
                still_open.append(bar)
                next_due = min(next_due, due)
        self._open = still_open
        self._next_due = next_due

    def emit_all(self, now: float, received_at: str, out: list[Event]) -> None:
        """At shutdown (epoch time ``now``): every bar not emitted yet, and every waiting
        revision. A period not over yet is emitted ``complete: false``: the shutdown cut it
        short."""
        for bar in self._again:
            bar.queued = False
            self._emit(bar, received_at, out)
        for bar in self._open:
            self._emit(bar, received_at, out, cut_short=bar.end > now)
        self._again, self._open = [], []
        self._next_due = float("inf")

    def _emit(self, bar: _Bar, received_at: str, out: list[Event], cut_short: bool = False) -> None:
        complete = self.complete(bar) and not cut_short
        if bar.revision >= 0 and not bar.dirty and complete == bar.emitted_complete:
            return  # a gap's outcome that changed nothing for this bar
        bar.revision += 1
        bar.emitted_complete = complete
        bar.dirty = False
        out.append(
            BarEvent(
                symbol_id=bar.symbol_id,
                period_id=bar.period.period_id,
                time_period_start=bar.start_text,
                time_period_end=bar.end_text,
                time_open=bar.time_open,
                time_close=bar.time_close,
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
                trades_count=bar.trades_count,
                revision=bar.revision,
                complete=complete,
                received_at=received_at,
            )
        )

    def _forget(self, now: float) -> None:
        """Drop emitted bars past the revision window (kept while a pending gap overlaps
        them) and beyond the per-series cap, oldest first."""
        horizon = now - REVISION_WINDOW
        for key, bars in self._series.items():
            pending = self._pending.get(key[0], {}).values()
            while bars:
                start, bar = next(iter(bars.items()))
                if bar.revision < 0 or bar.queued:
                    break  # not emitted yet, or a revision waits: keep the rest too
                over_cap = len(bars) > RETAINED_PER_SERIES
                if not over_cap and (bar.end >= horizon or any(w.overlaps(bar) for w in pending)):
                    break
                del bars[start]
                bar.forgotten = True
                self._forgotten_before[key] = max(self._forgotten_before.get(key, 0), bar.end)

    def retained(self) -> int:
        """Bars held in memory (for the memory endpoint)."""
        return sum(len(bars) for bars in self._series.values())
