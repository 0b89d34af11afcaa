"""Wire time: 100 ns ticks since the epoch, and CoinAPI's timestamp text for them (pure).

The simulator keeps every time as an integer count of 100 ns ticks (CoinAPI's resolution) and
formats it only when it encodes a frame, so comparing, bucketing into OHLCV periods and shifting
by an injected latency are integer operations, and a time read back from its text is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final, NamedTuple

import attrs

from coinfeed.core.protocol import exchange_of, format_time

TICKS_PER_SECOND: Final = 10_000_000
COINAPI_LAG: Final = 5_000
"""Without an injected latency, ``time_coinapi`` trails ``time_exchange`` by 0.5 ms."""
_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()


def ticks_of(text: str) -> int:
    """The ticks of a ``yyyy-MM-ddTHH:mm:ss.fffffffZ`` timestamp (exact, all 7 digits)."""
    t = datetime.fromisoformat(text[:19])
    seconds = (t.toordinal() - _EPOCH_DAY) * 86_400 + t.hour * 3_600 + t.minute * 60 + t.second
    return seconds * TICKS_PER_SECOND + int(text[20:27])


def seconds_to_ticks(seconds: float) -> int:
    """A duration in ticks, rounded to the nearest tick."""
    return round(seconds * TICKS_PER_SECOND)


@attrs.define
class WireClock:
    """Formats ticks as CoinAPI timestamps, caching the text of recent seconds.

    One cached second serves the common case (consecutive stamps); a few more keep it cheap
    when stamps shifted by an injected latency alternate between two seconds.
    """

    _second: int = -1
    _prefix: str = ""
    _recent: dict[int, str] = attrs.field(factory=dict)

    def format(self, ticks: int) -> str:
        """``yyyy-MM-ddTHH:mm:ss.fffffffZ`` for ``ticks`` (same text as ``format_time``)."""
        second, frac = divmod(ticks, TICKS_PER_SECOND)
        if second != self._second:
            prefix = self._recent.get(second)
            if prefix is None:
                if len(self._recent) >= 8:
                    self._recent.clear()
                prefix = format_time(datetime.fromtimestamp(second, UTC))[:20]
                self._recent[second] = prefix
            self._second, self._prefix = second, prefix
        return f"{self._prefix}{frac:07d}Z"


class StampedTrade(NamedTuple):
    """A produced trade as OHLCV bars and exchange rates need it (size 0 would be a marker)."""

    symbol: int
    """Symbol index."""
    ticks: int
    """Its ``time_exchange``."""
    price: Decimal
    size: Decimal


class Latency(NamedTuple):
    """Injected latency of one exchange, in seconds."""

    exchange_to_coinapi: float
    """``time_coinapi - time_exchange``."""
    coinapi_to_client: float
    """How long before the frame is sent ``time_coinapi`` is stamped."""


class StampOffsets(NamedTuple):
    """Ticks from the moment an event is produced (and sent) to its two timestamps."""

    exchange: int
    coinapi: int


def stamp_offsets(symbol_id: str, latency: Mapping[str, Latency]) -> StampOffsets:
    """The offsets for ``symbol_id`` (by its exchange)."""
    injected = latency.get(exchange_of(symbol_id))
    if injected is None:
        return StampOffsets(0, COINAPI_LAG)
    to_client = seconds_to_ticks(injected.coinapi_to_client)
    return StampOffsets(-seconds_to_ticks(injected.exchange_to_coinapi) - to_client, -to_client)
