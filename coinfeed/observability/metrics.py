"""Prometheus metrics (names in docs/architecture.md), one registry per service run.

Hot paths keep plain integer counters on their own objects; :class:`CoinfeedCollector` turns
them into metric families only when scraped, so a frame costs no prometheus call. Histograms
(recovery, reconnect, processing time) are observed where the event happens; they are rare or
observed once per batch. ``message_processing_seconds`` observes a batch's mean time per frame.
``ready`` is exported only while something answers readiness (an HTTP listener serves /ready);
``memory_limit_bytes`` is 0 when there is no limit.

The histograms exist from :meth:`Metrics.create`, so components get their ``observe`` callables
when they are built; the collector over their counters is added once they all exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import attrs
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from coinfeed.connection import ConnectionCounters
from coinfeed.core.decoding import INVALID_REASONS
from coinfeed.core.latency import BUCKETS, Key
from coinfeed.core.latency import Histogram as LatencyHistogram
from coinfeed.framequeue import FrameQueue, QueueStatistics
from coinfeed.observability.process import memory_limit_bytes
from coinfeed.processor import Processor, ProcessorCounters
from coinfeed.recovery import RecoveryCounters
from coinfeed.sinks.writer import SinkCounters
from coinfeed.status import ServiceStatus

PREFIX = "coinfeed_"


@attrs.define(slots=True, eq=False)
class MetricSources:
    """Where the collector reads its numbers from."""

    status: ServiceStatus
    processor: ProcessorCounters
    connection: ConnectionCounters
    recovery: RecoveryCounters
    sinks: SinkCounters
    sink_names: list[str]
    queues: Callable[[], dict[str, QueueStatistics]]
    raw_queue: FrameQueue
    oldest_pending_recovery: Callable[[], float | None] = lambda: None
    """Age of the oldest gap waiting for recovery, None when none waits."""
    silent_symbols: Callable[[], int] = lambda: 0
    """Subscribed symbols that have delivered nothing for ``symbol_silent_after``."""
    readiness: Callable[[], bool | None] = lambda: None
    """True when /ready would answer 200; None (no ``ready`` gauge) while nothing answers it."""
    memory_limit: Callable[[], int | None] = memory_limit_bytes
    derived: Callable[[], Processor | None] = lambda: None
    """The processor running now (a replay has one per recorded run): latency, bars,
    book snapshots."""


def received_by_type(processed: dict[str, int], raw_queue: FrameQueue) -> dict[str, int]:
    """Frames that arrived, by type: the processed ones plus those the raw queue dropped
    (peeked for their type; ``unidentified`` when even that failed)."""
    counts = dict(processed)
    for kind, n in raw_queue.dropped_by_type.items():
        counts[kind] = counts.get(kind, 0) + n
    if raw_queue.unidentified_drops:
        counts["unidentified"] = counts.get("unidentified", 0) + raw_queue.unidentified_drops
    return counts


class CoinfeedCollector(Collector):
    """Builds the counter and gauge families from :class:`MetricSources` at scrape time."""

    def __init__(self, sources: MetricSources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        readings = self.freeze()
        return iter([*readings.families, latency_family(readings.latency)])

    def freeze(self) -> Readings:
        """Read every number now (on the event loop, whose counters they are). The latency
        histogram, whose size grows with the exchanges of the symbols, is only copied here."""
        processor = self._s.derived()
        latency = processor.latency if processor is not None else None
        return Readings(
            list(self._families()), latency.copy_histograms() if latency is not None else {}
        )

    def _families(self) -> Iterator[Metric]:
        s = self._s
        received = CounterMetricFamily(
            PREFIX + "messages_received", "Frames received, by message type", labels=["type"]
        )
        queues = s.queues()
        for kind, n in sorted(received_by_type(s.processor.received, s.raw_queue).items()):
            received.add_metric([kind], n)
        yield received
        invalid = CounterMetricFamily(
            PREFIX + "messages_invalid", "Frames skipped as invalid, by reason", labels=["reason"]
        )
        for reason in INVALID_REASONS:
            invalid.add_metric([reason], s.processor.invalid.get(reason, 0))
        yield invalid
        skipped = CounterMetricFamily(
            PREFIX + "messages_skipped",
            "Valid frames that made no event, by reason",
            labels=["reason"],
        )
        p = s.processor
        for skip, n in (
            ("unrequested", p.unrequested),
            ("stale_sequence", p.behind_sequence),
            ("duplicate_trade", p.duplicates),
            ("book_unsynced", p.unsynced_updates),
        ):
            skipped.add_metric([skip], n)
        yield skipped
        yield CounterMetricFamily(
            PREFIX + "frames_dropped",
            "Frames dropped because the raw queue was full",
            value=sum(q.dropped for q in queues.values()),
        )
        for name, help_text, attr in (
            ("queue_depth", "Items waiting in each queue", "depth"),
            ("queue_capacity", "Capacity of each queue", "capacity"),
            ("queue_peak", "Highest depth seen in each queue", "peak"),
        ):
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=["queue"])
            for queue, stats in sorted(queues.items()):
                family.add_metric([queue], getattr(stats, attr))
            yield family
        gaps = CounterMetricFamily(
            PREFIX + "gaps_detected", "Sequence gaps and reconnect holes, by type", labels=["type"]
        )
        for kind, n in sorted(s.processor.gaps.items()):
            gaps.add_metric([kind], n)
        yield gaps
        recoveries = CounterMetricFamily(
            PREFIX + "recoveries", "Recovery outcomes", labels=["type", "outcome"]
        )
        for (kind, outcome), n in sorted(s.processor.recoveries.items()):
            recoveries.add_metric([kind, outcome], n)
        yield recoveries
        yield GaugeMetricFamily(
            PREFIX + "recovery_in_flight", "REST calls in flight", value=s.recovery.in_flight
        )
        yield GaugeMetricFamily(
            PREFIX + "recovery_oldest_pending_seconds",
            "Age of the oldest gap still waiting for recovery (0: none waits)",
            value=s.oldest_pending_recovery() or 0.0,
        )
        reconnects = CounterMetricFamily(
            PREFIX + "reconnects", "Connection ends, by reason", labels=["reason"]
        )
        for why, n in sorted(s.connection.reconnects.items()):
            reconnects.add_metric([why], n)
        yield reconnects
        yield GaugeMetricFamily(
            PREFIX + "connected", "1 while connected and subscribed", value=int(s.status.connected)
        )
        yield GaugeMetricFamily(
            PREFIX + "symbols_silent",
            "Subscribed symbols with no message for symbol_silent_after seconds",
            value=s.silent_symbols(),
        )
        events = CounterMetricFamily(
            PREFIX + "sink_events", "Events written, by sink", labels=["sink"]
        )
        errors = CounterMetricFamily(
            PREFIX + "sink_errors", "Sink write errors, by sink", labels=["sink"]
        )
        rejected = CounterMetricFamily(
            PREFIX + "sink_events_rejected",
            "Events set aside because the sink cannot store them, by sink",
            labels=["sink"],
        )
        for name in s.sink_names:
            events.add_metric([name], s.sinks.events.get(name, 0))
            errors.add_metric([name], s.sinks.errors.get(name, 0))
            rejected.add_metric([name], s.sinks.rejected.get(name, 0))
        yield events
        yield errors
        yield rejected
        yield from _derived_metrics(s.derived())
        ready = s.readiness()
        if ready is not None:
            yield GaugeMetricFamily(
                PREFIX + "ready", "1 when /ready answers 200, else 0", value=int(ready)
            )
        yield GaugeMetricFamily(
            PREFIX + "memory_limit_bytes",
            "Memory limit of the process's cgroup in bytes (0: no limit)",
            value=s.memory_limit() or 0,
        )


@attrs.frozen
class Readings:
    """One scrape's numbers: the counter and gauge families, and the latency counts."""

    families: list[Metric]
    latency: Mapping[Key, LatencyHistogram]


