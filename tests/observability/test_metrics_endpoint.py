"""/metrics and /api/debug/memory over real HTTP while the simulator drives the service."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.latency import BUCKETS, Histogram
from coinfeed.observability import metrics as metrics_module
from coinfeed.simulator import SimulatorConfig
from tests.fakes import FakeWebSocket
from tests.helpers import (
    SYMBOLS,
    SlowSink,
    running,
    samples,
    serving_fake_feed,
    wait_for,
)

# The metrics contract (docs/architecture.md): every name, its type and its labels.
CONTRACT = {
    "coinfeed_messages_received": ("counter", {"type"}),
    "coinfeed_messages_invalid": ("counter", {"reason"}),
    "coinfeed_messages_skipped": ("counter", {"reason"}),  # added beyond §4.3 (issue 10)
    "coinfeed_frames_dropped": ("counter", set()),
    "coinfeed_queue_depth": ("gauge", {"queue"}),
    "coinfeed_queue_capacity": ("gauge", {"queue"}),
    "coinfeed_queue_peak": ("gauge", {"queue"}),
    "coinfeed_gaps_detected": ("counter", {"type"}),
    "coinfeed_recoveries": ("counter", {"type", "outcome"}),
    "coinfeed_recovery_in_flight": ("gauge", set()),
    "coinfeed_recovery_oldest_pending_seconds": ("gauge", set()),
    "coinfeed_recovery_seconds": ("histogram", set()),
    "coinfeed_reconnects": ("counter", {"reason"}),
    "coinfeed_reconnect_seconds": ("histogram", set()),
    "coinfeed_connected": ("gauge", set()),
    "coinfeed_symbols_silent": ("gauge", set()),
    "coinfeed_ready": ("gauge", set()),
    "coinfeed_memory_limit_bytes": ("gauge", set()),
    "coinfeed_message_processing_seconds": ("histogram", set()),
    "coinfeed_sink_events": ("counter", {"sink"}),
    "coinfeed_sink_errors": ("counter", {"sink"}),
    "coinfeed_sink_events_rejected": ("counter", {"sink"}),
    "process_resident_memory_bytes": ("gauge", set()),
}


async def test_every_documented_metric_is_exported_with_its_type_and_labels(
    make_settings: Callable[..., Settings],
) -> None:
    ws = FakeWebSocket()
    async with serving_fake_feed(make_settings, ws) as (_service, client):
        ws.feed('{"type":"hearbeat"}', "not json")
        await trio.sleep(0.1)
        text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        assert name in families, f"{name} is not exported"
        family = families[name]
        assert family.type == kind, f"{name} is a {family.type}, documented as a {kind}"
        for sample in family.samples:
            if kind == "counter":
                assert sample.name in (name + "_total", name + "_created"), sample.name
            if kind != "histogram":
                assert set(sample.labels) == labels, (name, sample.labels)
    histogram = {s.name for s in families["coinfeed_message_processing_seconds"].samples}
    assert {"coinfeed_message_processing_seconds_bucket"} <= histogram
    assert families["coinfeed_connected"].samples[0].value == 1


async def test_counters_move_with_frames_gaps_recoveries_and_drops(
    make_settings: Callable[..., Settings],
) -> None:
    sink = SlowSink(delay=0.0)
    async with (
        running(
            make_settings,
            SimulatorConfig(rate=6000, seed=12),
            sink=sink,
            http=ListenAddress("127.0.0.1", 0),
            queue_capacity=20,
            sink_queue_capacity=50,
        ) as (sim, service, _),
        httpx.AsyncClient(base_url=str(service.http_url), timeout=5) as client,
    ):

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return samples((await client.get("/metrics")).text)

        def value(
            metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float],
            name: str,
            **labels: str,
        ) -> float:
            return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

        await trio.sleep(0.5)
        first = await scrape()
        await trio.sleep(0.5)
        second = await scrape()
        for kind in ("trade", "quote", "book"):
            name = "coinfeed_messages_received_total"
            assert value(second, name, type=kind) > value(first, name, type=kind) > 0
        events = value(second, "coinfeed_sink_events_total", sink="memory")
        assert events > value(first, "coinfeed_sink_events_total", sink="memory")

        # A sequence gap: detected, backfilled from REST, counted as recovered.
        gaps_name, rec_name = "coinfeed_gaps_detected_total", "coinfeed_recoveries_total"
        before = await scrape()
        sim.faults.skip_next("trade", SYMBOLS[0], 2)
        after = before
        with trio.fail_after(10):
            while value(after, rec_name, type="trade", outcome="recovered") <= value(
                before, rec_name, type="trade", outcome="recovered"
            ):
                await trio.sleep(0.1)
                after = await scrape()
        assert value(after, gaps_name, type="trade") > value(before, gaps_name, type="trade")
        assert value(after, "coinfeed_recovery_seconds_count") > 0

        # A slow sink fills the sink channel, then the raw queue: frames are dropped.
        sink.delay = 0.02
        dropped_before = value(after, "coinfeed_frames_dropped_total")
        await wait_for(
            lambda: service.queue.dropped_total > dropped_before, 10, "frames to be dropped"
        )
        await trio.sleep(0.5)
        overloaded = await scrape()
        assert value(overloaded, "coinfeed_frames_dropped_total") > dropped_before
        memory = (await client.get("/api/debug/memory")).json()
        peak = service.queue.statistics().peak
        assert memory["queues"]["raw"] == {
            "size": memory["queues"]["raw"]["size"],
            "capacity": 20,
            "peak": peak,
        }
        assert 0 < peak <= 20
        assert value(overloaded, "coinfeed_queue_peak", queue="raw") == peak
        assert value(overloaded, "coinfeed_queue_capacity", queue="raw") == 20
        sink_queue = memory["queues"]["sink:memory"]
        assert sink_queue["capacity"] == 50 and sink_queue["peak"] > 0
        assert memory["frames_dropped"] >= value(overloaded, "coinfeed_frames_dropped_total")
        assert "tracemalloc" not in memory
        sink.delay = 0.0


async def test_at_1000_symbols_the_text_is_written_off_the_event_loop_and_complete(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,000 symbols over 50 exchanges, every exchange with latency samples: the exposition text
    # is ~180 kB and took ~10 ms to write. The event loop only reads the numbers.
    symbols = tuple(f"EX{i % 50}_SPOT_S{i}_USD" for i in range(1000))
    threads: list[bool] = []

    def recording(registry: Any) -> bytes:
        threads.append(threading.current_thread() is threading.main_thread())
        return bytes(generate_latest(registry))

    monkeypatch.setattr(metrics_module, "generate_latest", recording)
    async with serving_fake_feed(make_settings, FakeWebSocket(), symbols=symbols) as (
        service,
        client,
    ):
        latency = service.processor.latency
        assert latency is not None
        for stage in ("exchange_to_coinapi", "coinapi_to_coinfeed"):
            for exchange in {f"EX{i}" for i in range(50)}:
                latency.histograms[(stage, exchange)] = Histogram(
                    [0] * 5 + [3] + [0] * (len(BUCKETS) - 5), 0.03, 3
                )
        text = (await client.get("/metrics")).text
    assert threads == [False]  # rendered once, in a worker thread
    counts = {
        (s.labels["stage"], s.labels["exchange"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "coinfeed_latency_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert len(counts) == 100 and set(counts.values()) == {3.0}


def test_the_latency_text_written_directly_is_prometheus_clients_byte_for_byte() -> None:
    histograms = {
        ("coinapi_to_coinfeed", "BITSTAMP"): Histogram(
            [1, 0, 7, *[0] * (len(BUCKETS) - 3), 2], 12.5, 10
        ),
        ("exchange_to_coinapi", 'ODD"EX\\'): Histogram([0] * len(BUCKETS) + [1], 1e6, 1),
        ("exchange_to_coinapi", "BITSTAMP"): Histogram([0] * (len(BUCKETS) + 1), 0.0, 0),
        ("coinapi_to_coinfeed", "BINANCE"): Histogram(  # counts Go writes with an exponent
            [999_999, 1, 1_234_567, *[0] * (len(BUCKETS) - 3), 10**12], 3.25e7, 10**12 + 2_234_567
        ),
    }

    class One:
        def collect(self) -> Any:
            yield metrics_module.latency_family(histograms)

    assert metrics_module.latency_text(histograms).encode() == generate_latest(One())


def test_the_families_written_directly_are_prometheus_clients_byte_for_byte() -> None:
    families = [
        metrics_module.Family(
            "counter", "recoveries", "Recovery outcomes", ("type", "outcome"),
            [(("trade", "backfilled"), 3), (("book", "failed"), 12_345_678)],
        ),
        metrics_module.Family(
            "gauge", "queue_depth", "A help with \\ and a\nnewline", ("queue",),
            [(('r"a\\w\n',), 2.5)],
        ),
        metrics_module.Family("counter", "reconnects", "Connection ends", ("reason",), []),
        metrics_module.Family.single("counter", "frames_dropped", "Frames dropped", 0),
        metrics_module.Family.single("gauge", "oldest_seconds", "Age", 1e-7),
    ]  # fmt: skip

    class All:
        def collect(self) -> Any:
            return (family.metric() for family in families)

    assert "".join(family.text() for family in families).encode() == generate_latest(All())


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0, gzip", True),
        ("gzip;q=nonsense", False),
    ],
)
async def test_metrics_are_gzipped_when_the_scraper_accepts_it_as_prometheus_does(
    make_settings: Callable[..., Settings], accept_encoding: str, gzipped: bool
) -> None:
    # httpx undoes the gzip itself: the bytes are read as they came over the wire.
    async with (
        serving_fake_feed(make_settings, FakeWebSocket()) as (_service, client),
        client.stream("GET", "/metrics", headers={"Accept-Encoding": accept_encoding}) as answer,
    ):
        wire = b"".join([chunk async for chunk in answer.aiter_raw()])
    assert answer.status_code == 200
    assert answer.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    text = (gzip.decompress(wire) if gzipped else wire).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "coinfeed_messages_received",
        "coinfeed_latency_seconds",
        "process_cpu_seconds",
    } <= names
    if gzipped:
        assert len(wire) * 4 < len(text)
