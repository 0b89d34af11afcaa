"""The market task and the fan-out to every connected client.

How this works: :meth:`Hub.run` wakes every ``tick_interval`` on trio's clock, asks the seeded
market for ``rate * elapsed`` events (catching up at most ``max_catchup`` seconds), has them
encoded once (``frames.py``: trades recorded in the ground truth, frames only for streams some
client wants), applies one-shot fault triggers, and routes the batch into every session, which
splices in its own sequence numbers. The market runs whether or not anyone is
connected, so what a disconnected client missed is in REST history.

OHLCV bars and exchange rates are derived from the trades, and only while some session
subscribed them: the hub tracks which (symbol, period)s and pairs are in any scope, has the
encoder collect those symbols' trades, feeds them to the bars and rates after each batch, and
on its own clocks closes bars whose period ended, sends interim bars and sends rates.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter, deque
from collections.abc import Iterator

import attrs
import trio
from loguru import logger

from coinfeed.core.protocol import assets_of, encode
from coinfeed.simulator.config import SimulatorConfig
from coinfeed.simulator.exrate import ExchangeRates
from coinfeed.simulator.faults import BUFFER_OVERFLOW_MESSAGE, WsFaults, oversized_frame
from coinfeed.simulator.frames import (
    BOOK,
    BOOK5,
    BOOK20,
    BOOK50,
    EXRATE,
    OHLCV,
    TOP_DEPTH,
    FrameEncoder,
)
from coinfeed.simulator.market import Market
from coinfeed.simulator.ohlcv import BarKey, BarUpdate, OhlcvBars
from coinfeed.simulator.scope import PRODUCED_TYPES
from coinfeed.simulator.session import DUPLICATE, REORDER, SKIP, ClientSession, WireItem
from coinfeed.simulator.truth import Truth


@attrs.define
class HubStats:
    """Counters of the WebSocket side that are not per connection."""

    market_events: int = 0
    connections_total: int = 0
    buffer_overflows: int = 0
    hello_messages: int = 0
    scope_messages: int = 0
    """hello/subscribe/unsubscribe messages applied."""
    hello_rate_violations: int = 0
    lag_seconds: float = 0.0
    """Market time dropped because the simulator fell more than ``max_catchup`` behind."""


@attrs.define(eq=False)
class Hub:
    """Owns the market clock, the sessions and the routing between them."""

    config: SimulatorConfig
    market: Market
    truth: Truth
    faults: WsFaults
    stats: HubStats = attrs.field(factory=HubStats)
    sessions: dict[int, ClientSession] = attrs.field(factory=dict)
    paused: bool = False
    demand: list[int] = attrs.field(init=False)
    """Per stream index, how many sessions want it (nothing is encoded for 0)."""
    frames: FrameEncoder = attrs.field(init=False)
    pairs: list[tuple[str, str]] = attrs.field(init=False)
    """The market's asset pairs (base, quote), by pair index."""
    bars: OhlcvBars = attrs.field(init=False)
    rates: ExchangeRates = attrs.field(init=False)
    _bar_demand: Counter[BarKey] = attrs.field(factory=Counter)
    _pair_demand: Counter[int] = attrs.field(factory=Counter)
    _next_interim: float = 0.0
    _next_rates: float = 0.0
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    _hello_times: dict[str, deque[float]] = attrs.field(factory=dict)
    _topn_versions: list[int] = attrs.field(init=False)
    _no_sessions: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        symbols = self.market.symbols
        n = len(symbols)
        self.demand = [0] * (n * len(PRODUCED_TYPES))
        self.frames = FrameEncoder(symbols, self.config.latency)
        self._topn_versions = [-1] * n
        symbols_of: dict[tuple[str, str], list[int]] = {}
        for sym, symbol_id in enumerate(symbols):
            pair = assets_of(symbol_id)
            if pair is not None:
                symbols_of.setdefault(pair, []).append(sym)
        self.pairs = list(symbols_of)
        self.bars = OhlcvBars(self.frames.exchange_offsets)
        self.rates = ExchangeRates(
            [tuple(syms) for syms in symbols_of.values()], self.config.trade_retention
        )

    # -- sessions -----------------------------------------------------------------------------

    def open_session(self, remote_ip: str) -> ClientSession:
        """A new session (not yet routed to: that starts with its first scope message)."""
        cid = next(self._ids)
        self.stats.connections_total += 1
        session = ClientSession(
            connection_id=cid,
            remote_ip=remote_ip,
            counters=self.truth.open_connection(cid),
            capacity=self.config.send_queue_size,
            flush_timeout=self.config.overflow_flush_timeout,
            routes=[-1] * len(self.demand),
            rnd=self.faults.rng.random,
        )
        self.sessions[cid] = session
        return session

    def close_session(self, session: ClientSession) -> None:
        """Forget a session: its streams stop counting as demand."""
        self.set_streams(session, set())
        self._set_derived(session, frozenset(), frozenset(), frozenset())
        session.counters.discarded += len(session.queue) + len(session.held)
        session.queue.clear()
        session.held.clear()
        session.counters.open = False
        self.sessions.pop(session.connection_id, None)
        if not self.sessions:
            self._no_sessions.set()

    async def wait_no_sessions(self) -> None:
        """Wait until no connection is open."""
        if self.sessions:
            if self._no_sessions.is_set():
                self._no_sessions = trio.Event()
            await self._no_sessions.wait()

    def apply_scope(self, session: ClientSession) -> None:
        """Route what ``session.scope`` now selects: streams, OHLCV bars and exchange rates."""
        scope, nsym = session.scope, len(self.market.symbols)
        self.set_streams(session, scope.streams(self.market.symbols))
        periods = scope.period_ids()
        bar_keys = frozenset(
            (sym, period)
            for sym in range(nsym)
            if OHLCV * nsym + sym in session.wanted
            for period in periods
        )
        self._set_derived(session, periods, bar_keys, scope.rate_pairs(self.pairs))

    def _set_derived(
        self,
        session: ClientSession,
        periods: frozenset[str],
        bar_keys: frozenset[BarKey],
        pairs: frozenset[int],
    ) -> None:
        """Count a session's bars and pairs as demand; bars and rates follow the demand."""
        self._bar_demand.update(bar_keys - session.bar_keys)
        self._bar_demand.subtract(session.bar_keys - bar_keys)
        self._pair_demand.update(pairs - session.pairs)
        self._pair_demand.subtract(session.pairs - pairs)
        session.periods, session.bar_keys, session.pairs = periods, bar_keys, pairs
        self._bar_demand = +self._bar_demand  # drop the keys nobody wants any more
        self._pair_demand = +self._pair_demand
        bar_keys, pairs = frozenset(self._bar_demand), frozenset(self._pair_demand)
        if bar_keys == self.bars.tracked and pairs == self.rates.tracked:
            return
        history = self.truth.stamped_trades
        self.bars.track(bar_keys, self.frames.stamp_now(), history)
        self.rates.track(pairs, history)
        self.frames.tapped = [
            self.bars.watches(sym) or self.rates.watches(sym)
            for sym in range(len(self.market.symbols))
        ]

    def set_streams(self, session: ClientSession, wanted: set[int]) -> None:
        """Apply a scope change: streams added restart at sequence 1 (books with a snapshot)."""
        nsym = len(self.market.symbols)
        for sid in session.wanted - wanted:
            session.routes[sid] = -1
            self.demand[sid] -= 1
        added = sorted(wanted - session.wanted)
        session.wanted = set(wanted)
        now = self.frames.stamp_now()
        for sid in added:
            self.demand[sid] += 1
            session.routes[sid] = 0
            tix, sym = divmod(sid, nsym)
            if tix == BOOK:
                asks, bids = self.market.book(sym)
                body = self.frames.encode_book(tix, sym, 1, now, asks, bids, is_snapshot=True)
            elif tix in TOP_DEPTH:
                asks, bids = self.market.top(sym, TOP_DEPTH[tix])
                body = self.frames.encode_book(tix, sym, 1, now, asks, bids)
            else:
                continue
            session.routes[sid] = 1
            session.counters.sent[tix] += 1
            session.push(body, injected=False)

    def hello_allowed(self, remote_ip: str) -> bool:
        """Count a hello/subscribe against the per-IP window; False when over the limit."""
        self.stats.hello_messages += 1
        now, window = trio.current_time(), self.config.hello_rate_window
        times = self._hello_times.setdefault(remote_ip, deque())
        while times and times[0] <= now - window:
            times.popleft()
        times.append(now)
        if len(times) > self.config.hello_rate_limit:
            self.stats.hello_rate_violations += 1
            return False
        return True

    # -- the market task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Advance the market forever (until cancelled), fanning batches out to sessions.

        Each pass produces at most two ticks' worth of events and then yields, so the writers
        get the CPU between batches even when the simulator is overloaded; beyond
        ``max_catchup`` seconds behind, market time is dropped (``stats.lag_seconds``).
        """
        cfg = self.config
        tick = cfg.tick_interval
        market_time = trio.current_time()
        next_second = market_time + 1.0
        carry = 0.0
        while True:
            await trio.sleep_until(market_time + tick)
            now = trio.current_time()
            if now - market_time > cfg.max_catchup:
                self.stats.lag_seconds += now - market_time - cfg.max_catchup
                market_time = now - cfg.max_catchup
            span = min(now - market_time, 2 * tick)
            market_time += span
            self._random_faults(now, span)
            self._timed_bars_and_rates(now)  # paused or not: a quiet market still closes bars
            if self.paused:
                continue
            want = cfg.rate * span + carry
            count = int(want)
            carry = want - count
            if count:
                self._step(count, now)
            if now >= next_second:
                next_second = now + 1.0
                self._periodic_top_n(now)

    def step(self, count: int) -> None:
        """Produce ``count`` events right now (tests; the market task calls this internally)."""
        self._step(count, trio.current_time())

    def _step(self, count: int, now: float) -> None:
        nsym = len(self.market.symbols)
        book5 = {s for s in range(nsym) if self.demand[BOOK5 * nsym + s]}
        events = self.market.generate(count, top_for=book5)
        self.stats.market_events += count
        items = self.frames.encode_batch(events, self.demand, self.truth)
        flagged = False
        if items and self.faults.has_one_shots:
            items, flagged = self._apply_one_shots(items)
        if items:
            self._fan_out(items, now, flagged)
        if self.frames.stamped:
            trades, self.frames.stamped = self.frames.stamped, []
            self.rates.add(trades)
            self._send_bars(self.bars.add(trades), now)

    def _fan_out(self, items: list[WireItem], now: float, flagged: bool) -> None:
        profile = self.faults.profile
        for session in list(self.sessions.values()):
            with self._watching_overflow(session):
                session.deliver(items, now, profile, flagged)

    @contextlib.contextmanager
    def _watching_overflow(self, session: ClientSession) -> Iterator[None]:
        """Count and log the buffer overflow that routing into ``session`` may cause."""
        was_closing = session.closing
        yield
        if not was_closing and session.error_message == BUFFER_OVERFLOW_MESSAGE:
            self.stats.buffer_overflows += 1
            logger.warning("buffer overflow connection_id={}", session.connection_id)

    # -- OHLCV bars and exchange rates ---------------------------------------------------------

    def _timed_bars_and_rates(self, now: float) -> None:
        """Close the bars whose period ended, send interim bars and rates when due."""
        if self.bars.tracked:
            updates = self.bars.close_due(self.frames.stamp_now())
            if now >= self._next_interim:
                self._next_interim = now + self.config.ohlcv_interim_interval
                updates += self.bars.changed()
            self._send_bars(updates, now)
        if self.rates.tracked and now >= self._next_rates:
            self._next_rates = now + self.config.exrate_interval
            self._send_rates(now)

    def _send_bars(self, updates: list[BarUpdate], now: float) -> None:
        """Record the final bars and route every bar to the sessions of its period."""
        if not updates:
            return
        by_period: dict[str, list[WireItem]] = {}
        for (sym, period), bar, final in updates:
            record = self.frames.bar_record(sym, period, bar)
            if final:
                self.truth.record_bar((sym, period), record)
            by_period.setdefault(period, []).append(self.frames.bar_item(sym, record))
        flagged = False
        if self.faults.has_one_shots:
            for period, items in by_period.items():
                by_period[period], flagged_here = self._apply_one_shots(items)
                flagged = flagged or flagged_here
        profile = self.faults.profile
        for session in list(self.sessions.values()):
            mine = [i for p, items in by_period.items() if p in session.periods for i in items]
            if mine:
                with self._watching_overflow(session):
                    session.deliver(mine, now, profile, flagged)

    def _send_rates(self, now: float) -> None:
        """Compute every tracked pair's rate, record it and send it to the sessions of it."""
        ticks = self.frames.stamp_now()
        for pair, rate in self.rates.rates(ticks):
            record = self.frames.exrate_record(*self.pairs[pair], rate, ticks)
            self.truth.record_rate(record)
            frame = encode(record)
            for session in list(self.sessions.values()):
                if pair in session.pairs:
                    with self._watching_overflow(session):
                        session.deliver_unsequenced(frame, EXRATE, now)

    def _apply_one_shots(self, items: list[WireItem]) -> tuple[list[WireItem], bool]:
        out, flagged = [], False
        for item in items:
            skip, dup, reorder = self.faults.take(PRODUCED_TYPES[item.type_index], item.symbol_id)
            flags = (SKIP if skip else 0) | (DUPLICATE if dup else 0) | (REORDER if reorder else 0)
            flagged = flagged or bool(flags)
            out.append(item._replace(flags=flags) if flags else item)
        return out, flagged

    def _periodic_top_n(self, now: float) -> None:
        """book20/book50 go out once a second per symbol, if its book changed."""
        nsym, ticks, items = len(self.market.symbols), self.frames.stamp_now(), []
        for sym in range(nsym):
            if self.market.version[sym] == self._topn_versions[sym]:
                continue
            self._topn_versions[sym] = self.market.version[sym]
            for tix in (BOOK20, BOOK50):
                sid = tix * nsym + sym
                if self.demand[sid]:
                    top = self.market.top(sym, TOP_DEPTH[tix])
                    body = self.frames.encode_book(tix, sym, 0, ticks, *top)
                    items.append(self.frames.item(sid, tix, self.market.symbols[sym], body))
        flagged = False
        if items and self.faults.has_one_shots:
            items, flagged = self._apply_one_shots(items)
        if items:
            self._fan_out(items, now, flagged)

    # -- probabilistic connection faults ------------------------------------------------------

    def _random_faults(self, now: float, elapsed: float) -> None:
        p, rnd = self.faults.profile, self.faults.rng.random
        for session in list(self.sessions.values()):
            if session.closing or not session.authorized:
                continue
            if p.disconnect_per_second and rnd() < p.disconnect_per_second * elapsed:
                logger.info("fault disconnect connection_id={}", session.connection_id)
                session.abort()
            elif p.error_per_second and rnd() < p.error_per_second * elapsed:
                session.fail(BUFFER_OVERFLOW_MESSAGE, now=now)
            elif p.reconnect_per_second and rnd() < p.reconnect_per_second * elapsed:
                self.send_reconnect(session, p.reconnect_within_seconds)
            elif (
                p.stall_per_second
                and now >= session.stall_until
                and rnd() < p.stall_per_second * elapsed
            ):
                session.stall(now + p.stall_seconds)
            elif p.oversized_per_second and rnd() < p.oversized_per_second * elapsed:
                symbol = self.market.symbols[0]
                session.push(oversized_frame(p.oversize_bytes, symbol))

    def send_reconnect(self, session: ClientSession, within_seconds: int) -> None:
        """Send a ``reconnect`` frame, then close the connection after ``within_seconds``."""
        session.push(self.frames.reconnect_frame(within_seconds), front=True)
        session.close_after(within_seconds, now=trio.current_time())
