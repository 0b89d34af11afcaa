"""Parquet sink: a hive-partitioned history for DuckDB, Polars and pyarrow, whole files only.

Layout: ``DIR/kind=<kind>/date=<YYYY-MM-DD>/symbol_id=<id>/part-<start>-<n>.parquet``, one
schema per kind (:data:`SCHEMAS`), zstd-compressed. ``date`` is the UTC date of ``received_at``;
``<start>`` is the ``received_at`` of the first event of the roll the file belongs to
(``20261206T140312.123456000Z``) and ``<n>`` numbers this process's rolls, so the names of one
partition sort in the order their rows arrived, and rows in a file keep that order.

How this works: ``write_batch`` turns each batch into Arrow columns (a value the schema cannot
hold raises ``ValueError`` and nothing of the batch is kept, so the writer sets that one event
aside) and keeps them in memory. Every ``roll_seconds`` or ``roll_rows`` buffered rows the
buffer is *rolled*: split by partition, each part written to a temporary file under
``DIR/.coinfeed-tmp``, fsynced and renamed into its partition, so a reader sees a file whole or
not at all. A part that cannot be written stays pending and is written first by the next call;
a retry of the batch whose roll failed (the writer passes the same list object) only retries
the writing. What a ``kill -9`` loses is the buffer, at most one roll interval;
``flush(everything=True)`` at shutdown writes it all.

Prices and sizes are the exact text CoinAPI sent (``str(Decimal)``, as in the JSON Lines sink)
plus a float64 ``*_f64`` column for arithmetic; book levels are ``list<struct<price, size>>`` of
exact text. Times are ``timestamp[ns, UTC]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from loguru import logger

from coinfeed.core.events import BookEvent, Event, GapEvent, PriceLevel, QuoteEvent, TradeEvent
from coinfeed.dirlock import LockError, lock_in
from coinfeed.sinks.base import SinkSpecError

LOCK_NAME: Final = ".coinfeed-parquet.lock"
TMP_DIR: Final = ".coinfeed-tmp"
"""Files being written; a crash leaves them here, and the next open deletes them."""
COMPRESSION: Final = "zstd"

TIME: Final = pa.timestamp("ns", tz="UTC")
LEVEL: Final = pa.struct([("price", pa.string()), ("size", pa.string())])
LEVELS: Final = pa.list_(LEVEL)

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "trade": pa.schema([
        ("symbol_id", pa.string()), ("sequence", pa.int64()), ("time_exchange", TIME),
        ("time_coinapi", TIME), ("uuid", pa.string()), ("price", pa.string()),
        ("size", pa.string()), ("price_f64", pa.float64()), ("size_f64", pa.float64()),
        ("taker_side", pa.string()), ("source", pa.string()), ("received_at", TIME),
        ("ingest_seq", pa.int64()),
    ]),
    "quote": pa.schema([
        ("symbol_id", pa.string()), ("sequence", pa.int64()), ("time_exchange", TIME),
        ("time_coinapi", TIME), ("ask_price", pa.string()), ("ask_size", pa.string()),
        ("bid_price", pa.string()), ("bid_size", pa.string()), ("ask_price_f64", pa.float64()),
        ("ask_size_f64", pa.float64()), ("bid_price_f64", pa.float64()),
        ("bid_size_f64", pa.float64()), ("source", pa.string()), ("received_at", TIME),
        ("ingest_seq", pa.int64()),
    ]),
    "book": pa.schema([
        ("symbol_id", pa.string()), ("depth", pa.string()), ("sequence", pa.int64()),
        ("time_exchange", TIME), ("is_snapshot", pa.bool_()), ("asks", LEVELS),
        ("bids", LEVELS), ("source", pa.string()), ("received_at", TIME),
        ("ingest_seq", pa.int64()),
    ]),
    "gap": pa.schema([
        ("id", pa.string()), ("data_type", pa.string()), ("symbol_id", pa.string()),
        ("reason", pa.string()), ("missing", pa.int64()), ("recovery", pa.string()),
        ("status", pa.string()), ("after_sequence", pa.int64()),
        ("before_sequence", pa.int64()), ("window_start", TIME), ("window_end", TIME),
        ("received_at", TIME), ("ingest_seq", pa.int64()),
    ]),
}  # fmt: skip
"""The columns of each kind's files (the ``kind`` and ``date`` columns come from the path).
``ingest_seq`` counts the events this sink took, all kinds together, from 0 in each process run:
with the file name it orders rows across kinds (a book's gap events among its updates)."""


def _text(values: Sequence[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


def _times(values: Sequence[str | None]) -> pa.Array:
    # Arrow's ISO 8601 parser: up to 9 fractional digits, "Z" or an offset. Anything else is
    # ArrowInvalid, a ValueError: the writer sets the event aside and counts it.
    return _text(values).cast(TIME)


def _numbers(text: pa.Array) -> pa.Array:
    """The float64 convenience column of exact text (the nearest double; inf past its range)."""
    return text.cast(pa.float64())


def _integers(values: Sequence[int | None]) -> pa.Array:
    return pa.array(values, pa.int64())


def _levels(sides: list[list[PriceLevel]]) -> pa.Array:
    offsets = [0]
    prices: list[str] = []
    sizes: list[str] = []
    for side in sides:
        for price, size in side:
            prices.append(str(price))
            sizes.append(str(size))
        offsets.append(len(prices))
    values = pa.StructArray.from_arrays([_text(prices), _text(sizes)], fields=list(LEVEL))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=LEVELS)


def _trade_columns(events: list[TradeEvent]) -> list[pa.Array]:
    price = _text([str(e.price) for e in events])
    size = _text([str(e.size) for e in events])
    return [
        _text([e.symbol_id for e in events]), _integers([e.sequence for e in events]),
        _times([e.time_exchange for e in events]), _times([e.time_coinapi for e in events]),
        _text([e.uuid for e in events]), price, size, _numbers(price), _numbers(size),
        _text([e.taker_side for e in events]), _text([e.source for e in events]),
        _times([e.received_at for e in events]),
    ]  # fmt: skip


def _quote_columns(events: list[QuoteEvent]) -> list[pa.Array]:
    ask_price = _text([str(e.ask_price) for e in events])
    ask_size = _text([str(e.ask_size) for e in events])
    bid_price = _text([str(e.bid_price) for e in events])
    bid_size = _text([str(e.bid_size) for e in events])
    return [
        _text([e.symbol_id for e in events]), _integers([e.sequence for e in events]),
        _times([e.time_exchange for e in events]), _times([e.time_coinapi for e in events]),
        ask_price, ask_size, bid_price, bid_size, _numbers(ask_price), _numbers(ask_size),
        _numbers(bid_price), _numbers(bid_size), _text([e.source for e in events]),
        _times([e.received_at for e in events]),
    ]  # fmt: skip


def _book_columns(events: list[BookEvent]) -> list[pa.Array]:
    return [
        _text([e.symbol_id for e in events]), _text([e.depth for e in events]),
        _integers([e.sequence for e in events]), _times([e.time_exchange for e in events]),
        pa.array([e.is_snapshot for e in events], pa.bool_()),
        _levels([e.asks for e in events]), _levels([e.bids for e in events]),
        _text([e.source for e in events]), _times([e.received_at for e in events]),
    ]  # fmt: skip


def _gap_columns(events: list[GapEvent]) -> list[pa.Array]:
    return [
        _text([e.id for e in events]), _text([e.data_type for e in events]),
        _text([e.symbol_id for e in events]), _text([e.reason for e in events]),
        _integers([e.missing for e in events]), _text([e.recovery for e in events]),
        _text([e.status for e in events]), _integers([e.after_sequence for e in events]),
        _integers([e.before_sequence for e in events]),
        _times([e.window_start for e in events]), _times([e.window_end for e in events]),
        _times([e.received_at for e in events]),
    ]  # fmt: skip


_COLUMNS: Final[dict[type, tuple[str, Callable[[Any], list[pa.Array]]]]] = {
    TradeEvent: ("trade", _trade_columns),
    QuoteEvent: ("quote", _quote_columns),
    BookEvent: ("book", _book_columns),
    GapEvent: ("gap", _gap_columns),
}


@attrs.define(slots=True)
class _Part:
    """One file of a roll: the rows of one partition, to be written whole."""

    path: Path
    """The final name."""
    rows: pa.Table
    tmp_name: str
    """Its name in the temporary directory while it is written."""


@attrs.define(slots=True)
class _Buffer:
    """The rows of one kind since the last roll, and each row's partition (``date/symbol``)."""

    batches: list[pa.RecordBatch] = attrs.field(factory=list)
    partitions: list[pa.Array] = attrs.field(factory=list)


@attrs.define(slots=True, eq=False)
class ParquetSink:
    """Buffers events as Arrow columns and writes whole files per partition and roll."""

    name: str
    directory: Path
    roll_seconds: float = 60.0
    roll_rows: int = 200_000
    blocking: bool = True
    flush_every: float = 1.0
    """How often the writer calls :meth:`flush` while no events arrive, so a quiet feed still
    rolls on time."""
    _lock_fd: int = -1
    _buffers: dict[str, _Buffer] = attrs.field(factory=dict)
    _rows: int = 0
    _roll_started: float = 0.0
    """``time.monotonic()`` when the oldest buffered row arrived."""
    _roll_start_name: str = ""
    """``<start>`` of the file names of the current roll."""
    _ingested: int = 0
    """``ingest_seq`` of the next event."""
    _rolls: int = 0
    _files: int = 0
    _unwritten: list[_Part] = attrs.field(factory=list)
    """Files of the last roll still to write (a failure stopped it)."""
    _accepted: list[Event] | None = None
    """The last batch taken into the buffer: when its roll failed, the writer retries it."""

    @classmethod
    def open(
        cls, target: str, *, roll_seconds: float = 60.0, roll_rows: int = 200_000
    ) -> ParquetSink:
        directory = Path(target)
        try:
            lock_fd = lock_in(directory, LOCK_NAME)
        except LockError as exc:
            if exc.in_use:
                raise SinkSpecError(
                    f"another coinfeed process writes Parquet to {target!r}: give each its "
                    "own directory"
                ) from None
            raise SinkSpecError(str(exc)) from None
        sink = cls(f"parquet:{target}", directory, roll_seconds, roll_rows, lock_fd=lock_fd)
        try:
            sink._remove_unfinished()
        except OSError:
            os.close(lock_fd)
            raise
        return sink

    def _remove_unfinished(self) -> None:
        """Delete the temporary files a crash left: their rows are lost (no footer)."""
        tmp = self.directory / TMP_DIR
        tmp.mkdir(exist_ok=True)
        for leftover in tmp.iterdir():
            size = leftover.stat().st_size
            leftover.unlink()
            logger.bind(sink=self.name, file=leftover.name, bytes=size).warning(
                "deleted a Parquet file a crash left unfinished: its rows were lost"
            )

    def write_batch(self, events: list[Event]) -> None:
        if self._unwritten:
            self._write_unwritten()  # before anything new: a failure keeps the batch out
        if events is not self._accepted:
            self._buffer(events)
            self._accepted = events
        if self._rows >= self.roll_rows or self._roll_due():
            self._roll()

    def flush(self, everything: bool) -> None:
        """Write what is due (``everything``: the whole buffer, at shutdown)."""
        if self._unwritten:
            self._write_unwritten()
        if self._rows and (everything or self._roll_due()):
            self._roll()

    def close(self) -> None:
        if self._lock_fd >= 0:
            if self._rows or self._unwritten:
                logger.bind(sink=self.name, rows=self._rows + self._unwritten_rows()).error(
                    "Parquet sink closed with rows not written"
                )
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- buffering ----------------------------------------------------------------------------

    def _buffer(self, events: list[Event]) -> None:
        """Add the batch's rows, all or none (a value no column can hold raises ValueError)."""
        by_type: dict[type, tuple[list[Event], list[int]]] = {}
        for position, event in enumerate(events, self._ingested):
            same, positions = by_type.setdefault(type(event), ([], []))
            same.append(event)
            positions.append(position)
        converted = []
        for event_type, (same, positions) in by_type.items():
            kind, columns = _COLUMNS[event_type]
            arrays = [*columns(same), _integers(positions)]
            batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS[kind])
            received = batch.column("received_at")
            partitions = pc.binary_join_element_wise(
                pc.strftime(received, format="%Y-%m-%d"), batch.column("symbol_id"), "/"
            )
            converted.append((kind, batch, partitions))
        if not converted:
            return
        if not self._rows:
            self._roll_started = time.monotonic()
            self._roll_start_name = _start_name(converted[0][1].column("received_at")[0])
        for kind, batch, partitions in converted:
            buffer = self._buffers.setdefault(kind, _Buffer())
            buffer.batches.append(batch)
            buffer.partitions.append(partitions)
            self._rows += batch.num_rows
        self._ingested += len(events)

    def _roll_due(self) -> bool:
        return bool(self._rows) and time.monotonic() - self._roll_started >= self.roll_seconds

    # -- writing ------------------------------------------------------------------------------

    def _roll(self) -> None:
        """Split the buffer into one file per partition and write them."""
        self._rolls += 1
        name = f"part-{self._roll_start_name}-{self._rolls:06d}.parquet"
        for kind, buffer in self._buffers.items():
            table = pa.Table.from_batches(buffer.batches, schema=SCHEMAS[kind])
            keys = pa.chunked_array(buffer.partitions, pa.string()).combine_chunks()
            codes = keys.dictionary_encode()
            order = pc.sort_indices(codes.indices)  # stable: rows keep their order
            table = table.take(order)
            runs = pc.run_end_encode(codes.indices.take(order))
            start = 0
            for code, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
                date, _, symbol_id = codes.dictionary[code].as_py().partition("/")
                folder = (
                    self.directory / f"kind={kind}" / f"date={date}"
                    / f"symbol_id={quote(symbol_id, safe='')}"
                )  # fmt: skip
                self._files += 1
                part = _Part(folder / name, table.slice(start, end - start), f"{self._files}.tmp")
                self._unwritten.append(part)
                start = end
        self._buffers = {}
        self._rows = 0
        self._write_unwritten()

    def _write_unwritten(self) -> None:
        while self._unwritten:
            part = self._unwritten[0]
            _write_whole(part, self.directory / TMP_DIR)
            self._unwritten.pop(0)

    def _unwritten_rows(self) -> int:
        return sum(part.rows.num_rows for part in self._unwritten)


def _write_whole(part: _Part, tmp_dir: Path) -> None:
    """Write ``part`` to a temporary file, fsync it, and rename it into its partition."""
    tmp = tmp_dir / part.tmp_name
    try:
        pq.write_table(part.rows, tmp, compression=COMPRESSION)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data before the name: a power loss leaves no empty file
        finally:
            os.close(fd)
        part.path.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, part.path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _start_name(received_at: pa.TimestampScalar) -> str:
    ns = received_at.value
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
