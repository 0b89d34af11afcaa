"""Redis Streams sink: one stream per kind and symbol, one pipeline per batch.

How this works: each event is appended with ``XADD coinfeed:<kind>:<symbol_id> MAXLEN ~ N`` as
one field, ``json``, holding exactly the JSON line the ``jsonl`` sink writes (prices are JSON
numbers with the digits CoinAPI sent). A batch goes out as one non-transactional pipeline from
the writer's worker thread, with redis-py's synchronous client (its asyncio client does not run
on trio). The client connects lazily and reconnects per command, so Redis being down at start or
later is a failed batch that the writer retries, never a crash. Socket timeouts are short
(:data:`SOCKET_TIMEOUT`, :data:`CONNECT_TIMEOUT`): a hung server (stopped, or a network that
drops packets) fails the batch within about two seconds, well before ``sink_stall_after``, and
a timeout is not retried at once (only a connection Redis closed is).

``redis://USER:PASSWORD@…`` logs in (``AUTH``, Redis ACL users or ``requirepass``);
``rediss://`` speaks TLS and verifies the server's certificate and host name against the
``redis_ca_file`` setting's CAs and the system's. The sink's ``name`` never holds the password.

Retries write nothing twice: the sink gives every entry an explicit, increasing stream id
(``<unix ms>-<n>``, starting above the stream's last id, read once per stream with XINFO) and
keeps the ids of a batch until it is written. When the writer retries the same batch, entries
that already landed are refused by Redis ("equal or smaller than the target stream top item")
and are counted as already written. This needs one writer per stream, which sharding gives
(each symbol belongs to one replica); see docs/sinks.md.
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from coinfeed.core.events import Event, encode_event
from coinfeed.logs import redact

STREAM_PREFIX: Final = "coinfeed"
DUPLICATE_ID: Final = "equal or smaller than the target stream top item"
SOCKET_TIMEOUT: Final = 2.0
"""Seconds a reply may take: a batch of 1000 XADDs takes milliseconds, a hung server forever."""
CONNECT_TIMEOUT: Final = 2.0


def stream_key(event: Event) -> str:
    """``coinfeed:<kind>:<symbol_id>``, e.g. ``coinfeed:trade:BITSTAMP_SPOT_BTC_USD``, or
    ``coinfeed:exrate:BTC/USD`` for a rate (keys are binary-safe: the ``/`` needs no escape)."""
    return f"{STREAM_PREFIX}:{event.__struct_config__.tag}:{event.symbol_id}"


def _parse_id(raw: object) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@attrs.define(slots=True, eq=False)
class RedisStreamSink:
    """Appends each batch to per-(kind, symbol) streams; see the module docstring."""

    name: str
    _client: redis.Redis
    maxlen: int
    blocking: bool = True
    already_written: int = 0  # entries a retry found already in Redis (tests, diagnostics)
    _last_ids: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    _pending: tuple[list[Event], list[str]] | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        maxlen: int,
        name: str | None = None,
        ca_file: str | None = None,
        timeout: float = SOCKET_TIMEOUT,
    ) -> RedisStreamSink:
        """A lazily connecting client for ``redis[s]://[USER[:PASSWORD]@]HOST:PORT/DB`` (nothing
        is sent yet). ``name`` defaults to ``url`` with its password as ``***``; ``ca_file``
        (PEM) adds CAs to verify a ``rediss://`` server with, next to the system's."""
        tls: dict[str, Any] = {}
        if urlsplit(url).scheme == "rediss":
            tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": ca_file}
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, CONNECT_TIMEOUT),
            # One immediate retry for a pooled socket Redis closed; a timeout is a hung server,
            # and retrying it would only double the time the batch takes to fail.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            **tls,
        )
        return cls(name if name is not None else redact(url, ()), client, maxlen)

    def write_batch(self, events: list[Event]) -> None:
        if self._pending is not None and self._pending[0] is events:
            ids = self._pending[1]  # a retry of the same batch: the same ids
        else:
            ids = self._assign_ids(events)
            self._pending = (events, ids)
        pipe = self._client.pipeline(transaction=False)
        for event, entry_id in zip(events, ids, strict=True):
            fields: dict[Any, Any] = {"json": encode_event(event)}
            pipe.xadd(stream_key(event), fields, id=entry_id, maxlen=self.maxlen, approximate=True)
        results = pipe.execute(raise_on_error=False)
        self._pending = None
        failures = [r for r in results if isinstance(r, redis.ResponseError)]
        written_before = sum(1 for r in failures if DUPLICATE_ID in str(r))
        self.already_written += written_before
        if len(failures) > written_before:
            raise next(r for r in failures if DUPLICATE_ID not in str(r))

    def _assign_ids(self, events: list[Event]) -> list[str]:
        keys = [stream_key(event) for event in events]
        self._seed_last_ids({key for key in keys if key not in self._last_ids})
        now_ms = time.time_ns() // 1_000_000
        ids: list[str] = []
        last = self._last_ids
        for key in keys:
            ms, seq = last[key]
            ms, seq = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
            last[key] = (ms, seq)
            ids.append(f"{ms}-{seq}")
        return ids

    def _seed_last_ids(self, keys: set[str]) -> None:
        """Learn each new stream's last id once, so our ids start above it."""
        if not keys:
            return
        ordered = sorted(keys)
        pipe = self._client.pipeline(transaction=False)
        for key in ordered:
            pipe.xinfo_stream(key)
        for key, info in zip(ordered, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, redis.ResponseError):
                if "no such key" not in str(info).lower():
                    raise info
                self._last_ids[key] = (0, 0)
            else:
                self._last_ids[key] = _parse_id(info["last-generated-id"])

    def close(self) -> None:
        self._client.close()
