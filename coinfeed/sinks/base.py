"""The sink interface and the spec parser."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from coinfeed.events import Event


class SinkSpecError(ValueError):
    """A sink spec that names no known sink or cannot be opened; the message says which."""


class Sink(Protocol):
    """Writes batches of events; ``write_batch`` writes the whole batch or raises.

    After a failure the writer calls ``write_batch`` again with the same list object, so a sink
    may recognise a retry (the Redis sink reuses its entry ids to write nothing twice).

    When ``blocking`` is true (files, sockets, databases) ``write_batch`` and ``close`` run in a
    worker thread so a slow device never stalls the event loop; an in-memory sink sets it false.

    A sink that writes bytes may also have ``encode_batch(events) -> bytes`` and
    ``write_encoded(data)``: the writer then encodes on the event loop and hands only the bytes
    to the worker thread (JSON Lines does; encoding in the thread held the GIL just as long and
    made each hand-off wait for it), and a retry writes the same bytes again. The writer may
    encode a batch in slices and join the bytes: the encoding of a batch must be the
    concatenation of the encodings of its parts (as JSON Lines are).
    """

    name: str
    blocking: bool

    def write_batch(self, events: list[Event]) -> None: ...

    def close(self) -> None: ...


ACCEPTED_FORMS = "jsonl:-, jsonl:PATH, sqlite:PATH, redis://HOST:PORT/DB"


def open_sink(spec: str, *, redis_maxlen: int = 100_000) -> Sink:
    """Build the sink a spec names (files are opened here, in the caller's thread; Redis
    connects lazily on the first write, so a Redis that is down is a failing sink, not a crash).
    """
    try:
        return _open(spec, redis_maxlen)
    except (OSError, sqlite3.Error) as exc:
        raise SinkSpecError(f"sink {spec!r} cannot be opened: {exc}") from None


def open_sinks(specs: Sequence[str], *, redis_maxlen: int = 100_000) -> list[Sink]:
    """Open every sink, or none: if one fails, those already opened are closed again."""
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, redis_maxlen=redis_maxlen))
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return opened


def _open(spec: str, redis_maxlen: int) -> Sink:
    scheme, _, rest = spec.partition(":")
    if scheme == "jsonl" and rest:
        from coinfeed.sinks.jsonl import JsonlSink

        return JsonlSink.open(rest)
    if scheme == "sqlite" and rest and rest != "-":
        from coinfeed.sinks.sqlite import SqliteSink

        return SqliteSink.open(rest)
    if scheme == "redis" and rest.startswith("//"):
        from coinfeed.sinks.redis_streams import RedisStreamSink

        try:
            return RedisStreamSink.open(spec, maxlen=redis_maxlen)
        except ValueError as exc:
            raise SinkSpecError(f"sink {spec!r}: {exc}; expected redis://HOST:PORT/DB") from exc
    raise SinkSpecError(f"sink {spec!r} is not one of: {ACCEPTED_FORMS}")
