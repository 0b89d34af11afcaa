"""The service: one root nursery supervising every task of coinfeed, and its ordered shutdown.

How this works: :meth:`Service.run` opens the root nursery and starts the connection, the
processor, the recovery scheduler, one writer per sink, the stats reporter and the signal
watcher. Nothing is started anywhere else and nothing is detached, so when ``run`` returns no
task, socket or thread of coinfeed is left.

Shutdown (first SIGTERM/SIGINT, ``--duration`` elapsed, or a fatal error) runs in order within
``shutdown_timeout``: stop the connection (shielded close), stop recovery, close the frame
queue, let the processor drain what is queued, let each sink writer flush and close, then
cancel what is left (signals, stats, HTTP). A second signal cancels everything at once.
"""

from __future__ import annotations

import signal
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import attrs
import trio
from loguru import logger

from coinfeed import __version__
from coinfeed.checkpoint import Checkpointer, CheckpointError, CheckpointFile
from coinfeed.config import ConfigError, Settings
from coinfeed.connection import (
    Connection,
    ConnectionCounters,
    ScopeRateLimit,
    TerminalError,
    fatal_for,
)
from coinfeed.core.decoding import FrameDecoder
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.latency import STAGES, LatencyStats, exchanges_of
from coinfeed.core.protocol import SYMBOL_SCOPED_TYPES, exrate_pairs
from coinfeed.core.shard import symbols_of_shard
from coinfeed.framequeue import FrameQueue, QueueStatistics
from coinfeed.gaps import SKEW_MARGIN, RecoveryRequests, new_run_id
from coinfeed.logs import redact
from coinfeed.observability.http import ServiceView, serve_api
from coinfeed.observability.metrics import Metrics, MetricSources
from coinfeed.observability.process import rss_bytes
from coinfeed.observability.readiness import Readiness
from coinfeed.observability.symbols import SILENT_HINT, SymbolWatch
from coinfeed.processor import Derivations, Processor, ProcessorCounters
from coinfeed.recording.format import FORMAT_NAME, FORMAT_VERSION, RecordingError, wall_ns
from coinfeed.recording.recorder import RecordedRecovery, Recorder
from coinfeed.recording.replay import (
    RecordedClock,
    ReplayDriver,
    ReplayRecovery,
    processor_for,
)
from coinfeed.recording.segments import SegmentWriter
from coinfeed.recovery import RecoveryScheduler
from coinfeed.rest import RestClient, open_rest_client
from coinfeed.sinks import Sink, SinkSpecError, open_sinks
from coinfeed.sinks.writer import EventChannel, SinkCounters, SinkHub, SinkWriter
from coinfeed.status import Fatal, ServiceStatus
from coinfeed.tls import client_context
from coinfeed.transport import Transport
from coinfeed.transport.direct import DirectTransport
from coinfeed.transport.libraries import TrioWebSocketTransport, WebsocketsTransport

EXIT_OK = 0
EXIT_FAILURE = 1
OVERSIZE_SLACK_BYTES = 1 << 20
"""How far past ``max_frame_bytes`` a frame is still read (and counted) rather than refused."""
RECOVERY_BACKLOG = 4
"""Control items (e.g. pages of recovered trades) queued for the processor before REST
workers wait: keeps recovered data in memory to a few pages during a sink outage."""


RECORD_CHANNEL_CAPACITY = 20_000
"""Items (frames, control items) the recording's channel holds: its writer takes half at a time
as one zstd frame, so the processor fills the other half while a worker thread compresses."""


