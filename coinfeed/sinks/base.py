"""The sink interface and the spec parser."""

from __future__ import annotations

from typing import Protocol

from coinfeed.events import Event


class SinkSpecError(ValueError):
    """A sink spec that names no known sink; the message lists the accepted forms."""


class Sink(Protocol):
    """Writes batches of events; ``write_batch`` writes the whole batch or raises.

    When ``blocking`` is true (files, sockets, databases) ``write_batch`` and ``close`` run in a
    worker thread so a slow device never stalls the event loop; an in-memory sink sets it false.
    """

    name: str
    blocking: bool

    def write_batch(self, events: list[Event]) -> None: ...

    def close(self) -> None: ...


ACCEPTED_FORMS = "jsonl:-, jsonl:PATH, sqlite:PATH, redis://HOST:PORT/DB"


def open_sink(spec: str) -> Sink:
    """Build the sink a spec names (opening files happens here, in the caller's thread)."""
    scheme, _, rest = spec.partition(":")
    if scheme == "jsonl" and rest:
        from coinfeed.sinks.jsonl import JsonlSink

        return JsonlSink.open(rest)
    if scheme in ("sqlite", "redis"):
        raise SinkSpecError(f"sink {spec!r}: the {scheme} sink is not available in this build yet")
    raise SinkSpecError(f"sink {spec!r} is not one of: {ACCEPTED_FORMS}")
