"""JSON Lines sink: one event per line, to stdout or a file, whole lines only.

A file stays whole through disk trouble: each batch is appended with plain ``write`` calls on an
``O_APPEND`` descriptor, and a write that fails part way (a full disk, an I/O error) is cut back
to the last complete batch before the error is raised, so the writer's retry of the same batch
leaves no torn line and writes nothing twice. If the cut itself fails (a read-only filesystem)
it is done before the next write. A file that ends in a torn line when opened (a crash in the
middle of a write) is cut back to its last complete line, with a warning.

``jsonl_fsync = batch`` fsyncs after each batch, so what the writer counts as written survives a
power loss or the filesystem going read-only; ``never`` leaves that to the page cache.
"""

from __future__ import annotations

import os
import sys
from typing import Final

import attrs
from loguru import logger

from coinfeed.core.events import Event, encode_lines

TAIL_SCAN: Final = 1 << 16
"""Bytes read at a time from the end of a file when looking for its last complete line."""


@attrs.define(slots=True, eq=False)
class JsonlSink:
    """Appends each batch as complete lines, so readers never see a partial line."""

    name: str
    _fd: int
    _seekable: bool
    """A file (cut back after a failed write); stdout may be a pipe, which cannot be cut."""
    _good_size: int = 0
    """Size of the file after the last batch written whole."""
    _torn: bool = False
    """A failed write left bytes past ``_good_size`` that are still to be cut."""
    fsync: bool = False
    blocking: bool = True

    @classmethod
    def open(cls, target: str, *, fsync: str = "never") -> JsonlSink:
        if target == "-":
            # The descriptor itself, not sys.stdout's buffer: a write blocked on a pipe nobody
            # reads holds no Python lock, so an abandoned writer thread cannot wedge the exit.
            sys.stdout.flush()
            try:
                fd = sys.stdout.fileno()
            except (AttributeError, ValueError, OSError):  # replaced by an in-memory stream
                fd = 1
            return cls("jsonl:-", fd, seekable=False)
        fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = _cut_torn_tail(fd, target)
        except OSError:
            os.close(fd)
            raise
        return cls(f"jsonl:{target}", fd, True, size, fsync=fsync == "batch")

    def encode_batch(self, events: list[Event]) -> bytes:
        """The batch as complete lines (the writer calls this on the event loop)."""
        return encode_lines(events)

    def write_encoded(self, data: bytes) -> None:
        """Append lines from :meth:`encode_batch` (in the writer's worker thread)."""
        if not self._seekable:
            _write_all(self._fd, data)
            return
        if self._torn:
            os.ftruncate(self._fd, self._good_size)
            self._torn = False
        else:
            # The file's real end: something else may have cut it (logrotate's copytruncate),
            # and cutting back to a stale size would fill the gap with NUL bytes.
            self._good_size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self._torn = True
            try:
                os.ftruncate(self._fd, self._good_size)
                self._torn = False
            except OSError:
                pass  # cut before the next write instead
            raise
        self._good_size += len(data)

    def write_batch(self, events: list[Event]) -> None:
        self.write_encoded(self.encode_batch(events))

    def close(self) -> None:
        if self._seekable and self._fd >= 0:
            if self._torn:  # never leave a torn line behind
                try:
                    os.ftruncate(self._fd, self._good_size)
                except OSError as exc:
                    logger.bind(sink=self.name, error=exc.strerror).error(
                        "could not cut a failed write back: the file ends in a torn line"
                    )
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _cut_torn_tail(fd: int, path: str) -> int:
    """Cut the file back to its last complete line; return its size."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    end = size
    while end > 0:
        start = max(0, end - TAIL_SCAN)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return size
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    logger.bind(path=path, bytes=size - end).warning(
        "the file ended in a torn line (a crash while writing): cut back to its last whole line"
    )
    return end
