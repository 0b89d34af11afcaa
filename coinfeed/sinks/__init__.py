"""Sinks: where normalized events go. One writer task per sink, fed by its own bounded channel.

A sink is named by a spec (``docs/architecture.md``, contracts): ``jsonl:-`` (stdout),
``jsonl:PATH``, ``sqlite:PATH`` (the embedded default of ``coinfeed demo``), ``parquet:DIR`` (a
hive-partitioned history, with the ``parquet`` extra) and
``redis://HOST:PORT/DB`` or ``rediss://…`` (Redis Streams, for scale-out; TLS, optionally
``USER:PASSWORD@``). :func:`open_sink` turns a spec into a :class:`Sink`; docs/sinks.md
describes each format and its delivery guarantees.
"""

from __future__ import annotations

from coinfeed.sinks.base import Sink, SinkSpecError
from coinfeed.sinks.open import (
    ACCEPTED_FORMS,
    SinkOptions,
    SinkSpec,
    open_sink,
    open_sinks,
    parse_sink_spec,
)

__all__ = [
    "ACCEPTED_FORMS",
    "Sink",
    "SinkOptions",
    "SinkSpec",
    "SinkSpecError",
    "open_sink",
    "open_sinks",
    "parse_sink_spec",
]
