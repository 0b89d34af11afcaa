"""The sink interface and the one error a sink spec can raise."""

from __future__ import annotations

from typing import Protocol

from coinfeed.core.events import Event


class SinkSpecError(ValueError):
    """A sink spec that names no known sink or cannot be opened; the message says which."""


class Sink(Protocol):
    """Writes batches of events; ``write_batch`` writes the whole batch or raises.

    After a failure the writer calls ``write_batch`` again with the same list object: a sink
    whose write may have landed in part must make the retry write nothing twice (SQLite's
    trades are keyed by uuid, the Redis sink's appends are idempotent).

    When ``blocking`` is true (files, sockets, databases) ``write_batch`` and ``close`` run in a
    worker thread so a slow device never stalls the event loop; an in-memory sink sets it false.

    A sink that writes bytes may also have ``encode_batch(events) -> bytes`` and
    ``write_encoded(data)``: its channel then encodes each batch on the event loop as it is
    sent, keeps only the bytes, and the writer hands them to the worker thread (JSON Lines does;
    encoding in the thread held the GIL just as long and made each hand-off wait for it); a
    retry writes the same bytes again. ``encode_batch`` must be pure, and the encoding of a
    batch the concatenation of the encodings of its parts (as JSON Lines are): batches are
    encoded in slices and joined, and consecutive ones written together.

    A sink that buffers events past ``write_batch`` (Parquet writes whole files) has
    ``flush(everything)`` and ``flush_every``: the writer calls ``flush(False)`` after
    ``flush_every`` seconds without events, so what is due gets written on a quiet feed, and
    ``flush(True)`` once its channel has closed and is drained, before ``close``; a failing
    flush is retried and reported like a failing write. Such a sink may count
    ``events_set_aside``: events it took in and found it cannot store later (the writer counts
    them as rejected).
    """

    name: str
    blocking: bool

    def write_batch(self, events: list[Event]) -> None: ...

    def close(self) -> None: ...
