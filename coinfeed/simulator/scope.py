"""A connection's subscription scope, the way CoinAPI crosses data types with filters (pure).

Model (book resyncs rely on it, see docs/protocol.md): the scope is a set of data types crossed
with a set of filters; a stream (type, symbol_id) is in scope when its type is and some filter
matches the symbol. Filter kinds are OR-ed: symbol ids (prefix match, exact with a trailing
``$``), exchange ids and assets (``BTC`` or ``BTC/USD``). No filter at all means the whole market.

- ``hello`` replaces the scope; ``subscribe`` adds its types and its filters;
- ``unsubscribe`` removes its filters (so every type of those symbols stops) or, when it names no
  filter, its types. Removing the last filter leaves a scope that matches nothing, never the
  whole market.
"""

from __future__ import annotations

import attrs

from coinfeed.core.protocol import ScopeMessage

PRODUCED_TYPES = ("trade", "quote", "book", "book5", "book20", "book50")
"""Types the simulator has data for (stream-index order)."""
ACCEPTED_TYPES = frozenset(
    [*PRODUCED_TYPES, "book_l3", "ohlcv", "exrate", "asset", "exchange", "symbol"]
)
"""Types a scope message may name; those without simulated data simply yield nothing."""
BOOK_TYPES = frozenset(["book", "book5", "book20", "book50", "book_l3"])


class ScopeError(ValueError):
    """A scope message the server refuses (it answers with an ``error`` frame and closes)."""


def symbol_matches(symbol_filter: str, symbol_id: str) -> bool:
    """CoinAPI's symbol filter: prefix match, exact when the filter ends with ``$``."""
    if symbol_filter.endswith("$"):
        return symbol_id == symbol_filter[:-1]
    return symbol_id.startswith(symbol_filter)


def asset_matches(asset_filter: str, symbol_id: str) -> bool:
    """``BTC`` matches any symbol with BTC as base or quote; ``BTC/USD`` that pair only."""
    parts = symbol_id.split("_")
    base, quote = (parts[2], parts[3]) if len(parts) >= 4 else ("", "")
    if "/" in asset_filter:
        return asset_filter == f"{base}/{quote}"
    return asset_filter in (base, quote)


def validate(message: ScopeMessage) -> None:
    """Raise :class:`ScopeError` for unknown types, or book types without a symbol filter."""
    for t in message.subscribe_data_type:
        if t not in ACCEPTED_TYPES:
            raise ScopeError(f"Unknown data type: {t[:40]}")
    books = BOOK_TYPES.intersection(message.subscribe_data_type)
    if message.type != "unsubscribe" and books and not message.subscribe_filter_symbol_id:
        raise ScopeError("Order book data types require subscribe_filter_symbol_id.")


@attrs.define
class Scope:
    """Types x filters of one connection."""

    types: set[str] = attrs.field(factory=set)
    symbols: set[str] = attrs.field(factory=set)
    exchanges: set[str] = attrs.field(factory=set)
    assets: set[str] = attrs.field(factory=set)
    filtered: bool = False
    """False only while no filter was ever given (then the whole market matches)."""

    def apply(self, message: ScopeMessage) -> None:
        """Apply a validated hello/subscribe/unsubscribe."""
        sym = set(message.subscribe_filter_symbol_id or ())
        exch = set(message.subscribe_filter_exchange_id or ())
        assets = set(message.subscribe_filter_asset_id or ())
        types = set(message.subscribe_data_type)
        if message.type == "hello":
            self.types, self.symbols, self.exchanges, self.assets = types, sym, exch, assets
            self.filtered = bool(sym or exch or assets)
        elif message.type == "subscribe":
            self.types |= types
            self.symbols |= sym
            self.exchanges |= exch
            self.assets |= assets
            self.filtered = self.filtered or bool(sym or exch or assets)
        elif sym or exch or assets:
            self.symbols -= sym
            self.exchanges -= exch
            self.assets -= assets
        else:
            self.types -= types

    def matches(self, symbol_id: str) -> bool:
        """Whether any filter (or the absence of filters) selects ``symbol_id``."""
        if not self.filtered:
            return True
        return (
            any(symbol_matches(f, symbol_id) for f in self.symbols)
            or any(symbol_id.startswith(e + "_") for e in self.exchanges)
            or any(asset_matches(a, symbol_id) for a in self.assets)
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
