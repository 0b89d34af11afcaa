"""Segment files on disk: the recording's writer (a sink) and its reader.

How the writer works: :class:`SegmentWriter` is a blocking sink, so it runs under the same
:class:`~coinfeed.sinks.writer.SinkWriter` as every sink: its own bounded channel, backpressure
on the processor when the disk is slow, retries with backoff and ``/ready`` when it fails. Each
write compresses the records handed to it as one independent zstd frame and appends it; the
writer hands them over at least every ``record_flush_interval``, so a ``kill -9`` loses about
that much at most and every file stays readable up to its last complete frame. A write that
fails part way is cut back, so its retry writes nothing twice. A segment ends after
``record_segment_seconds`` or ``record_segment_bytes``; retention then deletes the oldest
segments of the directory beyond ``record_retention``.

One process records into a directory at a time (a ``flock``), so two never interleave segments.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs
import zstandard
from loguru import logger

from coinfeed.config.values import Retention
from coinfeed.dirlock import LockError, lock_in
from coinfeed.recording.format import (
    HEADER,
    SEGMENT_SUFFIX,
    RecordingError,
    RecordSplitter,
    check_header,
    decode_record,
    encode_header,
)

LOCK_NAME: Final = ".coinfeed-record.lock"
COMPRESSION_LEVEL: Final = 1
"""Faster than zstd's default (3) and smaller on CoinAPI's frames too (docs/performance.md)."""
RETENTION_CHECK_SECONDS: Final = 60.0
"""Retention is applied when a segment ends and at least this often besides."""
READ_CHUNK: Final = 1 << 20
HEADER_READ: Final = 1 << 16
"""The first read of a segment: its header frame is small, and checking the headers of a
directory's segments (before a replay or a listing) then reads this much of each, not a chunk."""
_SEGMENT_NAME: Final = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]+-\d{6}\.cfrec$")


def segment_name(started: float, run_id: str, index: int) -> str:
    """``20261206T140300.123Z-<run>-000001.cfrec``: sorting names sorts by start time."""
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z-{run_id}-{index:06d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[Path]:
    """The segment files of a recording directory, oldest first."""
    try:
        names = sorted(name for name in os.listdir(directory) if _SEGMENT_NAME.match(name))
    except FileNotFoundError:
        return []
    return [directory / name for name in names]


@attrs.define(slots=True, eq=False)
class SegmentWriter:
    """Appends compressed records to the current segment; rotates and applies retention."""

    directory: Path
    header: dict[str, Any]
    """The header every segment of this run starts with (its ``segment`` number is added)."""
    segment_seconds: float
    segment_bytes: int
    retention: Retention | None
    _lock: int
    clock: Callable[[], float] = time.time
    name: str = "record"
    blocking: bool = True
    segments_deleted: int = 0
    _compressor: zstandard.ZstdCompressor = attrs.field(
        factory=lambda: zstandard.ZstdCompressor(level=COMPRESSION_LEVEL), init=False
    )
    _fd: int | None = attrs.field(default=None, init=False)
    _path: Path | None = attrs.field(default=None, init=False)
    _index: int = attrs.field(default=0, init=False)
    _started: float = attrs.field(default=0.0, init=False)
    _size: int = attrs.field(default=0, init=False)
    _retention_checked: float = attrs.field(default=0.0, init=False)

    @classmethod
    def open(
        cls,
        directory: str,
        header: dict[str, Any],
        *,
        segment_seconds: float,
        segment_bytes: int,
        retention: Retention | None,
    ) -> SegmentWriter:
        """Lock ``directory`` (created when needed) for this process; ``RecordingError`` when
        it cannot be used or another process records into it."""
        path = Path(directory)
        try:
            lock = lock_in(path, LOCK_NAME)
        except LockError as exc:
            if not exc.in_use:
                raise RecordingError(str(exc)) from None
            raise RecordingError(
                f"{directory!r} is being recorded into by another coinfeed process; give each "
                "process its own record directory"
            ) from None
        return cls(path, header, segment_seconds, segment_bytes, retention, lock)

    # -- the Sink interface (called in a worker thread) --------------------------------------

    def encode_batch(self, parts: list[bytes]) -> bytes:
        return b"".join(parts)

    def write_batch(self, parts: list[bytes]) -> None:
        self.write_encoded(self.encode_batch(parts))

    def write_encoded(self, data: bytes) -> None:
        """Append ``data`` (whole records) as one zstd frame, in a new segment when due."""
        now = self.clock()
        if self._fd is None or self._segment_due(now):
            self._next_segment(now, first_record_time(data))
        self._append(self._compressor.compress(data))
        if now - self._retention_checked >= RETENTION_CHECK_SECONDS:
            self._apply_retention(now)

    def close(self) -> None:
        self._close_segment()
        os.close(self._lock)

    # -- segments ------------------------------------------------------------------------------

    def _segment_due(self, now: float) -> bool:
        return now - self._started >= self.segment_seconds or self._size >= self.segment_bytes

    def _next_segment(self, now: float, first: float | None) -> None:
        """Start the next segment, named after its first record's time (``first``; else now),
        so that a replay ``--from`` a time finds the segment holding it by name."""
        self._close_segment()
        started = first if first is not None else now
        path = self.directory / segment_name(started, self.header["run_id"], self._index)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        header = encode_header({**self.header, "segment": self._index})
        try:
            _write_all(fd, self._compressor.compress(header))
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)  # the retry starts this segment again
            raise
        self._fd, self._path, self._started = fd, path, now
        self._size = os.fstat(fd).st_size
        self._index += 1
        logger.bind(path=str(path)).debug("recording segment started")
        self._apply_retention(now)

    def _append(self, frame: bytes) -> None:
        fd = self._fd
        assert fd is not None
        try:
            _write_all(fd, frame)
        except OSError:
            try:
                os.ftruncate(fd, self._size)  # no torn frame in the middle of the file
            except OSError:
                self._close_segment()  # the torn frame stays as this file's tail: a new file
            raise
        self._size += len(frame)

    def _close_segment(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)  # a finished segment survives a power loss
        except OSError as exc:
            logger.bind(path=str(self._path), error=exc.strerror).warning(
                "recording segment could not be synced to disk"
            )
        finally:
            os.close(fd)

    def _apply_retention(self, now: float) -> None:
        """Delete the oldest segments (never the current one) beyond the retention limits."""
        self._retention_checked = now
        retention = self.retention
        if retention is None:
            return
        segments = []
        for path in list_segments(self.directory):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            segments.append((path, stat.st_size, stat.st_mtime))
        total = sum(size for _, size, _ in segments)
        for path, size, modified in segments:
            if path == self._path:
                break  # only older segments go, oldest first
            too_big = retention.max_bytes is not None and total > retention.max_bytes
            too_old = retention.max_seconds is not None and now - modified > retention.max_seconds
            if not (too_big or too_old):
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.bind(path=str(path), error=exc.strerror).warning(
                    "recording retention: segment could not be deleted"
                )
                continue
            total -= size
            self.segments_deleted += 1
            logger.bind(path=str(path), bytes=size, reason="size" if too_big else "age").info(
                "recording retention: oldest segment deleted"
            )


