"""``coinfeed consume``: read coinfeed's Redis streams with a consumer group into sinks.

The reference for consuming the streams, and the way to fan one feed out into other stores. Each
round a consumer reads new entries of its streams (``XREADGROUP … >``), writes their events to
every sink (retrying a failing sink until it takes them, like the service's writers do) and only
then acknowledges them (``XACK``). Every ``claim_idle`` seconds it takes over the entries another
consumer of the group read but left unacknowledged that long (``XAUTOCLAIM``): a consumer that
died. At start it first delivers what it itself left pending (a restart under the same name).

So delivery is at least once: an entry is acknowledged only after every sink has it, and the only
entries a sink can see twice are those a consumer wrote but died before acknowledging. Sinks that
de-duplicate (Redis by de-dup key, SQLite's trades by uuid) end up with each entry once.

Streams are ``coinfeed:<kind>:{<symbol_id>}`` (docs/sinks.md). Without ``symbols`` the consumer
finds them with ``SCAN`` (on every primary of a cluster) and looks again every
:data:`DISCOVER_INTERVAL` seconds; the group is created on each stream at its first entry
(``XGROUP CREATE … 0``), so a new group reads what the streams still hold. A cluster allows a
multi-key read only within one slot: the streams of one symbol share a slot (the hash tag), so a
round is one ``XREADGROUP`` per symbol there, pipelined per node, and one in all on a single
server.
"""

from __future__ import annotations

import functools
import math
import random
import signal
import socket
import sys
import time
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import msgspec
import redis
import trio
from loguru import logger
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from coinfeed.config import Settings
from coinfeed.core.backoff import full_jitter
from coinfeed.core.events import EVENT_KINDS, Event, decode_event
from coinfeed.sinks import Sink, SinkSpecError, open_sinks
from coinfeed.sinks.redis_connect import Client, connect
from coinfeed.sinks.redis_streams import STREAM_PREFIX
from coinfeed.sinks.redis_url import RedisUrl

DISCOVER_INTERVAL: Final = 5.0
IDLE_WAIT: Final = 0.05
"""Seconds to wait after a round that found nothing (the reads do not block: see the module)."""
SOCKET_TIMEOUT: Final = 5.0
RETRY_MAX: Final = 5.0


def default_consumer_name() -> str:
    """The host name: stable across restarts (a restarted consumer finds its own pending
    entries) and distinct per pod; give ``--consumer`` to run several on one host."""
    return socket.gethostname()


@attrs.define
class ConsumeStats:
    delivered: int = 0
    claimed: int = 0
    malformed: int = 0
    trimmed: int = 0
    """Pending entries Redis had trimmed (MAXLEN) before they could be claimed: lost."""


