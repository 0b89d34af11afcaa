"""Parquet sink: a hive-partitioned history for DuckDB, Polars and pyarrow, whole files only.

Layout: ``DIR/kind=<kind>/date=<YYYY-MM-DD>/symbol_id=<id>/part-<start>-<n>.parquet``, one
schema per kind (:data:`SCHEMAS`), zstd-compressed. ``date`` is the UTC date of ``received_at``;
``<start>`` is the ``received_at`` of the first event of the roll the file belongs to
(``20261206T140312.123456000Z``) and ``<n>`` numbers this process's rolls, so the names of one
partition sort in the order their rows arrived, and rows in a file keep that order.

How this works: the writer encodes each batch on the event loop as JSON lines with exact
numbers as text (``encode_batch``, msgspec); in the worker thread Arrow's JSON reader turns them
into columns without holding the GIL, and the rows are kept in memory (a value a column cannot
hold, such as a time Arrow cannot parse, raises ``ValueError`` before anything of the batch is
kept, so the writer sets that one event aside). When ``roll_seconds`` have passed since the
oldest buffered row, or ``roll_rows`` rows are buffered, the buffer is *rolled*: split by
partition, each part written to a temporary file under ``DIR/.coinfeed-tmp``, fsynced and
renamed into its partition, so a reader sees a file whole or not at all. The roll comes before a
new batch is taken in, so a failure to write leaves that batch out and the writer's retry of it
adds it once; parts that could not be written are written first by the next call. What a
``kill -9`` loses is the buffer, at most one roll interval; ``flush(everything=True)`` at
shutdown writes it all.

Prices and sizes are the exact text CoinAPI sent (``str(Decimal)``, as in the JSON Lines sink)
plus a float64 ``*_f64`` column for arithmetic; book levels are ``list<struct<price, size>>`` of
exact text. Times are ``timestamp[ns, UTC]``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final
from urllib.parse import quote

import attrs
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
from loguru import logger

from coinfeed.core.events import Event
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


_EXACT_TEXT: Final = ("price", "size", "ask_price", "ask_size", "bid_price", "bid_size")
_TIMES: Final = ("time_exchange", "time_coinapi", "received_at", "window_start", "window_end")
_encoder: Final = msgspec.json.Encoder(decimal_format="string")


def _wire_schema() -> pa.Schema:
    """Every field of every kind as the sink's JSON lines hold it: text for exact numbers and
    times (converted after reading), levels as ``[[price, size], ...]``."""
    fields: dict[str, pa.DataType] = {"kind": pa.string()}
    for schema in SCHEMAS.values():
        for field in schema:
            if field.name == "ingest_seq" or field.name.endswith("_f64"):
                continue
            wire = field.type
            if field.type == TIME:
                wire = pa.string()
            elif field.type == LEVELS:
                wire = pa.list_(pa.list_(pa.string()))
            fields.setdefault(field.name, wire)
    return pa.schema(list(fields.items()))


_WIRE: Final = _wire_schema()
_READ: Final = pj.ReadOptions(use_threads=False, block_size=1 << 26)
_PARSE: Final = pj.ParseOptions(explicit_schema=_WIRE, unexpected_field_behavior="ignore")


def _levels(pairs: pa.Array) -> pa.Array:
    """``[[price, size], ...]`` lists as ``list<struct<price, size>>``."""
    offsets = pc.subtract(pairs.offsets, pairs.offsets[0])
    flat = pairs.flatten()
    values = pa.StructArray.from_arrays(
        [pc.list_element(flat, 0), pc.list_element(flat, 1)], fields=list(LEVEL)
    )
    return pa.ListArray.from_arrays(offsets, values, type=LEVELS)


def _kind_rows(rows: pa.Table, kind: str) -> pa.RecordBatch:
    """The rows of ``kind`` in the columns of its schema; a time Arrow cannot parse (more than
    nine fractional digits, no date at all) raises ArrowInvalid, a ValueError."""
    schema = SCHEMAS[kind]
    columns = []
    for field in schema:
        if field.name.endswith("_f64"):
            # The nearest double of the exact text (inf past float64's range).
            column = rows.column(field.name.removesuffix("_f64")).cast(pa.float64())
        elif field.type == TIME:
            column = rows.column(field.name).cast(TIME)
        elif field.type == LEVELS:
            column = _levels(rows.column(field.name).combine_chunks())
        else:
            column = rows.column(field.name)
        columns.append(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


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
    """``ingest_seq`` of the next event: how many events this sink has taken in."""
    events_on_disk: int = 0
    """How many of the events taken in are in renamed files (the writer holds the restart
    checkpoint back to them: a kill loses the buffer, and the restart must backfill it)."""
    _rolled_upto: int = 0
    """Events taken in before the roll in flight started."""
    _rolls: int = 0
    _files: int = 0
    _unwritten: list[_Part] = attrs.field(factory=list)
    """Files of the last roll still to write (a failure stopped it)."""
    _rolling: ThreadPoolExecutor = attrs.field(
        factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="parquet-roll")
    )
    """Writes the files of a roll while new batches are buffered (a roll of many rows takes
    long enough to fill the sink's channel and stall the processor)."""
    _job: Future[None] | None = None
    """The roll in flight; while it runs, only its thread touches ``_unwritten``."""

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

    @property
    def events_taken(self) -> int:
        """How many events this sink has taken in (buffered or on disk)."""
        return self._ingested

    def encode_batch(self, events: list[Event]) -> bytes:
        """The batch as JSON lines with exact numbers as text (the writer calls this on the
        event loop; the worker thread then needs the GIL for little more than file calls)."""
        return _encoder.encode_lines(events)

    def write_encoded(self, data: bytes) -> None:
        """Add an encoded batch, after starting the roll that is due: a roll that failed is
        retried first, and its failure leaves the batch out, so the writer's retry of the
        batch adds it once."""
        self._settle(wait=False)
        if self._roll_due():
            self._settle(wait=True)  # one roll in flight at most: memory stays bounded
            self._start_roll()
        self._buffer(data)

    def write_batch(self, events: list[Event]) -> None:
        self.write_encoded(self.encode_batch(events))

    def flush(self, everything: bool) -> None:
        """Write what is due (``everything``: the whole buffer, at shutdown, and wait for it)."""
        self._settle(wait=everything)
        if (everything and self._rows) or self._roll_due():
            self._settle(wait=True)
            self._start_roll()
        self._settle(wait=everything)

    def close(self) -> None:
        if self._lock_fd >= 0:
            if self._job is not None:
                self._job.cancel()  # not started yet; a running roll finishes in its thread
            self._rolling.shutdown(wait=False)
            if self._rows or self._unwritten:
                logger.bind(sink=self.name, rows=self._rows + self._unwritten_rows()).error(
                    "Parquet sink closed with rows not written"
                )
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- buffering ----------------------------------------------------------------------------

    def _buffer(self, data: bytes) -> None:
        """Add the rows of an encoded batch, all or none (a value no column can hold raises
        ValueError before anything is kept)."""
        # Arrow's JSON reader builds the columns without holding the GIL.
        rows = pj.read_json(pa.py_buffer(data), read_options=_READ, parse_options=_PARSE)
        if not rows.num_rows:
            return
        rows = rows.append_column(
            "ingest_seq",
            pa.array(range(self._ingested, self._ingested + rows.num_rows), pa.int64()),
        )
        kinds = rows.column("kind")
        converted = []
        for kind in pc.unique(kinds).to_pylist():
            if kind not in SCHEMAS:
                raise ValueError(f"no Parquet schema for events of kind {kind!r}")
            same = rows.filter(pc.equal(kinds, kind))
            batch = _kind_rows(same, kind)
            # received_at is coinfeed's own clock reading, "YYYY-MM-DDTHH:MM:SS...Z": its
            # first ten characters are the UTC date (formatting the timestamps costs more).
            day = pc.utf8_slice_codeunits(same.column("received_at"), 0, 10)
            partitions = pc.binary_join_element_wise(day, same.column("symbol_id"), "/")
            partitions = partitions.combine_chunks()
            converted.append((kind, batch, partitions))
        if not self._rows:
            self._roll_started = time.monotonic()
            self._roll_start_name = _start_name(rows.column("received_at")[0].as_py())
        for kind, batch, partitions in converted:
            buffer = self._buffers.setdefault(kind, _Buffer())
            buffer.batches.append(batch)
            buffer.partitions.append(partitions)
            self._rows += batch.num_rows
        self._ingested += rows.num_rows

    def _roll_due(self) -> bool:
        if not self._rows:
            return False
        return (
            self._rows >= self.roll_rows
            or time.monotonic() - self._roll_started >= self.roll_seconds
        )

    # -- writing ------------------------------------------------------------------------------

    def _settle(self, *, wait: bool) -> None:
        """Finish with the roll in flight (when it is done, or ``wait``): raise its failure
        (the files it did not write stay unwritten), and write unwritten files of an earlier
        failure here, so a write that keeps failing fails every call."""
        job = self._job
        if job is not None:
            if not wait and not job.done():
                return
            self._job = None
            job.result()
        self._write_unwritten()
        self.events_on_disk = self._rolled_upto

    def _start_roll(self) -> None:
        """Hand the buffer to the rolling thread, which splits it into one file per partition
        and writes them: the sink's writer goes on taking batches meanwhile."""
        self._rolls += 1
        name = f"part-{self._roll_start_name}-{self._rolls:06d}.parquet"
        buffers, self._buffers, self._rows = self._buffers, {}, 0
        self._rolled_upto = self._ingested
        self._job = self._rolling.submit(self._roll, buffers, name)

    def _roll(self, buffers: dict[str, _Buffer], name: str) -> None:
        for kind, buffer in buffers.items():
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


def _start_name(received_at: str) -> str:
    """``20261206T140312.123456000Z`` for the ``received_at`` text of a roll's first row."""
    ns = pa.scalar(received_at).cast(TIME).value
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
