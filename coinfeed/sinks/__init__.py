"""Sinks: where normalized events go. One writer task per sink, fed by its own bounded channel.

A sink is named by a spec (ARCHITECTURE §4.2): ``jsonl:-`` (stdout), ``jsonl:PATH``; SQLite and
Redis Streams arrive with the sinks issue. :func:`open_sink` turns a spec into a :class:`Sink`.
"""

from __future__ import annotations

from coinfeed.sinks.base import Sink, SinkSpecError, open_sink

__all__ = ["Sink", "SinkSpecError", "open_sink"]