_go_float: Callable[[float], str] = floatToGoString  # how prometheus_client writes a value
LATENCY_NAME = PREFIX + "latency_seconds"
LATENCY_HELP = (
    "Age of sampled frames: time_coinapi - time_exchange (exchange_to_coinapi), and read off the "
    "socket - time_coinapi (coinapi_to_coinfeed)"
)
_LATENCY_BOUNDS = [*(_go_float(bound) for bound in BUCKETS), "+Inf"]


def latency_text(histograms: Mapping[Key, LatencyHistogram]) -> str:
    """``coinfeed_latency_seconds`` in the text format, written directly: the same lines
    :func:`latency_family` gives through prometheus_client's generic formatter, which is far
    slower, and this family grows with the exchanges of the symbols (docs/performance.md)."""
    name = LATENCY_NAME
    lines = [f"# HELP {name} {LATENCY_HELP}", f"# TYPE {name} histogram"]
    for (stage, exchange), histogram in sorted(histograms.items()):
        # Label names in alphabetical order, as prometheus_client writes them.
        exchange_label, stage_label = f'exchange="{_escape(exchange)}"', f'stage="{_escape(stage)}"'
        cumulative = 0
        for bound, n in zip(_LATENCY_BOUNDS, histogram.counts, strict=True):
            cumulative += n
            lines.append(
                f'{name}_bucket{{{exchange_label},le="{bound}",{stage_label}}} '
                f"{_go_float(cumulative)}"
            )
        labels = f"{exchange_label},{stage_label}"
        lines.append(f"{name}_count{{{labels}}} {_go_float(cumulative)}")
        lines.append(f"{name}_sum{{{labels}}} {_go_float(histogram.total)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def latency_family(histograms: Mapping[Key, LatencyHistogram]) -> HistogramMetricFamily:
    """``coinfeed_latency_seconds{stage,exchange}`` from the processor's bucket counts."""
    family = HistogramMetricFamily(LATENCY_NAME, LATENCY_HELP, labels=["stage", "exchange"])
    bounds = [*(repr(float(bound)) for bound in BUCKETS), "+Inf"]
    for (stage, exchange), histogram in sorted(histograms.items()):
        cumulative, buckets = 0, []
        for bound, n in zip(bounds, histogram.counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        family.add_metric([stage, exchange], buckets, sum_value=histogram.total)
    return family


def _derived_metrics(processor: Processor | None) -> Iterator[Metric]:
    """Book snapshot and bar figures (latency: :meth:`CoinfeedCollector.freeze`); exported (at
    0) without the features too, so dashboards and alerts find them."""
    book_tops = processor.book_tops if processor is not None else None
    skipped = CounterMetricFamily(
        PREFIX + "book_top_skipped",
        "Interval book snapshots not emitted: the book was not synced (unsynced), or the moment "
        "passed while the processor was held up (behind)",
        labels=["reason"],
    )
    for reason in ("behind", "unsynced"):
        skipped.add_metric([reason], book_tops.skipped[reason] if book_tops is not None else 0)
    yield skipped
    bars = processor.bars if processor is not None else None
    yield CounterMetricFamily(
        PREFIX + "bar_late_trades",
        "Trades that came after their bar could no longer be revised",
        value=bars.late_trades if bars is not None else 0,
    )


@attrs.define(slots=True, eq=False)
class Metrics:
    """The registry of one service run and its histograms."""

    registry: CollectorRegistry
    recovery_seconds: Histogram
    reconnect_seconds: Histogram
    message_processing_seconds: Histogram
    process: ProcessCollector
    _coinfeed: CoinfeedCollector | None = None

    @classmethod
    def create(cls) -> Metrics:
        """The registry with the process collector and the histograms."""
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            process=ProcessCollector(registry=registry),
            recovery_seconds=Histogram(
                PREFIX + "recovery_seconds",
                "Time to fetch one recovery window from REST",
                registry=registry,
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            ),
            reconnect_seconds=Histogram(
                PREFIX + "reconnect_seconds",
                "Time from a connection ending to the first frame of the next",
                registry=registry,
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            ),
            message_processing_seconds=Histogram(
                PREFIX + "message_processing_seconds",
                "Processing time per frame (mean over each batch)",
                registry=registry,
                buckets=(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2),
            ),
        )

    def collect_from(self, sources: MetricSources) -> None:
        """Export the counters and gauges read from ``sources`` at every scrape."""
        self._coinfeed = CoinfeedCollector(sources)
        self.registry.register(self._coinfeed)

    def snapshot(self) -> Callable[[], bytes]:
        """Read coinfeed's numbers now, on the event loop; the callable returned writes the
        whole exposition text from those readings, in a worker thread: its cost grows with the
        market (the latency histogram's exchanges) and must not stall the feed. The process
        collector and prometheus_client's histograms are safe to read from any thread."""
        readings = self._coinfeed.freeze() if self._coinfeed is not None else Readings([], {})
        collectors: list[Collector] = [
            self.process,
            self.recovery_seconds,
            self.reconnect_seconds,
            self.message_processing_seconds,
        ]

        def render() -> bytes:
            text = generate_latest(_Families(collectors, readings.families))
            return bytes(text) + latency_text(readings.latency).encode()

        return render

    def observe_batch(self, seconds: float, frames: int) -> None:
        if frames:
            self.message_processing_seconds.observe(seconds / frames)


@attrs.frozen
class _Families:
    """What ``generate_latest`` asks of a registry (``collect``): the collectors' families and
    those read already."""

    collectors: list[Collector]
    families: list[Metric]

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()
        yield from self.families
