"""The simulator's settings: one frozen record, validated once, shared by every part.

Defaults behave like CoinAPI (131,072-message send queue, heartbeats after 1 s of silence,
10 hello/subscribe per 10 s, OHLCV updates every 5 s, exchange rates every second); the rest
(rate, symbols, seed, retention, latency, fault profile) shapes the market and the misbehaviour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from coinfeed.core.protocol import exchange_of
from coinfeed.simulator.clock import Latency
from coinfeed.simulator.faults import PROFILES, FaultProfile

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BITSTAMP_SPOT_BTC_USD",
    "BITSTAMP_SPOT_BTC_USDT",  # the USD id is a prefix of this one: catches missing `$`
    "COINBASE_SPOT_ETH_USD",
    "BINANCE_SPOT_BTC_USDT",
    "KRAKEN_SPOT_XRP_USD",
    "COINBASE_SPOT_SOL_USD",
)
"""The default market. ``BITSTAMP_SPOT_BTC_USD`` is a prefix of ``BITSTAMP_SPOT_BTC_USDT``."""

DEFAULT_SEND_QUEUE = 131_072
"""CoinAPI's per-connection server send queue, in messages."""

DEFAULT_TRADE_RETENTION = 50_000
"""Trades kept per symbol for REST history and ground truth (oldest are evicted first).

About 260 bytes each (their REST JSON): 13 MB per symbol when full. At the default 2,000
events/s over 6 symbols (100 trades/s per symbol) that is about 8 minutes of history."""

MAX_LATENCY = 3_600.0
"""Seconds; an injected latency beyond an hour is a typo, not a test."""

HelloRateAction = Literal["count", "error"]


def default_symbols(count: int) -> tuple[str, ...]:
    """The first ``count`` default symbols, extended with generated ``SIM_SPOT_Ann_USD`` ids."""
    extra = tuple(f"SIM_SPOT_A{i:02d}_USD" for i in range(max(0, count - len(DEFAULT_SYMBOLS))))
    return (DEFAULT_SYMBOLS + extra)[:count]


def _as_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _as_keys(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _as_latency(
    values: Mapping[str, float | tuple[float, float]],
) -> Mapping[str, Latency]:
    """``{exchange: (to CoinAPI, to the client)}``; a bare number is (it, 0). Read-only."""
    out: dict[str, Latency] = {}
    for exchange, value in values.items():
        pair = (value, 0.0) if isinstance(value, int | float) else tuple(value)
        if len(pair) != 2:
            raise ValueError(f"latency: {exchange}: expected (seconds, seconds), got {value!r}")
        out[exchange] = Latency(float(pair[0]), float(pair[1]))
    return MappingProxyType(out)


def _resolve_faults(value: str | FaultProfile) -> FaultProfile:
    if isinstance(value, FaultProfile):
        return value
    try:
        return PROFILES[value]
    except KeyError:
        names = ", ".join(sorted(PROFILES))
        raise ValueError(f"faults: unknown profile {value!r}; expected one of {names}") from None


@attrs.frozen(kw_only=True)
class SimulatorConfig:
    """Everything the simulator needs; ports 0 mean "pick a free one" (reported once bound)."""

    host: str = "127.0.0.1"
    ws_port: int = 0
    rest_port: int = 0
    blackhole_port: int = 0
    seed: int = 1
    symbols: tuple[str, ...] = attrs.field(default=DEFAULT_SYMBOLS, converter=_as_tuple)
    rate: float = 2_000.0
    """Market events per second, all symbols together (book updates, trades, quotes)."""
    mix: tuple[float, float, float] = (0.55, 0.30, 0.15)
    """Shares of book updates, trades and quotes."""
    book_depth: int = 30
    """Target levels per side; the book wanders within about +-10 of it."""
    snapshot_every: int = 1_000
    """Every Nth book event of a symbol is a fresh mid-stream snapshot (0: never)."""
    tick_interval: float = 0.01
    """Seconds between market batches; the market catches up at most ``max_catchup`` seconds."""
    max_catchup: float = 0.25
    keys: frozenset[str] | None = attrs.field(default=None, converter=_as_keys)
    """Valid API keys; ``None`` accepts any key, or none (the demo)."""
    send_queue_size: int = DEFAULT_SEND_QUEUE
    overflow_flush_timeout: float = 5.0
    """After a buffer overflow, how long the error frame may take before the TCP is cut."""
    heartbeat_interval: float = 1.0
    hello_rate_limit: int = 10
    hello_rate_window: float = 10.0
    hello_rate_action: HelloRateAction = "count"
    close_timeout: float = 2.0
    """Bound on a WebSocket closing handshake and on REST shutdown."""
    handshake_timeout: float = 10.0
    trade_retention: int = DEFAULT_TRADE_RETENTION
    rest_budget: int | None = None
    """Request-cost units allowed per ``rest_budget_window`` seconds; ``None`` = unlimited."""
    rest_budget_window: float = 86_400.0
    faults: FaultProfile = attrs.field(default=PROFILES["none"], converter=_resolve_faults)
    """A :class:`FaultProfile` or a profile name (see ``faults.PROFILES``)."""
    latency: Mapping[str, Latency] = attrs.field(factory=dict, converter=_as_latency, hash=False)
    """Per exchange id, ``(exchange_to_coinapi, coinapi_to_client)`` seconds: the exchange's
    ``time_coinapi`` is that much after its ``time_exchange``, and that much before the frame is
    sent. Exchanges not named get ``time_exchange`` = production time, ``time_coinapi`` 0.5 ms
    later."""
    ohlcv_interim_interval: float = 5.0
    """Seconds between updates of an open OHLCV bar that changed (the final one comes at close)."""
    exrate_interval: float = 1.0
    """Seconds between exchange rates of a subscribed pair."""

    def __attrs_post_init__(self) -> None:
        checks = [
            ("symbols", len(self.symbols) > 0 and all(self.symbols), "at least one symbol id"),
            ("symbols", len(set(self.symbols)) == len(self.symbols), "no duplicate symbol ids"),
            ("rate", math.isfinite(self.rate) and self.rate >= 0, "a number >= 0"),
            ("mix", len(self.mix) == 3 and min(self.mix) >= 0 and sum(self.mix) > 0, "3 shares"),
            ("book_depth", self.book_depth >= 2, "an integer >= 2"),
            ("snapshot_every", self.snapshot_every >= 0, "an integer >= 0"),
            ("tick_interval", 0 < self.tick_interval <= 1, "seconds in (0, 1]"),
            ("send_queue_size", self.send_queue_size >= 1, "an integer >= 1"),
            ("heartbeat_interval", self.heartbeat_interval > 0, "seconds > 0"),
            ("hello_rate_limit", self.hello_rate_limit >= 1, "an integer >= 1"),
            ("hello_rate_action", self.hello_rate_action in ("count", "error"), "count|error"),
            ("trade_retention", self.trade_retention >= 1, "an integer >= 1"),
            ("rest_budget", self.rest_budget is None or self.rest_budget >= 1, "None or >= 1"),
            ("ohlcv_interim_interval", self.ohlcv_interim_interval > 0, "seconds > 0"),
            ("exrate_interval", self.exrate_interval > 0, "seconds > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: invalid value; expected {expected}")
        exchanges = {exchange_of(s) for s in self.symbols}
        for exchange, latency in self.latency.items():
            if exchange not in exchanges:
                raise ValueError(f"latency: no symbol of exchange {exchange!r}")
            if not all(0 <= s <= MAX_LATENCY for s in latency):  # NaN fails too
                raise ValueError(f"latency: {exchange}: expected seconds in [0, {MAX_LATENCY:g}]")
