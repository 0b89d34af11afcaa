"""Parquet sink: a hive-partitioned history for DuckDB, Polars and pyarrow, whole files only.

Layout: ``DIR/kind=<kind>/date=<YYYY-MM-DD>/symbol_id=<id>/part-<start>-<n>.parquet``, one
schema per kind (:data:`SCHEMAS`), zstd-compressed. ``date`` is the UTC date of ``received_at``;
``<start>`` is the ``received_at`` of the first event of the roll the file belongs to
(``20261206T140312.123456000Z``) and ``<n>`` is the number of the roll's spool, so the names of
one partition sort in the order their rows arrived, and rows in a file keep that order.

How this works: the writer encodes each batch on the event loop as JSON lines with exact
numbers as text (``encode_batch``, msgspec), and the worker thread appends them to a *spool*
file, ``DIR/.coinfeed-spool/spool-<n>-<first ingest_seq>.jsonl``: as cheap as the JSON Lines
sink, and on disk, so a ``kill -9`` loses nothing of what it took (the next start converts what
a dead process left). When ``roll_seconds`` have passed since the spool's first line, or it
holds ``roll_rows`` lines, the spool is *rolled*: the sink's own thread reads it with Arrow's
JSON reader (no GIL held), converts it to each kind's schema, splits it by partition, writes
each part to a temporary file under ``DIR/.coinfeed-tmp``, fsyncs it and renames it into its
partition (a reader sees a file whole or not at all), then deletes the spool. Part names are
fixed by the spool's content, so converting a spool again after a crash replaces its files
with the same ones, never adds a copy. The rolling thread runs at a lower CPU priority and
converts one spool at a time; more than :data:`SPOOLS_WAITING_MAX` closed spools waiting make
the writer wait. A conversion's failure is raised by the next call before it takes in its
batch, so the writer's retry adds the batch once. A line Arrow cannot convert (a time it cannot
parse, an integer past int64) is found by halving and set aside (``events_set_aside``, logged);
the rest of the spool is written.

Prices and sizes are the exact text CoinAPI sent (``str(Decimal)``, as in the JSON Lines sink)
plus a float64 ``*_f64`` column for arithmetic; book levels are ``list<struct<price, size>>`` of
exact text. Times are ``timestamp[ns, UTC]``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
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

from coinfeed.core.events import BookTopEvent, Event
from coinfeed.dirlock import LockError, lock_in
from coinfeed.sinks.base import SinkSpecError
from coinfeed.sinks.jsonl import JsonlSink

# Arrow's buffers from malloc, not its bundled mimalloc: with the mmap threshold coinfeed run
# pins (observability/process.py), a conversion's large buffers go back to the system when it
# ends. With mimalloc, RSS stayed ~80 MB higher after three rolls of 100,000 events.
pa.set_memory_pool(pa.system_memory_pool())

LOCK_NAME: Final = ".coinfeed-parquet.lock"
TMP_DIR: Final = ".coinfeed-tmp"
"""Files being written; a crash leaves them here, and the next open deletes them."""
SPOOL_DIR: Final = ".coinfeed-spool"
"""Events taken in and not converted yet, as JSON lines (converted by the next start after a
crash)."""
COMPRESSION: Final = "zstd"
SPOOLS_WAITING_MAX: Final = 4
"""Closed spools that may wait for conversion before the writer waits for it (backpressure)."""
ROLLING_NICE: Final = 10
# Dictionary pages only for the columns of few distinct values, and min/max statistics only for
# those a query filters on: on the benchmark mix a roll took about 20 % less time and its
# files 27 % fewer bytes than with both on every column (docs/performance.md).
DICTIONARY_COLUMNS: Final = frozenset(
    {"symbol_id", "source", "depth", "taker_side", "data_type", "reason", "recovery", "status",
     "period_id", "asset_id_base", "asset_id_quote", "rate_type"}
)  # fmt: skip

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
    "bar": pa.schema([
        ("symbol_id", pa.string()), ("period_id", pa.string()), ("time_period_start", TIME),
        ("time_period_end", TIME), ("time_open", TIME), ("time_close", TIME),
        ("open", pa.string()), ("high", pa.string()), ("low", pa.string()),
        ("close", pa.string()), ("volume", pa.string()), ("open_f64", pa.float64()),
        ("high_f64", pa.float64()), ("low_f64", pa.float64()), ("close_f64", pa.float64()),
        ("volume_f64", pa.float64()), ("trades_count", pa.int64()), ("revision", pa.int64()),
        ("complete", pa.bool_()), ("received_at", TIME), ("ingest_seq", pa.int64()),
    ]),
    "book_top": pa.schema([
        ("symbol_id", pa.string()), ("depth", pa.int64()), ("time", TIME),
        ("sequence", pa.int64()), ("asks", LEVELS), ("bids", LEVELS), ("received_at", TIME),
        ("ingest_seq", pa.int64()),
    ]),
    "ohlcv": pa.schema([
        ("symbol_id", pa.string()), ("sequence", pa.int64()), ("period_id", pa.string()),
        ("time_period_start", TIME), ("time_period_end", TIME), ("time_open", TIME),
        ("time_close", TIME), ("price_open", pa.string()), ("price_high", pa.string()),
        ("price_low", pa.string()), ("price_close", pa.string()),
        ("volume_traded", pa.string()), ("price_open_f64", pa.float64()),
        ("price_high_f64", pa.float64()), ("price_low_f64", pa.float64()),
        ("price_close_f64", pa.float64()), ("volume_traded_f64", pa.float64()),
        ("trades_count", pa.int64()), ("received_at", TIME), ("ingest_seq", pa.int64()),
    ]),
    "exrate": pa.schema([
        ("symbol_id", pa.string()), ("asset_id_base", pa.string()),
        ("asset_id_quote", pa.string()), ("rate_type", pa.string()), ("time", TIME),
        ("rate", pa.string()), ("rate_f64", pa.float64()), ("received_at", TIME),
        ("ingest_seq", pa.int64()),
    ]),
}  # fmt: skip
"""The columns of each kind's files (the ``kind`` and ``date`` columns come from the path).
``ingest_seq`` counts the events this sink took, all kinds together, from 0 in each process run:
with the file name it orders rows across kinds (a book's gap events among its updates)."""

STATISTICS_COLUMNS: Final = frozenset(
    {"symbol_id", "sequence", "ingest_seq"}
    | {field.name for schema in SCHEMAS.values() for field in schema
       if field.type == TIME or field.name.endswith("_f64")}
)  # fmt: skip
"""The columns with min/max statistics: what queries filter on, the symbol, sequences, every
time and every float twin."""

_SPOOLED_AS_TEXT: Final = frozenset({"depth"})
"""Fields two kinds give different JSON types (a book's ``depth`` is ``"book5"``, a book_top's
``10``): Arrow's JSON reader takes one type per field, so the spool holds them as text
(:meth:`ParquetSink.encode_batch`) and the conversion casts them to the kind's column."""


_encoder: Final = msgspec.json.Encoder(decimal_format="string")


def _wire_schema() -> pa.Schema:
    """Every field of every kind as the sink's JSON lines hold it: text for exact numbers, times
    and :data:`_SPOOLED_AS_TEXT` (converted after reading), levels as ``[[price, size], ...]``."""
    fields: dict[str, pa.DataType] = {"kind": pa.string()}
    for schema in SCHEMAS.values():
        for field in schema:
            if field.name == "ingest_seq" or field.name.endswith("_f64"):
                continue
            wire = field.type
            if field.type == TIME or field.name in _SPOOLED_AS_TEXT:
                wire = pa.string()
            elif field.type == LEVELS:
                wire = pa.list_(pa.list_(pa.string()))
            if fields.setdefault(field.name, wire) != wire:
                raise TypeError(
                    f"kinds disagree on the JSON type of {field.name!r}: add it to _SPOOLED_AS_TEXT"
                )
    return pa.schema(list(fields.items()))


_WIRE: Final = _wire_schema()
# Blocks of 1 MiB: the reader's working memory stays small, at no measurable cost in speed.
_READ: Final = pj.ReadOptions(use_threads=False, block_size=1 << 20)
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
        elif field.type == TIME or field.name in _SPOOLED_AS_TEXT:
            column = rows.column(field.name).cast(field.type)
        elif field.type == LEVELS:
            column = _levels(rows.column(field.name).combine_chunks())
        else:
            column = rows.column(field.name)
        columns.append(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class ConversionError(OSError):
    """Converting a spool failed (the cause is chained). An OSError whatever the cause, so the
    writer retries the batch and reports the sink failing: a conversion that fails must never
    make it set the new batch's events aside as unstorable."""


@attrs.define(slots=True)
class _Part:
    """One file of a roll: the rows of one partition, to be written whole."""

    path: Path
    """The final name."""
    rows: pa.Table


@attrs.define(slots=True)
class _Spool:
    """A spool file: JSON lines of events taken in, numbered, with the first's ``ingest_seq``."""

    path: Path
    number: int
    first_seq: int
    lines: int = 0
    started: float = 0.0
    """``time.monotonic()`` of its first line."""

    @classmethod
    def parse(cls, path: Path) -> _Spool | None:
        _, number, first_seq = path.stem.split("-") if path.stem.count("-") == 2 else ("", "", "")
        if not (path.suffix == ".jsonl" and number.isdigit() and first_seq.isdigit()):
            return None
        return cls(path, int(number), int(first_seq))


@attrs.define(slots=True, eq=False)
class ParquetSink:
    """Spools events as JSON lines and converts each spool into whole Parquet files."""

    name: str
    directory: Path
    roll_seconds: float = 60.0
    roll_rows: int = 50_000
    blocking: bool = True
    flush_every: float = 1.0
    """How often the writer calls :meth:`flush` while no events arrive, so a quiet feed still
    rolls on time."""
    _lock_fd: int = -1
    _spool: _Spool | None = None
    _spool_file: JsonlSink | None = None
    _spools: int = 0
    """Number of the last spool file started."""
    _taken: int = 0
    events_set_aside: int = 0
    """Lines a roll could not convert (the writer counts them as rejected)."""
    _job: Future[None] | None = None
    """The conversion running in the rolling thread, if any."""
    _pending: deque[_Spool] = attrs.field(factory=deque)
    """Spools closed and not converted yet, oldest first. While a conversion runs, only its
    thread takes from the left, and only the writer's thread appends."""
    _retry_here: bool = False
    """A conversion failed: the next calls retry it themselves until it goes through."""

    @classmethod
    def open(
        cls, target: str, *, roll_seconds: float = 60.0, roll_rows: int = 50_000
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
            sink._find_leftovers()
        except OSError:
            os.close(lock_fd)
            raise
        return sink

    def _remove_unfinished(self) -> None:
        """Delete the temporary files a crash left (their spool is still there)."""
        tmp = self.directory / TMP_DIR
        tmp.mkdir(exist_ok=True)
        for leftover in tmp.iterdir():
            leftover.unlink()

    def _find_leftovers(self) -> None:
        spool_dir = self.directory / SPOOL_DIR
        spool_dir.mkdir(exist_ok=True)
        found = sorted(
            (spool for path in spool_dir.iterdir() if (spool := _Spool.parse(path))),
            key=lambda spool: spool.number,
        )
        if found:
            logger.bind(sink=self.name, spools=len(found)).warning(
                "converting the spool files a previous run left (it did not stop cleanly)"
            )
            self._pending.extend(found)
            self._spools = found[-1].number
            self._start_conversion()

    # -- taking events in ---------------------------------------------------------------------

    def encode_batch(self, events: list[Event]) -> bytes:
        """The batch as JSON lines with exact numbers as text (the writer calls this on the
        event loop; the worker thread then only appends the bytes to the spool)."""
        # A book_top's depth as text (_SPOOLED_AS_TEXT); every other event as it is.
        spooled = [
            msgspec.structs.replace(e, depth=str(e.depth)) if type(e) is BookTopEvent else e
            for e in events
        ]
        return _encoder.encode_lines(spooled)

    def write_encoded(self, data: bytes) -> None:
        """Append an encoded batch to the spool, after starting the roll that is due. A failed
        roll or append raises before the batch is taken in (the spool is cut back to its last
        whole batch), so the writer's retry adds it once."""
        self._settle(wait=False)
        if self._roll_due():
            self._start_roll()
        if self._spool is None or self._spool_file is None:
            self._spools += 1
            path = self.directory / SPOOL_DIR / f"spool-{self._spools:06d}-{self._taken}.jsonl"
            self._spool_file = JsonlSink.open(str(path))
            self._spool = _Spool(path, self._spools, self._taken, started=time.monotonic())
        self._spool_file.write_encoded(data)
        lines = data.count(b"\n")
        self._spool.lines += lines
        self._taken += lines

    def write_batch(self, events: list[Event]) -> None:
        self.write_encoded(self.encode_batch(events))

    def flush(self, everything: bool) -> None:
        """Roll what is due (``everything``: the whole spool, at shutdown, and wait for it)."""
        self._settle(wait=False)
        if (everything and self._spool is not None) or self._roll_due():
            self._start_roll()
        self._settle(wait=everything)

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        if self._job is not None and not self._job.cancel():
            # Running: let it finish before the lock goes, or the next process could convert
            # the same spool at the same time.
            self._job.exception()  # waits for it; a failure is the next start's to redo
        if self._spool_file is not None:
            self._spool_file.close()
        if self._spool is not None or self._pending:
            logger.bind(sink=self.name).warning(
                "Parquet sink closed with spooled events not converted: the next start "
                "converts them"
            )
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _roll_due(self) -> bool:
        spool = self._spool
        if spool is None or not spool.lines:
            return False
        return (
            spool.lines >= self.roll_rows or time.monotonic() - spool.started >= self.roll_seconds
        )

    # -- rolling ------------------------------------------------------------------------------

    def _settle(self, *, wait: bool) -> None:
        """Take the result of a conversion that ended (raising its failure) and start one for
        spools that wait; with ``wait``, convert every spool before returning. After a failure
        the conversion is retried here, in the caller's thread, so every write fails while it
        keeps failing (the writer reports the sink and retries)."""
        job = self._job
        if job is not None:
            if not wait and not job.done():
                return
            self._job = None
            try:
                job.result()
            except Exception as exc:
                self._retry_here = True
                raise ConversionError(f"converting a spool failed: {exc}") from exc
        if self._retry_here or wait:
            try:
                self._convert_pending()
            except Exception as exc:
                self._retry_here = True
                raise ConversionError(f"converting a spool failed: {exc}") from exc
            self._retry_here = False
        elif self._pending:
            self._start_conversion()

    def _start_roll(self) -> None:
        """Close the spool and queue it for the rolling thread: the writer goes on meanwhile,
        unless conversions fell more than :data:`SPOOLS_WAITING_MAX` spools behind."""
        assert self._spool is not None and self._spool_file is not None
        self._spool_file.close()
        self._pending.append(self._spool)
        self._spool, self._spool_file = None, None
        if len(self._pending) > SPOOLS_WAITING_MAX:
            self._settle(wait=True)  # backpressure: the spools on disk stay bounded
        elif self._job is None and not self._retry_here:
            self._start_conversion()

    def _start_conversion(self) -> None:
        """Convert the waiting spools in a new rolling thread. A daemon thread, not an
        executor's: a conversion stuck on a dead disk must not keep the process from exiting."""
        job: Future[None] = Future()

        def run() -> None:
            if not job.set_running_or_notify_cancel():
                return  # cancelled by close before it started
            _yield_the_cpu()
            try:
                self._convert_pending()
            except BaseException as exc:
                job.set_exception(exc)
            else:
                job.set_result(None)

        self._job = job
        threading.Thread(target=run, name=f"parquet-roll {self.name}", daemon=True).start()

    def _convert_pending(self) -> None:
        while self._pending:
            spool = self._pending[0]
            for part in self._parts(spool):
                _write_whole(part, self.directory / TMP_DIR)
            spool.path.unlink()
            self._pending.popleft()

    def _parts(self, spool: _Spool) -> list[_Part]:
        """The spool's rows, one part per kind and partition, named by the spool."""
        data = spool.path.read_bytes()
        # A last line torn by a crash in the middle of an append was never taken in.
        data = data[: data.rfind(b"\n") + 1]
        try:
            converted = _converted(data, spool.first_seq)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            # Split into lines only now: a list of a spool's lines costs more than the spool.
            converted = self._convert(data.splitlines(keepends=True), spool.first_seq)
        if not converted:
            return []
        first = min(
            (batch for _, batch, _ in converted), key=lambda b: b.column("ingest_seq")[0].as_py()
        )
        name = f"part-{_start_name(first.column('received_at')[0])}-{spool.number:06d}.parquet"
        by_kind: dict[str, tuple[list[pa.RecordBatch], list[pa.Array]]] = {}
        for kind, batch, partitions in converted:
            batches, keys = by_kind.setdefault(kind, ([], []))
            batches.append(batch)
            keys.append(partitions)
        parts = []
        for kind, (batches, keys) in by_kind.items():
            table = pa.Table.from_batches(batches, schema=SCHEMAS[kind])
            codes = pa.chunked_array(keys, pa.string()).combine_chunks().dictionary_encode()
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
                parts.append(_Part(folder / name, table.slice(start, end - start)))
                start = end
        return parts

    def _convert(
        self, lines: list[bytes], first_seq: int
    ) -> list[tuple[str, pa.RecordBatch, pa.Array]]:
        """``lines`` as (kind, rows, partition of each row); a line that cannot be converted is
        found by halving and set aside."""
        if not lines:
            return []
        try:
            return _converted(b"".join(lines), first_seq)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            if len(lines) == 1:
                self.events_set_aside += 1
                logger.bind(sink=self.name, error=str(exc), line=lines[0][:300]).error(
                    "event set aside: the Parquet sink cannot store it"
                )
                return []
        half = len(lines) // 2
        return [
            *self._convert(lines[:half], first_seq),
            *self._convert(lines[half:], first_seq + half),
        ]


def _converted(data: bytes, first_seq: int) -> list[tuple[str, pa.RecordBatch, pa.Array]]:
    if not data:
        return []
    rows = pj.read_json(pa.py_buffer(data), read_options=_READ, parse_options=_PARSE)
    if not rows.num_rows:
        return []
    seqs = pa.array(range(first_seq, first_seq + rows.num_rows), pa.int64())
    rows = rows.append_column("ingest_seq", seqs)
    kinds = rows.column("kind")
    converted = []
    for kind in pc.unique(kinds).to_pylist():
        if kind not in SCHEMAS:
            raise ValueError(f"no Parquet schema for events of kind {kind!r}")
        same = rows.filter(pc.equal(kinds, kind))
        batch = _kind_rows(same, kind)
        # received_at is coinfeed's own clock reading, "YYYY-MM-DDTHH:MM:SS...Z": its first
        # ten characters are the UTC date (formatting the timestamps costs more).
        day = pc.utf8_slice_codeunits(same.column("received_at"), 0, 10)
        partitions = pc.binary_join_element_wise(day, same.column("symbol_id"), "/")
        converted.append((kind, batch, partitions.combine_chunks()))
    return converted


def _yield_the_cpu() -> None:
    """Run the calling (rolling) thread at a lower priority (Linux: the nice value is per
    thread): on a busy machine a conversion waits for idle CPU instead of taking it from the
    event loop, and the spools it has not reached wait on disk (docs/performance.md)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ROLLING_NICE)


def _write_whole(part: _Part, tmp_dir: Path) -> None:
    """Write ``part`` to a temporary file, fsync it, and rename it into its partition
    (replacing a file of the same name: the same rows, converted again after a crash)."""
    tmp = tmp_dir / f"{part.path.parent.name}-{part.path.name}.tmp"
    try:
        names = part.rows.column_names
        pq.write_table(
            part.rows,
            tmp,
            compression=COMPRESSION,
            use_dictionary=[name for name in names if name in DICTIONARY_COLUMNS],
            write_statistics=[name for name in names if name in STATISTICS_COLUMNS],
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data before the name: a power loss leaves no empty file
        finally:
            os.close(fd)
        part.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, part.path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _start_name(received_at: pa.TimestampScalar) -> str:
    """``20261206T140312.123456000Z`` for the ``received_at`` of a roll's first row."""
    seconds, fraction = divmod(received_at.value, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
