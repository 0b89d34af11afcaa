"""A connection's subscription scope, the way CoinAPI crosses data types with filters (pure).

Model (book resyncs rely on it, see docs/protocol.md): the scope is a set of data types crossed
with a set of filters; a stream (type, symbol_id) is in scope when its type is and some filter
matches the symbol. Filter kinds are OR-ed: symbol ids (prefix match, exact with a trailing
``$``), exchange ids and assets (``BTC`` or ``BTC/USD``). No filter at all means the whole market.

- ``hello`` replaces the scope; ``subscribe`` adds its types and its filters;
- ``unsubscribe`` removes its filters (so every type of those symbols stops) or, when it names no
  filter, its types. Removing the last filter leaves a scope that matches nothing, never the
  whole market.
- ``ohlcv`` is crossed with the period filter too (none given: every supported period).
- ``exrate`` is keyed by asset pair, not symbol: only asset filters select pairs (``BTC/USD``
  that pair, ``BTC`` every pair with BTC as base or quote), and a message naming ``exrate``
  must carry one. A ``hello``/``subscribe`` naming only ``exrate`` touches the rates alone: its
  asset filters select pairs but no symbols, so subscribing rates never widens (nor narrows) the
  trades, quotes, books and bars of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from coinfeed.core.protocol import ScopeMessage, asset_pair, assets_of
from coinfeed.simulator.ohlcv import PERIODS

PRODUCED_TYPES = ("trade", "quote", "book", "book5", "book20", "book50", "ohlcv")
"""Types the simulator has per-symbol data for (stream-index order)."""
EXRATE_TYPE = "exrate"
"""The one type keyed by asset pair; it has no symbol and no sequence."""
ACCEPTED_TYPES = frozenset([*PRODUCED_TYPES, EXRATE_TYPE, "book_l3", "asset", "exchange", "symbol"])
"""Types a scope message may name; those without simulated data simply yield nothing."""
BOOK_TYPES = frozenset(["book", "book5", "book20", "book50", "book_l3"])


class ScopeError(ValueError):
    """A scope message the server refuses (it answers with an ``error`` frame and closes)."""


def symbol_matches(symbol_filter: str, symbol_id: str) -> bool:
    """CoinAPI's symbol filter: prefix match, exact when the filter ends with ``$``."""
    if symbol_filter.endswith("$"):
        return symbol_id == symbol_filter[:-1]
    return symbol_id.startswith(symbol_filter)


def pair_matches(asset_filter: str, base: str, quote: str) -> bool:
    """``BTC`` matches a pair with BTC as base or quote; ``BTC/USD`` that pair only."""
    if "/" in asset_filter:
        return asset_filter == asset_pair(base, quote)
    return asset_filter in (base, quote)


def asset_matches(asset_filter: str, symbol_id: str) -> bool:
    """Whether an asset filter selects ``symbol_id`` (by the pair it trades)."""
    pair = assets_of(symbol_id)
    return pair is not None and pair_matches(asset_filter, *pair)


def validate(message: ScopeMessage) -> None:
    """Raise :class:`ScopeError` for unknown types or periods, book types without a symbol
    filter, or ``exrate`` without an asset filter."""
    for t in message.subscribe_data_type:
        if t not in ACCEPTED_TYPES:
            raise ScopeError(f"Unknown data type: {t[:40]}")
    for p in message.subscribe_filter_period_id or ():
        if p not in PERIODS:
            raise ScopeError(f"Unknown period id: {p[:40]}")
    if message.type == "unsubscribe":
        return
    if BOOK_TYPES.intersection(message.subscribe_data_type) and not (
        message.subscribe_filter_symbol_id
    ):
        raise ScopeError("Order book data types require subscribe_filter_symbol_id.")
    if EXRATE_TYPE in message.subscribe_data_type and not message.subscribe_filter_asset_id:
        raise ScopeError("Exchange rates require subscribe_filter_asset_id.")


@attrs.define
class Scope:
    """Types x filters of one connection."""

    types: set[str] = attrs.field(factory=set)
    symbols: set[str] = attrs.field(factory=set)
    exchanges: set[str] = attrs.field(factory=set)
    assets: set[str] = attrs.field(factory=set)
    """Asset filters that select symbols (and rate pairs)."""
    rate_assets: set[str] = attrs.field(factory=set)
    """Asset filters that came with ``exrate`` alone: they select rate pairs only."""
    filtered: bool = False
    """False only while no symbol-selecting filter was ever given (then the whole market)."""
    periods: set[str] = attrs.field(factory=set)
    periods_filtered: bool = False
    """False only while no period filter was ever given (then every supported period)."""

    def apply(self, message: ScopeMessage) -> None:
        """Apply a validated hello/subscribe/unsubscribe."""
        sym = set(message.subscribe_filter_symbol_id or ())
        exch = set(message.subscribe_filter_exchange_id or ())
        assets = set(message.subscribe_filter_asset_id or ())
        periods = set(message.subscribe_filter_period_id or ())
        types = set(message.subscribe_data_type)
        if message.type == "hello":
            self.types, self.rate_assets, self.periods = set(), set(), set()
            self.symbols, self.exchanges, self.assets = set(), set(), set()
            self.filtered = self.periods_filtered = False
            self._add(types, sym, exch, assets, periods)
        elif message.type == "subscribe":
            self._add(types, sym, exch, assets, periods)
        elif sym or exch or assets or periods:
            self.symbols -= sym
            self.exchanges -= exch
            self.assets -= assets
            self.rate_assets -= assets
            self.periods -= periods
        else:
            self.types -= types

    def _add(
        self, types: set[str], sym: set[str], exch: set[str], assets: set[str], periods: set[str]
    ) -> None:
        self.types |= types
        if types == {EXRATE_TYPE}:
            self.rate_assets |= assets
            return
        self.symbols |= sym
        self.exchanges |= exch
        self.assets |= assets
        self.filtered = self.filtered or bool(sym or exch or assets)
        self.periods |= periods
        self.periods_filtered = self.periods_filtered or bool(periods)

    def matches(self, symbol_id: str) -> bool:
        """Whether any filter (or the absence of filters) selects ``symbol_id``."""
        if not self.filtered:
            return True
        return (
            any(symbol_matches(f, symbol_id) for f in self.symbols)
            or any(symbol_id.startswith(e + "_") for e in self.exchanges)
            or any(asset_matches(a, symbol_id) for a in self.assets)
        )

    def period_ids(self) -> frozenset[str]:
        """The OHLCV periods in scope (none without the ``ohlcv`` type)."""
        if "ohlcv" not in self.types:
            return frozenset()
        return frozenset(self.periods if self.periods_filtered else PERIODS)

    def rate_pairs(self, pairs: Sequence[tuple[str, str]]) -> frozenset[int]:
        """Indexes of the (base, quote) ``pairs`` whose exchange rates are in scope."""
        if EXRATE_TYPE not in self.types:
            return frozenset()
        filters = self.assets | self.rate_assets
        return frozenset(
            i for i, pair in enumerate(pairs) if any(pair_matches(f, *pair) for f in filters)
        )

    def streams(self, symbols: tuple[str, ...]) -> set[int]:
        """Stream indexes in scope: ``type_index * len(symbols) + symbol_index``."""
        n = len(symbols)
        type_ix = [i for i, t in enumerate(PRODUCED_TYPES) if t in self.types]
        out: set[int] = set()
        for s, symbol_id in enumerate(symbols):
            if type_ix and self.matches(symbol_id):
                out.update(t * n + s for t in type_ix)
        return out
