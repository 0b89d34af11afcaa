"""Latency telemetry per exchange: how old data is when CoinAPI and then coinfeed get it.

Two stages, from the timestamps every trade, quote and book frame carries:
``exchange_to_coinapi`` = ``time_coinapi - time_exchange`` and ``coinapi_to_coinfeed`` = the
moment coinfeed read the frame off the socket - ``time_coinapi``. They are kept as histograms
per (stage, exchange), never per symbol, so the label count stays that of the exchanges.

How this works: :meth:`LatencyStats.sample` looks at up to ``SAMPLES_PER_BATCH`` frames of each
processed batch, spread evenly over it, decoding only the three fields it needs. A quiet feed
(one frame per batch) is measured frame by frame; at full speed the cost stays per batch, not
per frame, and the histograms count sampled frames. Quantiles (``/api/latency``) are estimated
from the buckets like Prometheus' ``histogram_quantile``, since start and over the last minute.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs
import msgspec

from coinfeed.core.protocol import TimestampReader, exchange_of

STAGES: Final = ("exchange_to_coinapi", "coinapi_to_coinfeed")
BUCKETS: Final = (
    0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
)  # fmt: skip
"""Upper bounds in seconds (``le``); the first counts negative values: clock skew."""
SAMPLES_PER_BATCH: Final = 8
RECENT_SECONDS: Final = 60.0
_SLICE_SECONDS: Final = 10.0


def exchanges_of(symbols: Iterable[str]) -> dict[str, str]:
    """symbol id -> exchange id: the latency labels, never more than the subscribed ones."""
    return {symbol_id: exchange_of(symbol_id) for symbol_id in symbols}


@attrs.define(slots=True)
class Histogram:
    """Cumulative-free bucket counts (``counts[i]``: values in bucket ``i``, the last one
    above every bound), their sum and count."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def add(self, other: Histogram) -> None:
        for index, n in enumerate(other.counts):
            self.counts[index] += n
        self.total += other.total
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """Estimated by linear interpolation within the bucket holding it (None when empty);
        a quantile in the last bucket is reported as its lower bound."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if index == 0:
                    return BUCKETS[0]
                if index == len(BUCKETS):
                    return BUCKETS[-1]
                lower, upper = BUCKETS[index - 1], BUCKETS[index]
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
        return BUCKETS[-1]  # pragma: no cover - rank <= count always lands in a bucket


class _Stamps(msgspec.Struct):
    symbol_id: str = ""
    time_exchange: str = ""
    time_coinapi: str = ""


_stamps_decoder: Final = msgspec.json.Decoder(_Stamps)

Key = tuple[str, str]
"""(stage, exchange)"""


@attrs.define(slots=True, eq=False)
class LatencyStats:
    """The two stages' histograms per exchange of the subscribed symbols."""

    exchanges: Mapping[str, str]
    """symbol id -> exchange id, for the subscribed symbols only (bounded labels)."""
    histograms: dict[Key, Histogram] = attrs.field(factory=dict)
    """Since start: what ``coinfeed_latency_seconds`` exports."""
    _recent: deque[tuple[int, dict[Key, Histogram]]] = attrs.field(factory=deque, init=False)
    _times: TimestampReader = attrs.field(factory=TimestampReader, init=False)

    def sample(
        self,
        items: Sequence[object],
        reads: Sequence[tuple[int, int, float]],
        wall: float,
        now: float,
    ) -> float:
        """Measure up to ``SAMPLES_PER_BATCH`` frames of ``items`` (epoch ``wall`` and trio
        ``now``: the batch's clock readings; ``reads``: when each socket read returned, see
        ``FrameQueue.taken_reads``). Returns the most negative ``coinapi_to_coinfeed`` seen
        (0.0 when none): below zero, this machine's clock is behind CoinAPI's."""
        count = len(items)
        if not count:
            return 0.0
        step = max(1, count // SAMPLES_PER_BATCH)
        decode, seconds, exchanges = _stamps_decoder.decode, self._times.seconds, self.exchanges
        cumulative = self.histograms
        recent = self._recent_slice(now)
        read_index = 0
        read_wall = wall
        skew = 0.0
        for index in range(0, count, step):
            frame = items[index]
            if type(frame) is not bytes and type(frame) is not str:
                continue
            while read_index < len(reads) and reads[read_index][0] <= index:
                read_wall = reads[read_index][1] / 1e9
                read_index += 1
            try:
                stamps = decode(frame)
                exchange = exchanges.get(stamps.symbol_id)
                if exchange is None or not stamps.time_coinapi:
                    continue
                coinapi = seconds(stamps.time_coinapi)
                exchange_time = seconds(stamps.time_exchange) if stamps.time_exchange else None
            except (msgspec.MsgspecError, ValueError, OverflowError):
                continue  # the processor counts invalid frames; here they are just not sampled
            to_coinfeed = read_wall - coinapi
            skew = min(skew, to_coinfeed)
            observations = [("coinapi_to_coinfeed", to_coinfeed)]
            if exchange_time is not None:
                observations.append(("exchange_to_coinapi", coinapi - exchange_time))
            for stage, value in observations:
                key = (stage, exchange)
                for table in (cumulative, recent):
                    histogram = table.get(key)
                    if histogram is None:
                        histogram = table[key] = Histogram()
                    histogram.observe(value)
        return skew

    def copy_histograms(self) -> dict[Key, Histogram]:
        """The since-start histograms as they are now, for a reader in another thread."""
        return {
            key: Histogram(list(h.counts), h.total, h.count) for key, h in self.histograms.items()
        }

    def _recent_slice(self, now: float) -> dict[Key, Histogram]:
        number = int(now // _SLICE_SECONDS)
        recent = self._recent
        if not recent or recent[-1][0] != number:
            recent.append((number, {}))
            while recent[0][0] <= number - RECENT_SECONDS / _SLICE_SECONDS:
                recent.popleft()
        return recent[-1][1]

    def summary(self, now: float) -> dict[str, dict[str, dict[str, object]]]:
        """Per exchange and stage: count, p50 and p99 since start and over the last minute."""
        window_start = int(now // _SLICE_SECONDS) - RECENT_SECONDS / _SLICE_SECONDS
        recent: dict[Key, Histogram] = {}
        for number, table in self._recent:
            if number > window_start:
                for key, histogram in table.items():
                    recent.setdefault(key, Histogram()).add(histogram)
        answer: dict[str, dict[str, dict[str, object]]] = {}
        for (stage, exchange), histogram in sorted(self.histograms.items()):
            last_minute = recent.get((stage, exchange), Histogram())
            answer.setdefault(exchange, {})[stage] = {
                "count": histogram.count,
                "p50": histogram.quantile(0.5),
                "p99": histogram.quantile(0.99),
                "last_minute": {
                    "count": last_minute.count,
                    "p50": last_minute.quantile(0.5),
                    "p99": last_minute.quantile(0.99),
                },
            }
        return answer
