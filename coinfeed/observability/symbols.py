"""Which subscribed symbols deliver data: per-symbol freshness, and the silent ones.

A symbol is *silent* when nothing of it (no trade, quote or book message) has arrived for
``symbol_silent_after`` seconds while subscribed: since the subscription on this connection, or
since its last message. CoinAPI accepts any symbol id in a subscription and sends nothing for
one that does not exist, so a typo (``BITSTAMP_SPOT_BTC_USDX``, a lower-case id) looks exactly
like a quiet market; this is how it is found. ``GET /api/symbols`` shows the figures,
``coinfeed_symbols_silent`` counts the silent symbols, and the service logs each one once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

SILENT_HINT = (
    "check the exact symbol id (CoinAPI matches ids exactly and case-sensitively, and sends "
    "nothing for an id it does not know), or the market may simply be closed"
)


@attrs.define(slots=True, eq=False)
class SymbolWatch:
    """Answers "which symbols are silent" from the processor's last-message times."""

    symbols: Sequence[str]
    types: Sequence[str]
    last_seen: dict[str, dict[str, float]]
    """data type -> symbol id -> trio time of its last message (the processor writes it)."""
    subscribed_at: Callable[[], float | None]
    """When the current connection subscribed (trio time), None while not subscribed."""
    silent_after: float = 60.0

    def silent(self, now: float | None = None) -> list[str]:
        """Symbols with nothing for ``silent_after`` seconds while subscribed, in order
        (``now`` defaults to the trio clock, read only when subscribed: the metrics registry
        also asks before trio runs)."""
        since = self.subscribed_at()
        if since is None:
            return []
        if now is None:
            now = trio.current_time()
        return [s for s in self.symbols if now - max(self._last(s), since) > self.silent_after]

    def report(self, now: float) -> dict[str, Any]:
        """The body of ``GET /api/symbols``."""
        silent = set(self.silent(now))
        symbols = {}
        for symbol_id in self.symbols:
            ages: dict[str, float | None] = {}
            for data_type in self.types:
                at = self.last_seen.get(data_type, {}).get(symbol_id)
                ages[data_type] = None if at is None else round(now - at, 3)
            symbols[symbol_id] = {"silent": symbol_id in silent, "seconds_since_last": ages}
        return {
            "symbol_silent_after": self.silent_after,
            "silent": sorted(silent),
            "symbols": symbols,
        }

    def _last(self, symbol_id: str) -> float:
        return max(
            (seen[symbol_id] for seen in self.last_seen.values() if symbol_id in seen),
            default=float("-inf"),
        )
