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

import functools
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Literal

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
        return iter([*readings.families(), latency_family(readings.latency)])

    def freeze(self) -> Readings:
        """Read every number now, on the event loop, whose counters they are, as plain values:
        the families are built from them later, in any thread. The latency histogram, whose
        size grows with the exchanges of the symbols, is only copied here."""
        processor = self._s.derived()
        latency = processor.latency if processor is not None else None
        return Readings(
            list(self._read()),
            latency.copy_histograms() if latency is not None else {},
            self._s.memory_limit,
        )

    def _read(self) -> Iterator[Family]:
        s = self._s
        p = s.processor
        queues = s.queues()
        yield Family(
            "counter",
            "messages_received",
            "Frames received, by message type",
            ("type",),
            [((kind,), n) for kind, n in sorted(received_by_type(p.received, s.raw_queue).items())],
        )
        yield Family(
            "counter",
            "messages_invalid",
            "Frames skipped as invalid, by reason",
            ("reason",),
            [((reason,), p.invalid.get(reason, 0)) for reason in INVALID_REASONS],
        )
        yield Family(
            "counter",
            "messages_skipped",
            "Valid frames that made no event, by reason",
            ("reason",),
            [
                (("unrequested",), p.unrequested),
                (("stale_sequence",), p.behind_sequence),
                (("duplicate_trade",), p.duplicates),
                (("book_unsynced",), p.unsynced_updates),
            ],
        )
        yield Family.single(
            "counter",
            "frames_dropped",
            "Frames dropped because the raw queue was full",
            sum(q.dropped for q in queues.values()),
        )
        for name, help_text, attr in (
            ("queue_depth", "Items waiting in each queue", "depth"),
            ("queue_capacity", "Capacity of each queue", "capacity"),
            ("queue_peak", "Highest depth seen in each queue", "peak"),
        ):
            yield Family(
                "gauge",
                name,
                help_text,
                ("queue",),
                [((queue,), getattr(stats, attr)) for queue, stats in sorted(queues.items())],
            )
        yield Family(
            "counter",
            "gaps_detected",
            "Sequence gaps and reconnect holes, by type",
            ("type",),
            [((kind,), n) for kind, n in sorted(p.gaps.items())],
        )
        yield Family(
            "counter",
            "recoveries",
            "Recovery outcomes",
            ("type", "outcome"),
            [(key, n) for key, n in sorted(p.recoveries.items())],
        )
        yield Family.single(
            "gauge", "recovery_in_flight", "REST calls in flight", s.recovery.in_flight
        )
        yield Family.single(
            "gauge",
            "recovery_oldest_pending_seconds",
            "Age of the oldest gap still waiting for recovery (0: none waits)",
            s.oldest_pending_recovery() or 0.0,
        )
        yield Family(
            "counter",
            "reconnects",
            "Connection ends, by reason",
            ("reason",),
            [((why,), n) for why, n in sorted(s.connection.reconnects.items())],
        )
        yield Family.single(
            "gauge", "connected", "1 while connected and subscribed", int(s.status.connected)
        )
        yield Family.single(
            "gauge",
            "symbols_silent",
            "Subscribed symbols with no message for symbol_silent_after seconds",
            s.silent_symbols(),
        )
        for name, help_text, counts in (
            ("sink_events", "Events written, by sink", s.sinks.events),
            ("sink_errors", "Sink write errors, by sink", s.sinks.errors),
            (
                "sink_events_rejected",
                "Events set aside because the sink cannot store them, by sink",
                s.sinks.rejected,
            ),
        ):
            yield Family(
                "counter",
                name,
                help_text,
                ("sink",),
                [((sink,), counts.get(sink, 0)) for sink in s.sink_names],
            )
        yield from _derived_metrics(s.derived())
        ready = s.readiness()
        if ready is not None:
            yield Family.single("gauge", "ready", "1 when /ready answers 200, else 0", int(ready))


@attrs.frozen
class Family:
    """One counter or gauge family as plain values, read on the event loop: building the
    prometheus_client object, or the text, costs more than reading the numbers, and is done
    later, in any thread."""

    kind: Literal["counter", "gauge"]
    name: str
    """Without :data:`PREFIX` (and, for a counter, without ``_total``)."""
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]]

    @classmethod
    def single(
        cls, kind: Literal["counter", "gauge"], name: str, help: str, value: float
    ) -> Family:
        return cls(kind, name, help, (), [((), value)])

    def metric(self) -> Metric:
        family_type = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        if not self.labels:
            return family_type(PREFIX + self.name, self.help, value=self.samples[0][1])
        family = family_type(PREFIX + self.name, self.help, labels=list(self.labels))
        for labels, value in self.samples:
            family.add_metric(list(labels), value)
        return family

    def text(self) -> str:
        """The family in the text format: what prometheus_client writes for :meth:`metric`, in
        a fraction of its time (it holds the GIL, and the event loop waits for it)."""
        name = PREFIX + self.name + ("_total" if self.kind == "counter" else "")
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {self.kind}"]
        order = sorted(range(len(self.labels)), key=self.labels.__getitem__)
        for values, value in self.samples:
            labels = ",".join(f'{self.labels[i]}="{_escape(values[i])}"' for i in order)
            lines.append(
                f"{name}{{{labels}}} {_go_float(value)}" if labels else f"{name} {_go_float(value)}"
            )
        return "\n".join(lines) + "\n"


