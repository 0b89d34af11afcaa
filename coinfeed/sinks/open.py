"""Sink specs: the one parser of their grammar (``config`` validates with it too), and opening.

Accepted forms: ``jsonl:-`` (stdout), ``jsonl:PATH``, ``sqlite:PATH`` and
``redis://HOST:PORT/DB``. :func:`parse_sink_spec` checks the text and gives its canonical form
(Redis URLs get their default port and database); :func:`open_sink` turns a spec into a
:class:`~coinfeed.sinks.base.Sink`. ``docs/sinks.md`` describes each sink.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import urlsplit

import attrs

from coinfeed.sinks.base import Sink, SinkSpecError

ACCEPTED_FORMS: Final = "jsonl:- (stdout), jsonl:PATH, sqlite:PATH or redis://HOST:PORT/DB"


@attrs.frozen
class SinkSpec:
    """A checked sink spec; ``str()`` gives its canonical text."""

    kind: Literal["jsonl", "sqlite", "redis"]
    target: str
    """``-`` or a path for files, the whole ``redis://HOST:PORT/DB`` URL for Redis."""

    def __str__(self) -> str:
        return self.target if self.kind == "redis" else f"{self.kind}:{self.target}"


def parse_sink_spec(text: str) -> SinkSpec:
    """The spec ``text`` names, or :class:`SinkSpecError` listing the accepted forms."""
    scheme, colon, rest = text.partition(":")
    if text == "jsonl:-" or (scheme == "jsonl" and colon and rest and rest != "-"):
        return SinkSpec("jsonl", rest)
    if scheme == "sqlite" and colon and rest and rest != "-":
        return SinkSpec("sqlite", rest)
    if text.startswith("redis://"):
        try:
            parts = urlsplit(text)
            host, port = parts.hostname, parts.port or 6379
            database = int(parts.path.strip("/") or 0)
        except ValueError:
            host, port, database = None, 0, -1
        if host and database >= 0 and "@" not in parts.netloc and not parts.query:
            netloc = f"[{host}]" if ":" in host else host
            return SinkSpec("redis", f"redis://{netloc}:{port}/{database}")
    raise SinkSpecError(f"unknown sink {text!r}: accepted are {ACCEPTED_FORMS}")


def open_sink(spec: str | SinkSpec, *, redis_maxlen: int = 100_000) -> Sink:
    """Build the sink a spec names (files are opened here, in the caller's thread; Redis
    connects lazily on the first write, so a Redis that is down is a failing sink, not a crash).
    """
    parsed = spec if isinstance(spec, SinkSpec) else parse_sink_spec(spec)
    try:
        return _open(parsed, redis_maxlen)
    except (OSError, sqlite3.Error) as exc:
        raise SinkSpecError(f"sink {str(spec)!r} cannot be opened: {exc}") from None


def open_sinks(specs: Sequence[str | SinkSpec], *, redis_maxlen: int = 100_000) -> list[Sink]:
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


def _open(spec: SinkSpec, redis_maxlen: int) -> Sink:
    # Imported here: a process with only a JSONL sink never loads sqlite3's or redis's modules.
    if spec.kind == "jsonl":
        from coinfeed.sinks.jsonl import JsonlSink

        return JsonlSink.open(spec.target)
    if spec.kind == "sqlite":
        from coinfeed.sinks.sqlite import SqliteSink

        return SqliteSink.open(spec.target)
    from coinfeed.sinks.redis_streams import RedisStreamSink

    return RedisStreamSink.open(spec.target, maxlen=redis_maxlen)
