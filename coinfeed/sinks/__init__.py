"""Sinks: where normalized events go. One writer task per sink, fed by its own bounded channel.

A sink is named by a spec (ARCHITECTURE §4.2): ``jsonl:-`` (stdout), ``jsonl:PATH``,
``sqlite:PATH`` (the embedded default of ``coinfeed demo``) and ``redis://HOST:PORT/DB`` (Redis
Streams, for scale-out). :func:`open_sink` turns a spec into a :class:`Sink`; docs/sinks.md
describes each format and its delivery guarantees.
"""

from __future__ import annotations

from coinfeed.sinks.base import Sink, SinkSpecError, open_sink, open_sinks

__all__ = ["Sink", "SinkSpecError", "open_sink", "open_sinks"]