@attrs.frozen
class Readings:
    """One scrape's numbers: the counter and gauge families, and the latency counts."""

    read: list[Family]
    latency: Mapping[Key, LatencyHistogram]
    memory_limit: Callable[[], int | None] | None
    """Read with the families, off the event loop: it reads files."""

    def plain(self) -> list[Family]:
        """The counter and gauge families (not the latency histogram), with the memory limit
        read now."""
        if self.memory_limit is None:
            return self.read
        limit = Family.single(
            "gauge",
            "memory_limit_bytes",
            "Memory limit of the process's cgroup in bytes (0: no limit)",
            self.memory_limit() or 0,
        )
        return [*self.read, limit]

    def families(self) -> Iterator[Metric]:
        """:meth:`plain` as prometheus_client's families."""
        return (family.metric() for family in self.plain())

    def text(self) -> str:
        """:meth:`plain` and the latency histogram in the text format."""
        return "".join(family.text() for family in self.plain()) + latency_text(self.latency)


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
    slower, and this family grows with the exchanges of the symbols (docs/performance.md).
    Even in a worker thread its time is taken from the event loop, whose steps wait for the
    GIL, so each label set's text is kept and only the counts are written per scrape."""
    lines = [f"# HELP {LATENCY_NAME} {LATENCY_HELP}", f"# TYPE {LATENCY_NAME} histogram"]
    for (stage, exchange), histogram in sorted(histograms.items()):
        buckets, count, total = _latency_prefixes(stage, exchange)
        cumulative = list(accumulate(histogram.counts))
        if cumulative[-1] < 1_000_000:  # the usual case, written inline
            lines.extend([f"{prefix}{n}.0" for prefix, n in zip(buckets, cumulative, strict=True)])
        else:
            lines.extend(map(str.__add__, buckets, map(_count_text, cumulative)))
        lines.append(count + _count_text(cumulative[-1]))
        lines.append(total + _go_float(histogram.total))
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1024)
def _latency_prefixes(stage: str, exchange: str) -> tuple[list[str], str, str]:
    """The lines of one label set up to their value: buckets, count and sum."""
    name = LATENCY_NAME
    # Label names in alphabetical order, as prometheus_client writes them.
    exchange_label, stage_label = f'exchange="{_escape(exchange)}"', f'stage="{_escape(stage)}"'
    buckets = [
        f'{name}_bucket{{{exchange_label},le="{bound}",{stage_label}}} '
        for bound in _LATENCY_BOUNDS
    ]
    labels = f"{exchange_label},{stage_label}"
    return buckets, f"{name}_count{{{labels}}} ", f"{name}_sum{{{labels}}} "


def _count_text(n: int) -> str:
    # What floatToGoString writes for a count, without its float round trip below 10**6.
    return f"{n}.0" if 0 <= n < 1_000_000 else _go_float(n)


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


def _derived_metrics(processor: Processor | None) -> Iterator[Family]:
    """Book snapshot and bar figures (latency: :meth:`CoinfeedCollector.freeze`); exported (at
    0) without the features too, so dashboards and alerts find them."""
    book_tops = processor.book_tops if processor is not None else None
    yield Family(
        "counter",
        "book_top_skipped",
        "Interval book snapshots not emitted: the book was not synced (unsynced), or the moment "
        "passed while the processor was held up (behind)",
        ("reason",),
        [
            ((reason,), book_tops.skipped[reason] if book_tops is not None else 0)
            for reason in ("behind", "unsynced")
        ],
    )
    bars = processor.bars if processor is not None else None
    yield Family.single(
        "counter",
        "bar_late_trades",
        "Trades that came after their bar could no longer be revised",
        bars.late_trades if bars is not None else 0,
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
        readings = self._coinfeed.freeze() if self._coinfeed is not None else Readings([], {}, None)
        collectors: list[Collector] = [
            self.process,
            self.recovery_seconds,
            self.reconnect_seconds,
            self.message_processing_seconds,
        ]

        def render() -> bytes:
            return bytes(generate_latest(_Collectors(collectors))) + readings.text().encode()

        return render

    def observe_batch(self, seconds: float, frames: int) -> None:
        if frames:
            self.message_processing_seconds.observe(seconds / frames)


@attrs.frozen
class _Collectors:
    """What ``generate_latest`` asks of a registry (``collect``), over some collectors."""

    collectors: list[Collector]

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()
