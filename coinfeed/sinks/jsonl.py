"""JSON Lines sink: one event per line, to stdout or a file, whole lines only."""

from __future__ import annotations

import sys
from typing import BinaryIO

import attrs

from coinfeed.core.events import Event, encode_lines


@attrs.define(slots=True, eq=False)
class JsonlSink:
    """Appends each batch as complete lines and flushes, so readers never see a partial line."""

    name: str
    _stream: BinaryIO
    _owned: bool
    blocking: bool = True

    @classmethod
    def open(cls, target: str) -> JsonlSink:
        if target == "-":
            return cls("jsonl:-", sys.stdout.buffer, owned=False)
        return cls(f"jsonl:{target}", open(target, "ab"), owned=True)

    def encode_batch(self, events: list[Event]) -> bytes:
        """The batch as complete lines (the writer calls this on the event loop)."""
        return encode_lines(events)

    def write_encoded(self, data: bytes) -> None:
        """Append lines from :meth:`encode_batch` (in the writer's worker thread)."""
        self._stream.write(data)
        self._stream.flush()

    def write_batch(self, events: list[Event]) -> None:
        self.write_encoded(self.encode_batch(events))

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()
