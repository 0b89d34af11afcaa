"""Latency telemetry against the simulator's injected latency per exchange."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx
import msgspec
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.events import TradeEvent
from coinfeed.core.latency import BUCKETS, LatencyStats
from coinfeed.simulator import SimulatorConfig
from tests.helpers import running, wait_for

INJECTED = {"BITSTAMP": (0.200, 0.130), "COINBASE": (0.020, 0.300)}
"""exchange -> (exchange_to_coinapi, coinapi_to_coinfeed) seconds, each well inside one bucket:
``coinapi_to_coinfeed`` also holds the simulator's and coinfeed's own delays (milliseconds)."""


def bucket_of(seconds: float) -> str:
    """The ``le`` of the bucket a value falls in."""
    return repr(next(bound for bound in BUCKETS if seconds <= bound))


def bucket_counts(text: str) -> dict[tuple[str, str], dict[str, float]]:
    """(stage, exchange) -> le -> count in that bucket alone (not cumulative)."""
    cumulative: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "coinfeed_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (sample.labels["stage"], sample.labels["exchange"])
                cumulative.setdefault(key, {})[sample.labels["le"]] = sample.value
    counts: dict[tuple[str, str], dict[str, float]] = {}
    for key, by_le in cumulative.items():
        bounds = sorted(by_le, key=lambda le: float(le))
        previous, counts[key] = 0.0, {}
        for le in bounds:
            counts[key][le] = by_le[le] - previous
            previous = by_le[le]
    return counts


async def test_injected_latency_shows_in_the_histograms_and_api_latency(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(
        make_settings,
        SimulatorConfig(rate=1000, seed=4, latency=INJECTED),
        http=ListenAddress("127.0.0.1", 0),
    ) as (_sim, service, _sink):
        latency = service.processor.latency
        assert latency is not None
        await wait_for(
            lambda: all(
                latency.histograms.get(("coinapi_to_coinfeed", exchange), None) is not None
                and latency.histograms[("coinapi_to_coinfeed", exchange)].count >= 100
                for exchange in INJECTED
            ),
            15,
            "100 samples per exchange",
        )
        await trio.sleep(0.5)
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            counts = bucket_counts((await client.get("/metrics")).text)
            answer = (await client.get("/api/latency")).json()
    for exchange, stages in INJECTED.items():
        for stage, seconds in zip(
            ("exchange_to_coinapi", "coinapi_to_coinfeed"), stages, strict=True
        ):
            by_le = counts[(stage, exchange)]
            total = sum(by_le.values())
            share = by_le[bucket_of(seconds)] / total
            assert share >= 0.9, (stage, exchange, by_le)
            summary = answer["exchanges"][exchange][stage]
            low = max((b for b in BUCKETS if b < seconds), default=0.0)
            assert low <= summary["p50"] <= float(bucket_of(seconds)), (stage, exchange, summary)
            assert summary["last_minute"]["count"] > 0
    assert answer["stages"] == ["exchange_to_coinapi", "coinapi_to_coinfeed"]


class _Uuid(msgspec.Struct):
    type: str = ""
    uuid: str = ""


async def test_a_batch_is_measured_only_after_its_events_went_to_the_sinks(
    make_settings: Callable[..., Settings],
) -> None:
    # Measuring costs about a tenth of a batch's time at 10,000 frames/s: done before the
    # hand-off, it delayed every event of the batch.
    emitted: set[str] = set()
    measured_early: list[str] = []
    sampled = 0
    async with running(make_settings, SimulatorConfig(rate=1000, seed=4)) as (_sim, service, _):
        processor = service.processor
        latency = processor.latency
        assert latency is not None
        deliver, measure = processor.emit, LatencyStats.sample

        async def emit(events: list[Any]) -> None:
            emitted.update(e.uuid for e in events if isinstance(e, TradeEvent))
            await deliver(events)

        def sample(items: Sequence[object], *args: Any) -> float:
            nonlocal sampled
            sampled += 1
            if sampled > 1:  # the first may be of a batch handed over before emit was probed
                trades = [_decode_uuid(i) for i in items if isinstance(i, bytes | str)]
                measured_early.extend(
                    t.uuid for t in trades if t.type == "trade" and t.uuid.lower() not in emitted
                )
            return measure(latency, items, *args)

        processor.emit = emit
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LatencyStats, "sample", lambda _self, *args: sample(*args))
            await wait_for(lambda: sampled >= 50 and len(emitted) >= 100, 10, "50 batches")
    assert not measured_early


_decode_uuid = msgspec.json.Decoder(_Uuid).decode
