"""Redis Streams sink: one stream per kind and symbol, each entry appended once.

How this works: each event goes to the stream ``coinfeed:<kind>:{<symbol_id>}`` as one field,
``json``, holding exactly the JSON line the ``jsonl`` sink writes. The braces are a Redis Cluster
hash tag: every stream of a symbol (and its de-dup set) lives in one slot, so the same layout
serves one server, a Sentinel-managed primary and a cluster.

Appending is idempotent. Each entry has a de-dup key: a trade's ``uuid`` (so a trade that a
restart's backfill emits again is recognised), for every other kind a digest of its JSON line (a
retried batch is the same lines). A Lua script per stream and batch (:data:`APPEND_SCRIPT`)
appends, in order, only the entries whose key is not in the stream's de-dup set
``coinfeed:<kind>:{<symbol_id>}:seen``, and keeps that set to the keys of about the last
``maxlen`` entries. A script runs whole or not at all, also when the connection dies in the
middle of a pipeline, so retrying a batch whose outcome is unknown appends only what is missing,
from any process, with Redis choosing the entry ids.

With ``wait_replicas`` above 0, a batch counts as written only once that many replicas have it
(``WAIT``); otherwise it fails and is retried. That is what keeps a failover from losing entries
the old primary acknowledged but had not yet passed on.

Every batch is pipelined (per node, in a cluster) from the writer's worker thread. The client
connects lazily, so a Redis that is down at start or later is a failing batch that the writer
retries, never a crash. Timeouts are short (:data:`SOCKET_TIMEOUT`): a hung server fails a batch
within about two seconds, well before ``sink_stall_after``.
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs
import redis
from redis.cluster import RedisCluster

from coinfeed.core.events import Event, TradeEvent, encode_event
from coinfeed.logs import redact
from coinfeed.sinks.redis_connect import Client, connect
from coinfeed.sinks.redis_url import RedisUrl, parse_redis_url

STREAM_PREFIX: Final = "coinfeed"
SEEN_SUFFIX: Final = ":seen"
SOCKET_TIMEOUT: Final = 2.0
"""Seconds a reply may take: a batch of 1000 entries takes milliseconds, a hung server forever."""
WAIT_TIMEOUT_MS: Final = 1000
"""How long ``WAIT`` gives the replicas, inside :data:`SOCKET_TIMEOUT`."""

APPEND_SCRIPT: Final = """
local stream, seen, maxlen = KEYS[1], KEYS[2], tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV, 2 do
    if not redis.call('ZSCORE', seen, ARGV[i]) then
        local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'json', ARGV[i + 1])
        local ms, seq = string.match(id, '^(%d+)-(%d+)$')
        -- Scored by entry id, so trimming by rank drops the oldest keys first.
        redis.call('ZADD', seen, tonumber(ms) * 1000 + math.min(tonumber(seq), 999), ARGV[i])
        added = added + 1
    end
end
if added > 0 then
    redis.call('ZREMRANGEBYRANK', seen, 0, -maxlen - 1)
end
return added
"""
"""KEYS: the stream and its de-dup set; ARGV: MAXLEN, then (de-dup key, JSON line) pairs.
Returns how many entries it appended (the others were there already)."""


def stream_key(event: Event) -> str:
    """``coinfeed:<kind>:{<symbol_id>}``, e.g. ``coinfeed:trade:{BITSTAMP_SPOT_BTC_USD}``, or
    ``coinfeed:exrate:{BTC/USD}`` for a rate (keys are binary-safe: the ``/`` needs no escape)."""
    return f"{STREAM_PREFIX}:{event.__struct_config__.tag}:{{{event.symbol_id}}}"


def dedup_key(event: Event, line: bytes) -> str | bytes:
    """What makes ``event`` the same entry again: a trade's uuid, or the digest of its line."""
    if isinstance(event, TradeEvent):
        return event.uuid
    return hashlib.blake2b(line, digest_size=8).hexdigest()


class ReplicasBehind(redis.RedisError):
    """Fewer replicas than ``wait_replicas`` confirmed a batch in time (it is retried)."""


@attrs.define(slots=True, eq=False)
class RedisStreamSink:
    """Appends each batch to per-(kind, symbol) streams; see the module docstring."""

    name: str
    url: RedisUrl = attrs.field(repr=False)
    maxlen: int
    wait_replicas: int = 0
    ca_file: str | None = None
    timeout: float = SOCKET_TIMEOUT
    blocking: bool = True
    already_written: int = 0  # entries a retry found already in Redis (tests, diagnostics)
    _client: Client | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        maxlen: int,
        name: str | None = None,
        wait_replicas: int = 0,
        ca_file: str | None = None,
        timeout: float = SOCKET_TIMEOUT,
    ) -> RedisStreamSink:
        """A sink for any form of :mod:`~coinfeed.sinks.redis_url` (nothing is sent yet).
        ``name`` defaults to ``url`` with its password as ``***``; ``ca_file`` (PEM) adds CAs
        to verify a ``rediss://`` server with, next to the system's."""
        parsed = parse_redis_url(url)
        if parsed is None:
            raise ValueError(f"not a Redis URL: {redact(url, ())!r}")
        return cls(
            name if name is not None else str(parsed),
            parsed,
            maxlen,
            wait_replicas=wait_replicas,
            ca_file=ca_file,
            timeout=timeout,
        )

    @property
    def client(self) -> Client:
        """The client, created on first use (a cluster's is asked for its slot map then)."""
        if self._client is None:
            self._client = connect(self.url, timeout=self.timeout, ca_file=self.ca_file)
        return self._client

    def write_batch(self, events: list[Event]) -> None:
        streams: dict[str, list[int | str | bytes]] = {}
        for event in events:
            line = encode_event(event)
            key = stream_key(event)
            args = streams.get(key)
            if args is None:
                streams[key] = args = [self.maxlen]
            args += (dedup_key(event, line), line)
        client = self.client
        pipe = client.pipeline(transaction=False)
        for key, args in streams.items():
            pipe.execute_command("EVAL", APPEND_SCRIPT, 2, key, key + SEEN_SUFFIX, *args)
        in_pipeline = self.wait_replicas > 0 and not isinstance(client, RedisCluster)
        if in_pipeline:
            pipe.execute_command("WAIT", self.wait_replicas, WAIT_TIMEOUT_MS)
        results = pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        self.already_written += len(events) - sum(results[: len(streams)])
        if in_pipeline:
            self._check_replicas(results[-1])
        elif self.wait_replicas > 0:
            self._wait_in_cluster(client, streams)  # type: ignore[arg-type]

    def _wait_in_cluster(self, client: RedisCluster, streams: dict[str, object]) -> None:
        # WAIT goes to a node, not a key: ask each primary that took part of the batch (by the
        # slot map as it is after the pipeline, which MOVED replies have corrected).
        nodes = {}
        for key in streams:
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            nodes[node.name] = node
        for node in nodes.values():
            wait = ("WAIT", self.wait_replicas, WAIT_TIMEOUT_MS)
            self._check_replicas(client.execute_command(*wait, target_nodes=node))  # type: ignore[no-untyped-call]

    def _check_replicas(self, acknowledged: object) -> None:
        if not isinstance(acknowledged, int) or acknowledged < self.wait_replicas:
            raise ReplicasBehind(
                f"{acknowledged} of {self.wait_replicas} replicas confirmed the batch within "
                f"{WAIT_TIMEOUT_MS} ms (redis_wait_replicas)"
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