def first_record_time(data: bytes) -> float | None:
    """Wall time (seconds) of the first record in ``data``: every record but the header starts
    with the wall clock in ns (see ``format.py``)."""
    if len(data) < 13 or data[4] == HEADER:
        return None
    return int.from_bytes(data[5:13], "little", signed=True) / 1e9


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- reading ---------------------------------------------------------------------------------


@attrs.define(slots=True)
class SegmentTail:
    """How a segment ends: whole, or with bytes that do not make a record (a crash); and how
    many bytes its records take decompressed."""

    raw_bytes: int = 0
    truncated_bytes: int = 0
    """Compressed bytes of an incomplete zstd frame, plus decompressed bytes of an incomplete
    record, at the end of the file (0 for a segment closed cleanly or cut between frames)."""
    error: str | None = None
    """Why reading stopped early (corrupt data), or None."""


def read_segment(path: Path, tail: SegmentTail | None = None) -> Iterator[Any]:
    """Decoded records of one segment, the header first (checked: ``RecordingError`` for a
    newer format or a file that is no segment). A truncated tail ends the iteration quietly
    and is described in ``tail``; a file cut before its header was whole (a crash as it was
    created) yields nothing."""
    tail = tail if tail is not None else SegmentTail()
    splitter = RecordSplitter()
    first = True
    with open(path, "rb") as file:
        data = file.read(HEADER_READ)
        while data:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            try:
                decompressed = decompressor.decompress(data)
            except zstandard.ZstdError as exc:
                tail.error = f"corrupt zstd data: {exc}"
                tail.truncated_bytes += len(data) + len(file.read())
                break
            if not decompressor.eof:  # the frame goes on past what was read
                more = file.read(max(READ_CHUNK, len(data)))
                if not more:  # it never ends: the tail of a crash
                    tail.truncated_bytes += len(data)
                    break
                data += more
                continue
            data = decompressor.unused_data or file.read(READ_CHUNK)
            tail.raw_bytes += len(decompressed)
            for kind, body in splitter.feed(decompressed):
                record = decode_record(kind, body)
                if first:
                    first = False
                    yield check_header(record, str(path))
                    continue
                yield record
    tail.truncated_bytes += splitter.pending
    if first and (tail.error is not None or splitter.pending >= 5):
        raise RecordingError(f"{path}: not a coinfeed recording segment ({tail.error})")