@attrs.define(eq=False)
class StreamConsumer:
    """One consumer of a group over the streams of ``kinds`` (and ``symbols``, or all)."""

    client: Client
    group: str
    consumer: str
    kinds: Sequence[str] = EVENT_KINDS
    symbols: Sequence[str] = ()
    count: int = 500
    claim_idle: float = 30.0
    stats: ConsumeStats = attrs.field(factory=ConsumeStats)
    _streams: list[str] = attrs.field(factory=list)
    _own_pending: set[str] = attrs.field(factory=set)
    """Streams whose entries this consumer name still holds from an earlier run."""
    _claim_cursors: dict[str, str] = attrs.field(factory=dict)
    rediscover: bool = False
    """Set when a stream lost our group: look for streams again at once."""

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def discover(self) -> list[str]:
        """Join the group on streams that appeared since the last look; returns the new ones."""
        self.rediscover = False
        found = set(self._existing_streams()) - set(self._streams)
        for key in sorted(found):
            try:
                self.client.xgroup_create(key, self.group, id="0")
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._streams.append(key)
            self._own_pending.add(key)
        return sorted(found)

    def _existing_streams(self) -> Iterable[str]:
        if self.symbols:
            wanted = [_key(kind, symbol) for kind in self.kinds for symbol in self.symbols]
            pipe = self.client.pipeline(transaction=False)
            for key in wanted:
                pipe.type(key)
            types = pipe.execute()
            return [key for key, kind in zip(wanted, types, strict=True) if kind == b"stream"]
        kinds = set(self.kinds)
        keys = (k.decode() for k in self.client.scan_iter(f"{STREAM_PREFIX}:*", _type="STREAM"))
        return [key for key in keys if key.split(":", 2)[1] in kinds and key.endswith("}")]

    def read(self) -> list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """The next entries: first those this consumer left pending (id ``0``), then new ones."""
        if not self._streams:
            return []
        own = sorted(self._own_pending)
        if own:
            replies = self._read_groups(own, "0")
            emptied = {key for key, entries in replies if not entries}
            self._own_pending -= emptied | (set(own) - {key for key, _ in replies})
            replies = [(key, entries) for key, entries in replies if entries]
            if replies:
                return replies
        return self._read_groups(self._streams, ">")

    def _read_groups(self, keys: list[str], start: str) -> list[tuple[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        groups = _by_slot(keys, isinstance(self.client, RedisCluster))
        for group in groups:
            pipe.xreadgroup(self.group, self.consumer, dict.fromkeys(group, start), self.count)
        replies: list[tuple[str, Any]] = []
        for group, reply in zip(groups, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                self._check_group_lost(reply, group)
                continue
            items = reply.items() if isinstance(reply, dict) else reply or []
            for key, entries in items:
                replies.append((key.decode() if isinstance(key, bytes) else key, entries))
        return replies

    def claim(self) -> list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """Entries other consumers left unacknowledged for ``claim_idle`` seconds, now ours."""
        pipe = self.client.pipeline(transaction=False)
        for key in self._streams:
            start = self._claim_cursors.get(key, "0-0")
            pipe.xautoclaim(
                key, self.group, self.consumer, int(self.claim_idle * 1000), start, self.count
            )
        claimed = []
        for key, reply in zip(list(self._streams), pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                self._check_group_lost(reply, [key])
                continue
            cursor, entries = reply[0], reply[1]
            trimmed = reply[2] if len(reply) > 2 else []
            self._claim_cursors[key] = cursor.decode() if isinstance(cursor, bytes) else cursor
            entries = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
            if trimmed:
                self.stats.trimmed += len(trimmed)
                logger.bind(stream=key, entries=len(trimmed)).warning(
                    "pending entries were trimmed from the stream before they were delivered "
                    "(raise redis_maxlen, or consume faster)"
                )
            if entries:
                self.stats.claimed += len(entries)
                claimed.append((key, entries))
        return claimed

    def _check_group_lost(self, error: Exception, keys: list[str]) -> None:
        """A stream deleted (and maybe created again) since we joined it has lost our group:
        forget it, so that the next discovery joins it afresh. Any other error is raised."""
        if not (isinstance(error, redis.ResponseError) and str(error).startswith("NOGROUP")):
            raise error
        lost = [key for key in keys if f"'{key}'" in str(error)] or keys
        for key in lost:
            if key in self._streams:
                self._streams.remove(key)
            self._own_pending.discard(key)
            self._claim_cursors.pop(key, None)
        self.rediscover = True
        logger.bind(streams=",".join(lost)).warning(
            "consumer group gone from stream; joining again"
        )

    def acknowledge(self, replies: list[tuple[str, list[tuple[bytes, Any]]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, entries in replies:
            pipe.xack(key, self.group, *(entry_id for entry_id, _ in entries))
        pipe.execute()

    def events_of(self, replies: list[tuple[str, list[tuple[bytes, Any]]]]) -> list[Event]:
        """The events the entries hold; one that does not decode is counted, logged, skipped
        (and acknowledged with the rest: delivering it again would not mend it)."""
        events = []
        for key, entries in replies:
            for entry_id, fields in entries:
                if fields is None:  # pending, but trimmed from the stream since (MAXLEN)
                    self.stats.trimmed += 1
                    continue
                try:
                    events.append(decode_event(fields[b"json"]))
                except (KeyError, TypeError, msgspec.DecodeError) as exc:
                    self.stats.malformed += 1
                    logger.bind(stream=key, entry=entry_id.decode(), error=str(exc)).warning(
                        "entry skipped: not a coinfeed event"
                    )
        return events


def _key(kind: str, symbol_id: str) -> str:
    return f"{STREAM_PREFIX}:{kind}:{{{symbol_id}}}"


def _by_slot(keys: list[str], cluster: bool) -> list[list[str]]:
    """Keys one multi-key command may name together: all of them on one server, those of one
    hash slot in a cluster."""
    if not cluster:
        return [keys]
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


async def consume(
    consumer: StreamConsumer,
    sinks: Sequence[Sink],
    *,
    rng: random.Random | None = None,
    stopping: trio.Event | None = None,
) -> None:
    """Deliver entries to ``sinks``, every sink written before the ack, until ``stopping`` is
    set (then the round in hand is finished, and buffering sinks flush all) or cancelled."""
    stopping = stopping if stopping is not None else trio.Event()
    rng = rng or random.Random()
    next_discovery = next_claim = 0.0
    # Sinks that hold events past write_batch (Parquet's spool) roll what is due every
    # flush_every seconds, as the service's writers have them do.
    buffering = [s for s in sinks if getattr(s, "flush", None) is not None]
    next_flush = time.monotonic() + min((s.flush_every for s in buffering), default=math.inf)  # type: ignore[attr-defined]
    while not stopping.is_set():
        now = time.monotonic()
        if now >= next_flush:
            for sink in buffering:
                await _flush(sink, everything=False, rng=rng)
            next_flush = now + min(s.flush_every for s in buffering)  # type: ignore[attr-defined]
        if now >= next_discovery or consumer.rediscover:
            new = await _redis(consumer.discover, rng)
            if new:
                logger.bind(streams=len(consumer.streams), new=len(new)).info("streams joined")
            next_discovery = now + DISCOVER_INTERVAL
        replies = []
        if now >= next_claim:
            replies = await _redis(consumer.claim, rng)
            # A dead consumer's entries are claimed --count per stream at a time: go on
            # claiming next round until there are none left.
            next_claim = now if replies else now + max(consumer.claim_idle / 2, IDLE_WAIT)
        if not replies:
            replies = await _redis(consumer.read, rng)
        if not replies:
            with trio.move_on_after(IDLE_WAIT):
                await stopping.wait()
            continue
        events = consumer.events_of(replies)
        for sink in sinks:
            await _write(sink, events, rng)
        await _redis(functools.partial(consumer.acknowledge, replies), rng)
        consumer.stats.delivered += len(events)
    for sink in buffering:
        await _flush(sink, everything=True, rng=rng)


async def _redis(call: typing.Callable[[], Any], rng: random.Random) -> Any:
    """``call()`` in a worker thread, retried while Redis fails (a failover, an outage)."""
    return await _retried(call, "redis", (redis.RedisError, RedisClusterException), rng)


async def _write(sink: Sink, events: list[Event], rng: random.Random) -> None:
    await _in_sink(sink, functools.partial(sink.write_batch, events), "sink write", rng)


async def _flush(sink: Sink, *, everything: bool, rng: random.Random) -> None:
    flush = sink.flush  # type: ignore[attr-defined]
    await _in_sink(sink, functools.partial(flush, everything), "sink flush", rng)


async def _in_sink(
    sink: Sink, call: typing.Callable[[], None], what: str, rng: random.Random
) -> None:
    """``call()`` (in a worker thread for a blocking sink), retried until it succeeds: a
    sink's failure is reported and retried, never fatal."""
    await _retried(call, what, (Exception,), rng, in_thread=sink.blocking, sink=sink.name)


async def _retried(
    call: typing.Callable[[], Any],
    what: str,
    errors: tuple[type[Exception], ...],
    rng: random.Random,
    *,
    in_thread: bool = True,
    **context: str,
) -> Any:
    """``call()`` (in a worker thread, unless ``in_thread`` is false), retried with capped,
    jittered backoff while it raises one of ``errors``: the consumer waits the failure out
    and logs each attempt."""
    attempt = 0
    while True:
        try:
            if in_thread:
                return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            return call()
        except errors as exc:
            attempt += 1
            logger.bind(**context, attempt=attempt, error=str(exc)).warning(
                f"{what} failed; retrying"
            )
            await trio.sleep(full_jitter(attempt, base=0.1, cap=RETRY_MAX, rng=rng))


def run_consume(
    settings: Settings,
    url: RedisUrl,
    group: str,
    *,
    consumer: str | None = None,
    kinds: Sequence[str] = EVENT_KINDS,
    count: int = 500,
    claim_idle: float = 30.0,
) -> int:
    """``coinfeed consume``: deliver until SIGINT or SIGTERM; returns the exit code. Entries
    read but not yet written stay pending for this consumer name's next start."""
    try:
        sinks = open_sinks(settings.sinks, settings.sink_options())
    except SinkSpecError as error:
        print(f"coinfeed: error: invalid sinks: {error}", file=sys.stderr)
        return 2
    try:
        options = {"kinds": kinds, "count": count, "claim_idle": claim_idle}
        return trio.run(_consume_until_stopped, settings, url, group, consumer, options, sinks)
    finally:
        for sink in sinks:
            sink.close()


async def _consume_until_stopped(
    settings: Settings,
    url: RedisUrl,
    group: str,
    consumer_name: str | None,
    options: dict[str, Any],
    sinks: list[Sink],
) -> int:
    rng = random.Random()
    name = consumer_name or default_consumer_name()

    def build() -> StreamConsumer:
        client = connect(url, timeout=SOCKET_TIMEOUT, ca_file=settings.redis_ca_file)
        return StreamConsumer(client, group, name, symbols=settings.symbols, **options)

    log = logger.bind(redis=str(url), group=group, consumer=name)
    kinds = ",".join(options["kinds"])
    log.bind(kinds=kinds, sinks=",".join(s.name for s in sinks)).info("consuming")
    stopping = trio.Event()
    consumer: StreamConsumer | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def deliver() -> None:
                nonlocal consumer
                consumer = await _redis(build, rng)
                await consume(consumer, sinks, rng=rng, stopping=stopping)
                nursery.cancel_scope.cancel()

            nursery.start_soon(deliver)
            nursery.start_soon(_log_stats, lambda: consumer, settings.stats_interval)
            async for signum in signals:
                # The round in hand is finished and acknowledged, within shutdown_timeout;
                # what is cut short then stays pending for this consumer's next start.
                log.bind(signal=signal.Signals(signum).name).info("stopping")
                stopping.set()
                nursery.cancel_scope.deadline = trio.current_time() + settings.shutdown_timeout
                break
    stats = consumer.stats if consumer is not None else ConsumeStats()
    log.bind(**attrs.asdict(stats)).info("stopped")
    if consumer is not None:
        consumer.client.close()
    return 0


async def _log_stats(current: typing.Callable[[], StreamConsumer | None], interval: float) -> None:
    while True:
        await trio.sleep(interval)
        consumer = current()
        if consumer is not None:
            logger.bind(**attrs.asdict(consumer.stats)).info("stats")
