"""Sink specs: the one parser of their grammar (``config`` validates with it too), and opening.

Accepted forms: ``jsonl:-`` (stdout), ``jsonl:PATH``, ``sqlite:PATH``, ``parquet:DIR`` (needs the
``parquet`` extra, pyarrow), ``redis://HOST:PORT/DB`` and ``rediss://HOST:PORT/DB`` (Redis over
TLS), ``redis+cluster://HOST:PORT[,HOST:PORT…]`` (Redis Cluster) and
``redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER[/DB]`` (a primary that Sentinels fail over; see
:mod:`coinfeed.sinks.redis_url`); a Redis URL may carry credentials, ``USER:PASSWORD@``,
``:PASSWORD@`` (``requirepass``) or ``USER@``, before the host.
:func:`parse_sink_spec` checks the text and gives a :class:`SinkSpec` (Redis URLs get their
default port and database); :func:`open_sink` turns a spec into a
:class:`~coinfeed.sinks.base.Sink`. ``docs/sinks.md`` describes each sink.

A Redis password is a secret: ``str()`` of a spec (the sink's name in logs, metrics and
``/ready``) shows it as ``***``, and so does every error message here, even for text that does
not parse. Only :attr:`SinkSpec.unredacted` holds it: the settings keep that text, so that
:func:`open_sink` can connect with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import quote

import attrs

from coinfeed.sinks.base import Sink, SinkSpecError
from coinfeed.sinks.redis_url import REDACTED, parse_redis_url

ACCEPTED_FORMS: Final = (
    "jsonl:- (stdout), jsonl:PATH, sqlite:PATH, parquet:DIR, redis://HOST:PORT/DB, "
    "rediss://HOST:PORT/DB (TLS), redis+cluster://HOST:PORT[,HOST:PORT...] or "
    "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]; a Redis URL may hold "
    "USER:PASSWORD@ or :PASSWORD@ before HOST"
)


@attrs.frozen
class SinkSpec:
    """A checked sink spec. ``str()`` is its canonical text with any password as ``***``: safe to
    print, and the sink's name; :attr:`unredacted` is the canonical text with the password."""

    kind: Literal["jsonl", "sqlite", "parquet", "redis"]
    target: str
    """``-`` or a path for files; for Redis the whole URL in its canonical form, e.g.
    ``redis[s]://[USER[:***]@]HOST:PORT/DB`` (user and password percent-encoded, the password
    shown as ``***``)."""
    password: str | None = attrs.field(default=None, repr=False)
    """A Redis URL's password (percent-encoded); never in ``str()`` or ``repr()``."""

    def __str__(self) -> str:
        return self.target if self.kind == "redis" else f"{self.kind}:{self.target}"

    @property
    def unredacted(self) -> str:
        """The canonical text, password included: what the settings hold and Redis is connected
        with. Never log or print it; ``parse_sink_spec`` of it gives this spec back."""
        if self.password is None:
            return str(self)
        # The user is percent-encoded (no ':' or '*'), so the first ':***@' is the password's.
        return self.target.replace(f":{REDACTED}@", f":{self.password}@", 1)


def parse_sink_spec(text: str) -> SinkSpec:
    """The spec ``text`` names, or :class:`SinkSpecError` listing the accepted forms (with any
    password in ``text`` shown as ``***``)."""
    scheme, colon, rest = text.partition(":")
    if text == "jsonl:-" or (scheme == "jsonl" and colon and rest and rest != "-"):
        return SinkSpec("jsonl", rest)
    if scheme in ("sqlite", "parquet") and colon and rest and rest != "-":
        return SinkSpec(scheme, rest)  # type: ignore[arg-type]  # one of the two literals
    if text.startswith(("redis://", "rediss://", "redis+cluster://", "redis+sentinel://")):
        spec = _parse_redis_url(text)
        if spec is not None:
            return spec
    raise SinkSpecError(f"unknown sink {redact_spec(text)!r}: accepted are {ACCEPTED_FORMS}")


def _parse_redis_url(text: str) -> SinkSpec | None:
    url = parse_redis_url(text)
    if url is None:
        return None
    password = quote(url.password, safe="") if url.password is not None else None
    return SinkSpec("redis", str(url), password)


def redact_spec(text: str) -> str:
    """``text`` with whatever could be a URL's password (from the ``:`` after the user to the
    last ``@``) shown as ``***``, for messages about text that may not even parse."""
    scheme, slashes, rest = text.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not slashes or not at:
        return text
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':' + REDACTED if colon else ''}@{after}"


@attrs.frozen
class SinkOptions:
    """The settings that shape how sinks are opened (defaults: the settings' defaults)."""

    redis_maxlen: int = 100_000
    redis_ca_file: str | None = None
    """PEM file of CAs a ``rediss://`` server is verified against, besides the system's."""
    redis_wait_replicas: int = 0
    """Replicas that must confirm a batch (``WAIT``) before it counts as written."""
    jsonl_fsync: str = "never"
    """``never`` or ``batch``: fsync a JSON Lines file after each batch."""
    parquet_roll_seconds: float = 60.0
    parquet_roll_rows: int = 50_000


DEFAULT_OPTIONS: Final = SinkOptions()


def open_sink(spec: str | SinkSpec, options: SinkOptions = DEFAULT_OPTIONS) -> Sink:
    """Build the sink a spec names (files are opened here, in the caller's thread; Redis
    connects lazily on the first write, so a Redis that is down is a failing sink, not a crash).
    """
    parsed = spec if isinstance(spec, SinkSpec) else parse_sink_spec(spec)
    try:
        return _open(parsed, options)
    except (OSError, sqlite3.Error) as exc:
        raise SinkSpecError(f"sink {str(parsed)!r} cannot be opened: {exc}") from None


def open_sinks(
    specs: Sequence[str | SinkSpec],
    options: SinkOptions = DEFAULT_OPTIONS,
) -> list[Sink]:
    """Open every sink, or none: if one fails, those already opened are closed again."""
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, options))
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return opened


def _open(spec: SinkSpec, options: SinkOptions) -> Sink:
    # Imported here: a process with only a JSONL sink never loads sqlite3's, pyarrow's or
    # redis's modules.
    if spec.kind == "jsonl":
        from coinfeed.sinks.jsonl import JsonlSink

        return JsonlSink.open(spec.target, fsync=options.jsonl_fsync)
    if spec.kind == "sqlite":
        from coinfeed.sinks.sqlite import SqliteSink

        return SqliteSink.open(spec.target)
    if spec.kind == "parquet":
        try:
            from coinfeed.sinks.parquet import ParquetSink
        except ImportError as exc:
            raise SinkSpecError(
                f"sink {str(spec)!r} needs pyarrow ({exc}): install the parquet extra, "
                "pip install 'coinfeed[parquet]'"
            ) from None
        sink: Sink = ParquetSink.open(
            spec.target,
            roll_seconds=options.parquet_roll_seconds,
            roll_rows=options.parquet_roll_rows,
        )
        return sink
    from coinfeed.sinks.redis_streams import RedisStreamSink

    return RedisStreamSink.open(
        spec.unredacted,
        name=str(spec),
        maxlen=options.redis_maxlen,
        wait_replicas=options.redis_wait_replicas,
        ca_file=options.redis_ca_file,
    )