@attrs.define(slots=True, eq=False)
class Service:
    """Everything one coinfeed run owns; build with :meth:`build` (live) or
    :meth:`build_replay`, run with :meth:`run`."""

    settings: Settings
    status: ServiceStatus
    queue: FrameQueue
    connection: Connection | None
    """None in a replay."""
    processor: Processor
    """The processor of the run being replayed changes with each run of a recording."""
    recovery: RecoveryScheduler | ReplayRecovery
    rest: RestClient | None
    hub: SinkHub
    metrics: Metrics
    readiness: Readiness
    symbol_watch: SymbolWatch
    checkpointer: Checkpointer | None = None
    replay: ReplayDriver | None = None
    handle_signals: bool = True
    http_url: str | None = attrs.field(default=None, init=False)
    _timed_out: bool = attrs.field(default=False, init=False)
    _processor_clean: bool = attrs.field(default=False, init=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        transport: Transport | None = None,
        sinks: list[Sink] | None = None,
        handle_signals: bool = True,
    ) -> Service:
        """Wire the components (opens sinks; ``ConfigError`` naming ``sinks`` if one cannot open).

        With ``settings.shard`` set, only this shard's symbols are subscribed and processed;
        a shard left with no symbols raises ``ConfigError`` naming ``shard``.
        """
        settings = apply_shard(settings)
        status = ServiceStatus()
        queue = FrameQueue(settings.queue_capacity)
        metrics = Metrics.create()
        api_key = settings.api_key.reveal() if settings.api_key else None
        # A frame a little over max_frame_bytes is still read and counted as too_large; one far
        # over it closes the connection (1009) and the reconnect backfill covers it, so a huge
        # frame never costs its size in memory the process keeps.
        max_message_bytes = settings.max_frame_bytes + OVERSIZE_SLACK_BYTES
        try:
            # One trust store for the WebSocket and REST (see coinfeed/tls.py).
            ssl_context = client_context(settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("ca_file", f"cannot load {settings.ca_file!r}: {exc}") from None
        connection = Connection(
            transport=transport
            or open_transport(settings.transport, max_message_bytes, ssl_context),
            queue=queue,
            status=status,
            url=settings.ws_url,
            symbols=settings.symbols,
            types=settings.types,
            api_key=api_key,
            connect_timeout=settings.connect_timeout,
            stale_after=settings.stale_after,
            backoff_max=settings.backoff_max,
            healthy_after=settings.healthy_after,
            queue_full_wait=settings.queue_full_wait,
            apikey_in_hello=settings.apikey_in_hello,
            ohlcv_periods=settings.ohlcv_periods,
            exrate_pairs=exrate_pairs(settings.symbols),
            scope_limit=ScopeRateLimit(settings.resubscribe_limit, settings.resubscribe_window),
            observe_reconnect=metrics.reconnect_seconds.observe,
        )
        rest = open_rest_client(
            settings.rest_url,
            api_key,
            max_connections=settings.recovery_concurrency + 2,
            ssl_context=ssl_context,
        )
        recovery = RecoveryScheduler(
            rest=rest,
            deliver=queue.put_control_nowait,
            resubscribe=connection.scope_requests.request,
            concurrency=settings.recovery_concurrency,
            max_attempts=settings.recovery_max_attempts,
            pause=settings.recovery_pause,
            pending_max=settings.recovery_pending_max,
            resync_timeout=max(5.0, settings.stale_after),
            interim_books=settings.interim_rest_book,
            observe_seconds=metrics.recovery_seconds.observe,
            wait_for_room=partial(queue.wait_control_room, RECOVERY_BACKLOG),
        )
        checkpoint = open_checkpoint(settings)
        try:
            opened = _open_sinks(settings, sinks)
        except ConfigError:
            if checkpoint is not None:
                checkpoint.close()
            raise
        checkpointed = checkpoint.load() if checkpoint is not None else {}
        restart_from = {s: t for s, t in checkpointed.items() if s in settings.symbols}
        run_id = new_run_id()
        recorder = segments = None
        requests: RecoveryRequests = recovery
        if settings.record is not None:
            header = recording_header(settings, run_id, restart_from, recovery.resync_timeout)
            try:
                recorder, segments = _open_recorder(settings, header, secrets=[api_key or ""])
            except ConfigError:
                if checkpoint is not None:
                    checkpoint.close()
                for sink in opened:
                    sink.close()
                raise
            connection.on_sent = recorder.sent
            requests = RecordedRecovery(recovery, recorder)
        queue.keep_reads = True  # when frames came off the socket: latency telemetry
        bars, book_tops = _derivations(settings).builders(
            settings.symbols, settings.types, restart_from
        )
        sink_counters = SinkCounters()
        hub = _sink_hub(settings, opened, status, sink_counters)
        processor = Processor(
            queue=queue,
            recovery=requests,
            emit=hub.send,
            status=status,
            symbols=frozenset(settings.symbols),
            types=frozenset(settings.types),
            decoder=FrameDecoder(max_frame_bytes=settings.max_frame_bytes),
            dedup=TradeDedup(settings.dedup_capacity),
            observe_batch=metrics.observe_batch,
            restart_from=restart_from,
            restart_backfill_max=timedelta(seconds=settings.restart_backfill_max),
            run_id=run_id,
            recorder=recorder,
            bars=bars,
            book_tops=book_tops,
            latency=LatencyStats(exchanges_of(settings.symbols)),
            exrate_pairs=frozenset(exrate_pairs(settings.symbols)),
        )
        if recorder is not None and segments is not None:
            hub.recorder = _record_writer(
                settings, segments, recorder.channel, status, sink_counters
            )
            logger.bind(directory=settings.record, run=run_id).info("recording")
        if restart_from:
            logger.bind(
                path=str(checkpoint.path) if checkpoint else None, symbols=len(restart_from)
            ).info("restart checkpoint found: trades since it will be backfilled")
        checkpointer = (
            Checkpointer(
                checkpoint,
                processor.gaps.complete_through,
                sent_batches=lambda: hub.sent_batches,
                written_batches=hub.written_batches,
                carry={s: t for s, t in checkpointed.items() if s not in restart_from},
            )
            if checkpoint is not None
            else None
        )
        service = cls._assemble(
            settings,
            status=status,
            queue=queue,
            connection=connection,
            processor=processor,
            recovery=recovery,
            rest=rest,
            hub=hub,
            metrics=metrics,
            sink_counters=sink_counters,
            checkpointer=checkpointer,
            handle_signals=handle_signals,
        )
        return service

    @classmethod
    def build_replay(
        cls,
        settings: Settings,
        directory: str,
        *,
        speed: float | None = None,
        start: datetime | None = None,
        stop: datetime | None = None,
        sinks: list[Sink] | None = None,
        handle_signals: bool = True,
    ) -> Service:
        """A service fed by the recording in ``directory`` (see :mod:`coinfeed.recording.replay`):
        the same processor and sinks, the HTTP endpoints, no connection and no REST. The
        processor's settings (symbols, types, dedup capacity, ...) are the recorded ones."""
        status = ServiceStatus()
        metrics = Metrics.create()
        opened = _open_sinks(settings, sinks)
        sink_counters = SinkCounters()
        hub = _sink_hub(settings, opened, status, sink_counters)
        recovery = ReplayRecovery()
        clock = RecordedClock()
        counters = ProcessorCounters()
        last_seen: dict[str, dict[str, float]] = {}
        queue = FrameQueue(settings.queue_capacity)  # not fed: batches come from the recording
        # The recorded run's bars and snapshots, unless this command line asks for its own.
        replay_derivations = (
            _derivations(settings) if settings.bars or settings.book_snapshots else None
        )

        def new_processor(header: dict[str, Any]) -> Processor:
            processor = processor_for(
                header,
                recovery=recovery,
                clock=clock,
                emit=hub.send,
                status=status,
                counters=counters,
                last_seen=last_seen,
                observe_batch=metrics.observe_batch,
                derivations=replay_derivations,
            )
            service.processor = processor
            return processor

        driver = ReplayDriver(
            Path(directory),
            new_processor,
            hub.send,
            recovery,
            clock,
            speed=speed,
            start_ns=wall_ns(start) if start is not None else None,
            stop_ns=wall_ns(stop) if stop is not None else None,
        )
        placeholder = Processor(
            queue=queue,
            recovery=recovery,
            emit=hub.send,
            status=status,
            symbols=frozenset(),
            types=frozenset(),
            decoder=FrameDecoder(),
            dedup=TradeDedup(1000),
            counters=counters,
            last_seen=last_seen,
        )
        service = cls._assemble(
            settings,
            status=status,
            queue=queue,
            connection=None,
            processor=placeholder,
            recovery=recovery,
            rest=None,
            hub=hub,
            metrics=metrics,
            sink_counters=sink_counters,
            checkpointer=None,
            handle_signals=handle_signals,
        )
        service.replay = driver
        return service

    @classmethod
    def _assemble(
        cls,
        settings: Settings,
        *,
        status: ServiceStatus,
        queue: FrameQueue,
        connection: Connection | None,
        processor: Processor,
        recovery: RecoveryScheduler | ReplayRecovery,
        rest: RestClient | None,
        hub: SinkHub,
        metrics: Metrics,
        sink_counters: SinkCounters,
        checkpointer: Checkpointer | None,
        handle_signals: bool,
    ) -> Service:
        """The parts a live run and a replay share: symbol watch, readiness, metrics."""
        symbol_watch = SymbolWatch(
            symbols=settings.symbols,
            types=[t for t in settings.types if t in SYMBOL_SCOPED_TYPES],
            last_seen=processor.last_seen,
            subscribed_at=lambda: status.connected_at if status.subscribed else None,
            silent_after=settings.symbol_silent_after,
        )
        book_symbols = settings.symbols if "book" in settings.types else ()
        readiness = Readiness(
            status=status,
            stale_after=settings.stale_after,
            unsynced_books=lambda: service.processor.books.unsynced_of(book_symbols),
            secrets=[s.reveal() for s in (settings.api_key, settings.debug_token) if s],
            oldest_recovery=recovery.oldest_pending_age,
            recovery_stale_after=settings.recovery_stale_after,
            stalled_sinks=partial(hub.stalled, after=settings.sink_stall_after),
            sink_stall_after=settings.sink_stall_after,
        )
        service = cls(
            settings=settings,
            status=status,
            queue=queue,
            connection=connection,
            processor=processor,
            recovery=recovery,
            rest=rest,
            hub=hub,
            metrics=metrics,
            readiness=readiness,
            symbol_watch=symbol_watch,
            checkpointer=checkpointer,
            handle_signals=handle_signals,
        )
        metrics.collect_from(
            MetricSources(
                status=status,
                processor=processor.counters,
                connection=connection.counters if connection else ConnectionCounters(),
                recovery=recovery.counters,
                sinks=sink_counters,
                sink_names=[writer.sink.name for writer in hub.all_writers],
                queues=service.queue_statistics,
                raw_queue=queue,
                oldest_pending_recovery=recovery.oldest_pending_age,
                readiness=readiness.ready_gauge,
                silent_symbols=lambda: len(symbol_watch.silent()),
                derived=lambda: service.processor,
            )
        )
        return service

    def queue_statistics(self) -> dict[str, QueueStatistics]:
        """Every queue's size, capacity and peak: the raw frame queue and each sink's channel."""
        stats = {"raw": self.queue.statistics()}
        for writer in self.hub.all_writers:
            stats[f"sink:{writer.sink.name}"] = writer.statistics()
        return stats

    @property
    def view(self) -> ServiceView:
        """The read-only view the HTTP side gets of this service."""
        token = self.settings.debug_token
        return ServiceView(
            readiness=self.readiness,
            metrics=self.metrics.snapshot,
            book=lambda symbol_id: self.processor.books.get(symbol_id),
            queue_statistics=self.queue_statistics,
            pipeline_figures=self._pipeline_figures,
            symbols=lambda: self.symbol_watch.report(trio.current_time()),
            latency=self._latency_report,
            debug_token=token.reveal() if token else None,
            debug_tracemalloc=self.settings.debug_tracemalloc,
        )

    def _pipeline_figures(self) -> dict[str, int]:
        bars = self.processor.bars
        return {
            "frames_dropped": self.queue.dropped_total,
            "recovery_pending": self.recovery.pending,
            "dedup_entries": len(self.processor.dedup),
            "bars_retained": bars.retained() if bars is not None else 0,
        }

    def _latency_report(self) -> dict[str, Any]:
        latency = self.processor.latency
        exchanges = latency.summary(trio.current_time()) if latency is not None else {}
        return {"stages": list(STAGES), "exchanges": exchanges}

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED) -> int:
        """Run until shutdown; return the exit code (0 clean, 1 failure, 3 rejected)."""
        status = self.status
        connection_done = trio.Event()
        recovery_scope = trio.CancelScope()
        replay_scope = trio.CancelScope()
        processor_done = trio.Event()
        sinks_done = trio.Event()
        http_stop = trio.Event()
        try:
            async with trio.open_nursery() as root:
                if self.handle_signals:
                    root.start_soon(self._watch_signals, root.cancel_scope)
                if self.settings.duration is not None:
                    root.start_soon(self._stop_after, self.settings.duration)
                if isinstance(self.recovery, RecoveryScheduler):
                    root.start_soon(self._run_connection, connection_done)
                    root.start_soon(self._run_in_scope, self.recovery.run, recovery_scope)
                    root.start_soon(self._run_processor, processor_done)
                    root.start_soon(self._watch_symbols)
                else:
                    connection_done.set()
                    root.start_soon(self._run_replay, processor_done, replay_scope)
                root.start_soon(self._run_sinks, sinks_done)
                root.start_soon(self._report_stats)
                root.start_soon(self._watch_sinks)
                if self.checkpointer is not None:
                    root.start_soon(self.checkpointer.run)
                if self.settings.http is not None:
                    self.http_url = await root.start(
                        serve_api,
                        self.view,
                        self.settings.http_host,
                        self.settings.http_port,
                        http_stop,
                    )
                    logger.bind(url=self.http_url).info("http listening")
                task_status.started(self)
                await status.shutdown.wait()
                logger.bind(reason=status.shutdown_reason).info("shutting down")
                with trio.move_on_after(self.settings.shutdown_timeout) as grace:
                    if self.connection is not None:
                        self.connection.stop_nowait()
                    await connection_done.wait()
                    recovery_scope.cancel()
                    replay_scope.cancel()
                    self.queue.close()
                    await processor_done.wait()
                    await sinks_done.wait()
                self._timed_out = grace.cancelled_caught
                if self._timed_out:
                    self._report_unwritten()
                http_stop.set()
                root.cancel_scope.cancel()
        finally:
            with trio.move_on_after(1.0, shield=True):
                if self.checkpointer is not None:
                    await self.checkpointer.finish(processor_clean=self._processor_clean)
                if self.rest is not None:
                    await self.rest.aclose()
        if status.fatal is not None:
            logger.bind(exit_code=status.fatal.exit_code, reason=status.fatal.message).error(
                "stopped"
            )
            return status.fatal.exit_code
        if self._timed_out:
            logger.bind(shutdown_timeout=self.settings.shutdown_timeout).error(
                "shutdown exceeded shutdown_timeout: queued events were not all written"
            )
            return EXIT_FAILURE
        logger.info("stopped cleanly")
        return EXIT_OK

    async def _run_in_scope(self, fn: Callable[[], Any], scope: trio.CancelScope) -> None:
        with scope:
            await fn()

    async def _run_connection(self, done: trio.Event) -> None:
        assert self.connection is not None
        try:
            await self.connection.run()
        except TerminalError as exc:
            self.status.request_shutdown("rejected by CoinAPI", fatal_for(exc))
        finally:
            done.set()

    async def _run_processor(self, done: trio.Event) -> None:
        try:
            await self.processor.run()
            self._processor_clean = True
        finally:
            self.hub.close()
            done.set()

    async def _run_replay(self, done: trio.Event, scope: trio.CancelScope) -> None:
        """Replay the recording, then stop as a finished ``--duration`` would."""
        assert self.replay is not None
        try:
            with scope:
                await self.replay.run()
                self._processor_clean = True
                logger.bind(batches=self.replay.batches).info("recording replayed")
                self.status.request_shutdown("recording replayed")
        except RecordingError as exc:
            self.status.request_shutdown("replay failed", Fatal(EXIT_FAILURE, str(exc)))
        finally:
            self.hub.close()
            done.set()

    async def _run_sinks(self, done: trio.Event) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for writer in self.hub.all_writers:
                    nursery.start_soon(writer.run)
        finally:
            done.set()

    def _report_unwritten(self) -> None:
        for writer in self.hub.all_writers:
            if held := writer.held():
                logger.bind(sink=writer.sink.name, events=held).error(
                    "sink did not finish within shutdown_timeout: events not written"
                )

    async def _watch_sinks(self) -> None:
        """Log when a sink stalls (holds events, finishes no write for ``sink_stall_after``)
        and when it moves again; /ready reports the same."""
        after = self.settings.sink_stall_after
        stalled: set[str] = set()
        while True:
            await trio.sleep(min(1.0, after / 2))
            now_stalled = {}
            for name, held, seconds in self.hub.stalled(trio.current_time(), after):
                now_stalled[name] = held
                if name not in stalled:
                    logger.bind(sink=name, events=held, seconds=round(seconds, 1)).warning(
                        "sink stalled: no write finished while events wait"
                    )
            for name in stalled - now_stalled.keys():
                logger.bind(sink=name).info("sink moving again")
            stalled = set(now_stalled)

    async def _watch_symbols(self) -> None:
        """Log each subscribed symbol that falls silent (once) and when it delivers again."""
        watch = self.symbol_watch
        silent: set[str] = set()
        while True:
            await trio.sleep(min(5.0, watch.silent_after / 4))
            now_silent = set(watch.silent(trio.current_time()))
            for symbol_id in sorted(now_silent - silent):
                logger.bind(
                    symbol_id=symbol_id, symbol_silent_after=watch.silent_after, hint=SILENT_HINT
                ).warning("symbol silent: nothing received since subscribing or for a while")
            for symbol_id in sorted(silent - now_silent):
                logger.bind(symbol_id=symbol_id).info("symbol delivering again")
            silent = now_silent

    async def _stop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.status.request_shutdown(f"duration {seconds:g}s elapsed")

    async def _watch_signals(self, root: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    self.status.request_shutdown(f"{name} received")
                else:
                    logger.bind(signal=name).warning("second signal: cancelling at once")
                    self._timed_out = True
                    root.cancel()

    async def _report_stats(self) -> None:
        interval = self.settings.stats_interval
        previous = self.processor.counters.frames
        while True:
            await trio.sleep(interval)
            counters = self.processor.counters
            queue = self.queue.statistics()
            gaps = gap_summary(counters.gaps, counters.recoveries)
            logger.bind(
                frames_per_s=round((counters.frames - previous) / interval),
                queue=f"{queue.depth}/{queue.capacity}",
                peak=queue.peak,
                dropped=queue.dropped,
                **gaps,
                connected=self.status.connected,
                rss_mb=round(rss_bytes() / 1e6, 1),
            ).info("stats")
            previous = counters.frames


def _open_sinks(settings: Settings, sinks: list[Sink] | None) -> list[Sink]:
    """The sinks given, or those the settings name (``ConfigError`` naming ``sinks``)."""
    if sinks is not None:
        return sinks
    try:
        return open_sinks(settings.sinks, settings.sink_options())
    except SinkSpecError as exc:
        raise ConfigError("sinks", str(exc)) from None


def _sink_hub(
    settings: Settings, sinks: list[Sink], status: ServiceStatus, counters: SinkCounters
) -> SinkHub:
    return SinkHub.build(
        sinks,
        status,
        counters,
        capacity=settings.sink_queue_capacity,
        batch_size=settings.sink_batch_size,
        flush_interval=settings.sink_flush_interval,
    )


def recording_header(
    settings: Settings, run_id: str, restart_from: dict[str, datetime], resync_timeout: float
) -> dict[str, Any]:
    """What every segment of this run records about it: enough to build the same processor
    (never the API key)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "written_by": f"coinfeed {__version__}",
        "run_id": run_id,
        "run_started": datetime.now(UTC).isoformat(),
        "symbols": list(settings.symbols),
        "types": list(settings.types),
        "processing": {
            "dedup_capacity": settings.dedup_capacity,
            "max_frame_bytes": settings.max_frame_bytes,
            "skew_margin": SKEW_MARGIN,
            "restart_backfill_max": settings.restart_backfill_max,
            "resync_timeout": resync_timeout,
            **_derivations(settings).as_header(),
        },
        "restart_from": {symbol_id: at.isoformat() for symbol_id, at in restart_from.items()},
        "source": {"ws_url": redact(settings.ws_url, ()), "transport": settings.transport},
    }


def _open_recorder(
    settings: Settings, header: dict[str, Any], secrets: list[str]
) -> tuple[Recorder, SegmentWriter]:
    """The recorder and its segment writer (``ConfigError`` naming ``record``)."""
    assert settings.record is not None
    try:
        writer = SegmentWriter.open(
            settings.record,
            header,
            segment_seconds=settings.record_segment_seconds,
            segment_bytes=settings.record_segment_bytes,
            retention=settings.record_retention,
        )
    except RecordingError as exc:
        raise ConfigError("record", str(exc)) from None
    recorder = Recorder(EventChannel(RECORD_CHANNEL_CAPACITY), [s for s in secrets if s])
    return recorder, writer


def _record_writer(
    settings: Settings,
    segments: SegmentWriter,
    channel: EventChannel,
    status: ServiceStatus,
    counters: SinkCounters,
) -> SinkWriter:
    return SinkWriter(
        cast(Sink, segments),  # a sink of record parts: the same writer, bound and reports
        channel,
        status,
        counters,
        max_batch=RECORD_CHANNEL_CAPACITY // 2,
        flush_interval=settings.record_flush_interval,
        split=False,
    )


def gap_summary(detected: dict[str, int], outcomes: dict[tuple[str, str], int]) -> dict[str, int]:
    """Gaps so far, split so that the parts add up: ``gaps = repaired + no_repair_needed +
    unrecovered + pending``. Quote and top-N book gaps need no repair (the next message is
    complete state); trade and book gaps end repaired or unrecovered (refused included)."""
    repaired = sum(n for (_, outcome), n in outcomes.items() if outcome == "recovered")
    unrecovered = sum(n for (_, outcome), n in outcomes.items() if outcome != "recovered")
    total = sum(detected.values())
    no_repair = total - detected.get("trade", 0) - detected.get("book", 0)
    return {
        "gaps": total,
        "repaired": repaired,
        "no_repair_needed": no_repair,
        "unrecovered": unrecovered,
        "pending": total - repaired - no_repair - unrecovered,
    }


def open_transport(
    name: str, max_message_bytes: int, ssl_context: ssl.SSLContext | None = None
) -> Transport:
    """The WebSocket client named by the ``transport`` setting; ``ssl_context`` verifies
    ``wss://`` servers (the REST client's, :func:`coinfeed.tls.client_context`)."""
    if name == "direct":
        return DirectTransport(max_message_bytes=max_message_bytes, ssl_context=ssl_context)
    if name == "websockets":
        return WebsocketsTransport(max_message_bytes=max_message_bytes, ssl_context=ssl_context)
    return TrioWebSocketTransport(max_message_bytes=max_message_bytes, ssl_context=ssl_context)


def open_checkpoint(settings: Settings) -> CheckpointFile | None:
    """The locked checkpoint file of this process (None with ``state_dir = off`` or without
    trades: it records trades only). Shards sharing a directory keep one file each."""
    if settings.state_dir is None or "trade" not in settings.types:
        return None
    shard = settings.shard
    name = "checkpoint" if shard is None else f"checkpoint-shard-{shard.index}-of-{shard.count}"
    try:
        return CheckpointFile.open(settings.state_dir, name)
    except CheckpointError as exc:
        raise ConfigError("state_dir", str(exc)) from None


def apply_shard(settings: Settings) -> Settings:
    """``settings`` with ``symbols`` narrowed to its shard (unchanged without ``shard``)."""
    shard = settings.shard
    if shard is None:
        return settings
    symbols = symbols_of_shard(settings.symbols, shard.index, shard.count)
    if not symbols:
        raise ConfigError(
            "shard",
            f"shard {shard} takes none of the {len(settings.symbols)} symbols "
            f"({','.join(settings.symbols)}); check the assignment with `coinfeed shards "
            f"--symbols ... --count {shard.count}` or use fewer shards",
        )
    logger.bind(shard=str(shard), symbols=len(symbols), of=len(settings.symbols)).info(
        "shard assignment"
    )
    return attrs.evolve(settings, symbols=symbols)


__all__ = ["EXIT_FAILURE", "EXIT_OK", "Fatal", "Service", "apply_shard", "open_transport"]


def _derivations(settings: Settings) -> Derivations:
    return Derivations(settings.bars, settings.bar_grace, settings.book_snapshots)
