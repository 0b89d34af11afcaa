"""Latency telemetry: stage histograms per exchange, sampled per batch."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from coinfeed.core.latency import (
    BUCKETS,
    SAMPLES_PER_BATCH,
    Histogram,
    LatencyStats,
    exchanges_of,
)
from coinfeed.core.protocol import TimestampReader

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC).timestamp()
SYMBOLS = ("BITSTAMP_SPOT_BTC_USD", "KRAKEN_SPOT_ETH_EUR")


def at(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def frame(symbol_id: str, exchange_time: float, coinapi_time: float) -> bytes:
    return msgspec.json.encode(
        {"type": "trade", "symbol_id": symbol_id, "sequence": 1, "time_exchange": at(exchange_time),
         "time_coinapi": at(coinapi_time), "price": 1, "size": 1, "uuid": "u", "taker_side": "BUY"}
    )  # fmt: skip


def test_each_stage_lands_in_its_bucket_per_exchange() -> None:
    stats = LatencyStats(exchanges_of(SYMBOLS))
    items: list[object] = [
        frame(SYMBOLS[0], T0, T0 + 0.040),  # exchange_to_coinapi 40 ms
        frame(SYMBOLS[1], T0, T0 + 0.200),
        "not json",
        frame("OTHER_SPOT_BTC_USD", T0, T0),  # not subscribed: no label for it
    ]
    read_wall_ns = int((T0 + 0.250) * 1e9)
    stats.sample(items, [(0, read_wall_ns, 5.0)], T0 + 1.0, 5.0)
    assert set(stats.histograms) == {
        ("exchange_to_coinapi", "BITSTAMP"), ("coinapi_to_coinfeed", "BITSTAMP"),
        ("exchange_to_coinapi", "KRAKEN"), ("coinapi_to_coinfeed", "KRAKEN"),
    }  # fmt: skip
    bitstamp = stats.histograms[("exchange_to_coinapi", "BITSTAMP")]
    assert bitstamp.counts[BUCKETS.index(0.05)] == 1  # 25 ms < 40 ms <= 50 ms
    assert stats.histograms[("coinapi_to_coinfeed", "BITSTAMP")].total == pytest.approx(
        0.210, abs=1e-5
    )
    assert stats.histograms[("coinapi_to_coinfeed", "KRAKEN")].total == pytest.approx(
        0.050, abs=1e-5
    )


def test_the_receive_time_is_that_of_the_read_that_brought_the_frame() -> None:
    stats = LatencyStats(exchanges_of(SYMBOLS))
    items = [frame(SYMBOLS[0], T0, T0), frame(SYMBOLS[0], T0, T0)]
    reads = [(0, int((T0 + 0.001) * 1e9), 1.0), (1, int((T0 + 0.300) * 1e9), 1.3)]
    stats.sample(items, reads, T0 + 9, 2.0)
    histogram = stats.histograms[("coinapi_to_coinfeed", "BITSTAMP")]
    assert histogram.total == pytest.approx(0.301, abs=1e-5)
    assert histogram.count == 2


def test_a_big_batch_is_sampled_not_measured_frame_by_frame() -> None:
    stats = LatencyStats(exchanges_of(SYMBOLS))
    items = [frame(SYMBOLS[0], T0, T0 + 0.01)] * (SAMPLES_PER_BATCH * 10)
    stats.sample(items, [], T0 + 1, 1.0)
    assert stats.histograms[("exchange_to_coinapi", "BITSTAMP")].count == SAMPLES_PER_BATCH


def test_a_clock_behind_coinapi_shows_as_negative_skew() -> None:
    stats = LatencyStats(exchanges_of(SYMBOLS))
    skew = stats.sample([frame(SYMBOLS[0], T0, T0 + 2.0)], [], T0 + 1.0, 1.0)
    assert skew == pytest.approx(-1.0, abs=1e-5)
    assert stats.histograms[("coinapi_to_coinfeed", "BITSTAMP")].counts[0] == 1  # le="0"


def test_quantiles_interpolate_within_buckets_and_the_last_minute_is_its_own() -> None:
    histogram = Histogram()
    for _ in range(100):
        histogram.observe(0.03)  # (0.025, 0.05]
    assert 0.025 < histogram.quantile(0.5) <= 0.05  # type: ignore[operator]
    assert Histogram().quantile(0.5) is None
    stats = LatencyStats(exchanges_of(SYMBOLS))
    stats.sample([frame(SYMBOLS[0], T0, T0 + 0.003)], [], T0 + 0.004, 100.0)
    summary = stats.summary(100.0)["BITSTAMP"]["exchange_to_coinapi"]
    assert summary["count"] == 1 and summary["last_minute"]["count"] == 1  # type: ignore[index]
    later = stats.summary(200.0)["BITSTAMP"]["exchange_to_coinapi"]
    assert later["count"] == 1 and later["last_minute"] == {"count": 0, "p50": None, "p99": None}


def test_times_parse_to_the_tenth_of_a_microsecond_and_offsets_stay_correct() -> None:
    parser = TimestampReader()
    assert parser.seconds("2026-12-06T12:00:01.1234567Z") == pytest.approx(T0 + 1.1234567, abs=1e-6)
    assert parser.seconds("2026-12-06T13:00:01+01:00") == pytest.approx(T0 + 1, abs=1e-6)
    assert parser.seconds("2026-12-06T12:00:02.0000000Z") == pytest.approx(T0 + 2, abs=1e-6)
