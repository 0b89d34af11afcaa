"""The Parquet sink: exact digits, whole files, rolls, failures, and reading the history back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio

from coinfeed.core.events import BookEvent, Event, QuoteEvent, TradeEvent, encode_lines
from coinfeed.sinks import SinkOptions, SinkSpecError, open_sink, parse_sink_spec
from coinfeed.sinks.jsonl import JsonlSink
from coinfeed.sinks.parquet import (
    LEVELS,
    SCHEMAS,
    SPOOL_DIR,
    SPOOLS_WAITING_MAX,
    TIME,
    TMP_DIR,
    ParquetSink,
)
from coinfeed.sinks.writer import EventChannel, SinkCounters, SinkWriter
from coinfeed.status import ServiceStatus
from tests.helpers import SYM, book, gap, quote, trade, wait_for
from tests.sinks.kinds import PAIR, book_top, exrate, nanos, one_of_each

AWKWARD_NUMBERS = ("770.000000000", "0.00000050", "1E+2", "123456789012345678901234567890.5",
                   "0.000000000000000000000000000001", "5")  # fmt: skip


def parquet_sink(directory: Path, **options: object) -> ParquetSink:
    sink = open_sink(f"parquet:{directory}", SinkOptions(**options))  # type: ignore[arg-type]
    assert isinstance(sink, ParquetSink)
    return sink


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("kind=*/date=*/symbol_id=*/*.parquet"))


def eventually(condition: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {limit} s"
        time.sleep(0.01)


def sql(query: str) -> list[tuple[object, ...]]:
    return duckdb.sql(query).fetchall()


def test_the_spec_parses_and_names_the_sink(tmp_path: Path) -> None:
    spec = parse_sink_spec(f"parquet:{tmp_path}/history")
    assert (spec.kind, str(spec)) == ("parquet", f"parquet:{tmp_path}/history")
    with pytest.raises(SinkSpecError, match="parquet:DIR"):
        parse_sink_spec("parquet:")


def test_prices_and_sizes_keep_the_digits_coinapi_sent(tmp_path: Path) -> None:
    events: list[Event] = [
        trade(n, price=text, size=text) for n, text in enumerate(AWKWARD_NUMBERS)
    ]
    sink = parquet_sink(tmp_path)
    sink.write_batch(events)
    sink.flush(True)
    sink.close()
    rows = sql(
        f"SELECT price, size, price_f64 FROM read_parquet('{tmp_path}/kind=trade/**/*.parquet')"
        " ORDER BY ingest_seq"
    )
    # The same text the JSON Lines sink writes for each number, and Decimal gives it back.
    assert [price for price, _, _ in rows] == [str(Decimal(text)) for text in AWKWARD_NUMBERS]
    assert [Decimal(str(size)) for _, size, _ in rows] == [Decimal(t) for t in AWKWARD_NUMBERS]
    for (price, _, as_float), text in zip(rows, AWKWARD_NUMBERS, strict=True):
        assert f'"price":{price},' in encode_lines([trade(0, price=text)]).decode()
        assert as_float == float(Decimal(text))


def test_each_kind_has_typed_columns_in_a_hive_layout(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path)
    sink.write_batch([trade(1), quote(1), book(1, snapshot=True), book(2, snapshot=False), gap()])
    sink.flush(True)
    sink.close()
    found = [path.relative_to(tmp_path).parts[:3] for path in files(tmp_path)]
    assert sorted(found) == [
        (f"kind={kind}", "date=2026-11-28", "symbol_id=BITSTAMP_SPOT_BTC_USD")
        for kind in ("book", "gap", "quote", "trade")
    ]
    trades = pq.read_table(files(tmp_path)[-1])
    assert str(trades.schema.field("time_exchange").type) == "timestamp[ns, tz=UTC]"
    assert str(trades.schema.field("sequence").type) == "int64"
    books = sql(
        f"SELECT is_snapshot, asks, bids, kind, date FROM read_parquet("
        f"'{tmp_path}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        " WHERE kind = 'book' ORDER BY ingest_seq"
    )
    assert [row[0] for row in books] == [True, False]
    assert books[0][1] == [{"price": "101.50", "size": "2"}, {"price": "101.25", "size": "1E-9"}]
    assert books[0][2] == [{"price": "99.0", "size": "3.000"}]
    assert str(books[0][4]) == "2026-11-28"


def stored_rows(path: Path) -> list[dict[str, Any]]:
    """A file's rows, times as ns since the epoch."""
    table = pq.read_table(path)
    columns = [c.cast(pa.int64()) if c.type == TIME else c for c in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names).to_pylist()


def as_stored(event: Event, schema: pa.Schema) -> dict[str, Any]:
    """The row docs/sinks.md promises for ``event``: numbers as ``str(Decimal)`` and their
    nearest double, times in ns, levels as {price, size} text."""
    row: dict[str, Any] = {}
    for field in schema.remove(schema.get_field_index("ingest_seq")):
        value = getattr(event, field.name.removesuffix("_f64"))
        if value is None:
            row[field.name] = None
        elif field.name.endswith("_f64"):
            row[field.name] = float(value)
        elif field.type == TIME:
            row[field.name] = nanos(value)
        elif field.type == LEVELS:
            row[field.name] = [{"price": str(p), "size": str(s)} for p, s in value]
        else:
            row[field.name] = str(value) if isinstance(value, Decimal) else value
    return row


def test_a_spool_of_every_kind_converts_each_to_its_schema_with_the_exact_digits(
    tmp_path: Path,
) -> None:
    # book and book_top name a field depth, text in one and a number in the other.
    newer = [*one_of_each(), book_top(None, time="2026-11-28T10:00:02Z"), exrate("1E-9")]
    events = [trade(1), quote(1), book(1, snapshot=True), *newer, gap(), book(2, snapshot=False)]
    sink = parquet_sink(tmp_path)
    sink.write_batch(events)  # one spool
    sink.flush(True)
    sink.close()
    assert sink.events_set_aside == 0
    found = {path.relative_to(tmp_path).parts[:3]: path for path in files(tmp_path)}
    assert sorted(found) == sorted(
        [(f"kind={kind}", "date=2026-11-28", f"symbol_id={SYM}")
         for kind in ("trade", "quote", "book", "gap", "bar", "book_top", "ohlcv")]
        + [("kind=exrate", "date=2026-11-28", "symbol_id=BTC%2FUSD")]
    )  # fmt: skip
    for (kind_dir, _, _), path in found.items():
        kind = kind_dir.removeprefix("kind=")
        assert pq.read_schema(path) == SCHEMAS[kind], kind
        rows = stored_rows(path)
        of_kind = [e for e in events if e.__struct_config__.tag == kind]
        assert [row.pop("ingest_seq") for row in rows] == [events.index(e) for e in of_kind]
        assert rows == [as_stored(e, SCHEMAS[kind]) for e in of_kind], kind
    # What as_stored stands for, spelled out once.
    [bar_row] = stored_rows(found["kind=bar", "date=2026-11-28", f"symbol_id={SYM}"])
    assert (bar_row["low"], bar_row["high"], bar_row["close"]) == (
        "5.0E-7",
        "1E+3",
        "770.000000000",
    )
    assert bar_row["time_open"] % 1_000_000_000 == 123_456_700  # CoinAPI's 7 digits, in ns
    tops = stored_rows(found["kind=book_top", "date=2026-11-28", f"symbol_id={SYM}"])
    assert [(row["depth"], row["time"] % 10**9, row["sequence"]) for row in tops] == [
        (2, 250_000, 42),
        (2, 0, None),
    ]
    rates = stored_rows(found["kind=exrate", "date=2026-11-28", "symbol_id=BTC%2FUSD"])
    assert [(row["symbol_id"], row["rate"], row["rate_f64"]) for row in rates] == [
        (PAIR, "65013.000000000", 65013.0),
        (PAIR, "1E-9", 1e-9),
    ]


def test_duckdb_reads_the_newer_kinds_with_hive_partitioning(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path)
    sink.write_batch(one_of_each())
    sink.flush(True)
    sink.close()
    counted = sql(
        f"SELECT kind, date, symbol_id, count(*) FROM read_parquet('{tmp_path}/**/*.parquet',"
        " hive_partitioning = true, union_by_name = true) GROUP BY ALL ORDER BY ALL"
    )
    assert [(kind, str(day), symbol, n) for kind, day, symbol, n in counted] == [
        ("bar", "2026-11-28", SYM, 1),
        ("book_top", "2026-11-28", SYM, 1),
        ("exrate", "2026-11-28", PAIR, 1),
        ("ohlcv", "2026-11-28", SYM, 2),
    ]
    # The pair's partition is BTC%2FUSD on disk; a filter on the decoded id finds it.
    assert sql(
        f"SELECT rate, CAST(rate AS DECIMAL(38, 12)) FROM read_parquet("
        f"'{tmp_path}/kind=exrate/**/*.parquet', hive_partitioning = true)"
        f" WHERE symbol_id = '{PAIR}'"
    ) == [("65013.000000000", Decimal("65013"))]
    assert sql(
        f"SELECT period_id, price_close, volume_traded FROM read_parquet("
        f"'{tmp_path}/kind=ohlcv/**/*.parquet', hive_partitioning = true) ORDER BY sequence"
    ) == [("1MIN", "5.0E-7", "12.50"), (None, None, "0E-8")]


def test_files_appear_only_when_whole_and_roll_by_rows(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_rows=1000, parquet_roll_seconds=3600)
    sink.write_batch([trade(n) for n in range(600)])
    assert files(tmp_path) == [], "rows wait in memory for their roll"
    sink.write_batch([trade(n) for n in range(600, 1200)])
    sink.write_batch([trade(n) for n in range(1200, 1300)])  # the roll starts before it
    eventually(lambda: len(files(tmp_path)) == 1, "the roll's file")
    [first] = files(tmp_path)
    assert pq.read_metadata(first).num_rows == 1200
    sink.flush(True)
    sink.close()
    assert len(files(tmp_path)) == 2
    assert sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/*.parquet')") == [(1300,)]
    assert list((tmp_path / TMP_DIR).iterdir()) == []


def test_a_roll_is_due_after_roll_seconds_even_when_no_events_come(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_seconds=0.05)
    sink.write_batch([trade(1)])
    sink.flush(False)
    assert files(tmp_path) == []
    time.sleep(0.08)
    sink.flush(False)
    eventually(lambda: len(files(tmp_path)) == 1, "the roll's file")
    sink.close()


def test_a_failed_roll_is_retried_without_writing_anything_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_rows=1000)
    real_write = pq.write_table
    calls = {"n": 0}

    def full_disk(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    sink.write_batch([trade(n, symbol=f"S{n % 3}") for n in range(1000)])  # a full roll
    monkeypatch.setattr(pq, "write_table", full_disk)
    sink.write_batch([trade(1000)])  # starts the roll, in its own thread
    eventually(lambda: calls["n"] == 1, "the roll's first write")
    time.sleep(0.1)
    batch: list[Event] = [trade(n) for n in range(1001, 1010)]
    with pytest.raises(OSError, match="No space"):
        sink.write_batch(batch)  # the failed roll is reported: the batch is not taken in
    with pytest.raises(OSError, match="No space"):
        sink.write_batch(batch)  # the writer retries the same batch; the roll is retried first
    assert list((tmp_path / TMP_DIR).iterdir()) == [], "no half file is left behind"
    assert files(tmp_path) == []
    monkeypatch.setattr(pq, "write_table", real_write)
    sink.write_batch(batch)  # the retry now goes through, after the roll's files
    assert len(files(tmp_path)) == 3
    sink.flush(True)
    sink.close()
    uuids = sql(f"SELECT uuid FROM read_parquet('{tmp_path}/**/*.parquet')")
    assert len(uuids) == len(set(uuids)) == 1010
    assert calls["n"] == 2


def test_a_value_no_column_can_hold_is_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path)
    hostile = QuoteEvent(**{**_fields(quote(2)), "time_exchange": "yesterday"})
    sink.write_batch([quote(1), hostile, trade(3)])
    sink.flush(True)
    sink.close()
    assert sink.events_set_aside == 1
    counted = sql(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/**/*.parquet', union_by_name = true)"
    )
    assert counted == [(2,)]


def _fields(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in event.__struct_fields__}


async def test_the_writer_sets_a_hostile_event_aside_and_writes_the_rest(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_rows=1000)
    status, counters = ServiceStatus(), SinkCounters()
    writer = SinkWriter(sink, EventChannel(100), status, counters, flush_interval=0.05)
    hostile = BookEvent(**{**_fields(book(2, snapshot=False)), "time_exchange": "2026-13-40"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send([book(1, snapshot=True), hostile, book(3, snapshot=False)])
        writer.channel.close()
    assert counters.rejected == {sink.name: 1}
    assert counters.events == {sink.name: 2}
    rows = sql(f"SELECT sequence FROM read_parquet('{tmp_path}/**/*.parquet') ORDER BY 1")
    assert rows == [(1,), (3,)], "written at shutdown, the hostile event left out"


async def test_a_quiet_feed_still_rolls_on_time(tmp_path: Path) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_seconds=0.2)
    sink.flush_every = 0.05
    writer = SinkWriter(
        sink, EventChannel(100), ServiceStatus(), SinkCounters(), flush_interval=0.01
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send([trade(1)])
        await wait_for(lambda: len(files(tmp_path)) == 1, 2, "the roll of a quiet feed")
        writer.channel.close()


def test_a_second_sink_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = parquet_sink(tmp_path)
    with pytest.raises(SinkSpecError, match="another coinfeed process writes Parquet"):
        parquet_sink(tmp_path)
    first.close()
    parquet_sink(tmp_path).close()


def test_opening_deletes_what_a_crash_left_half_written(tmp_path: Path) -> None:
    parquet_sink(tmp_path).close()
    leftover = tmp_path / TMP_DIR / "7.tmp"
    leftover.write_bytes(b"PAR1 a file without its footer")
    parquet_sink(tmp_path).close()
    assert not leftover.exists()


def test_without_pyarrow_the_error_names_the_extra_to_install(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from coinfeed.sinks import open_sink\n"
        f"open_sink('parquet:{tmp_path}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0
    assert "pip install 'coinfeed[parquet]'" in done.stderr
    assert "SinkSpecError" in done.stderr


def test_the_time_columns_are_nanosecond_exact(tmp_path: Path) -> None:
    at = "2026-11-28T10:00:00.1234567Z"
    event = TradeEvent(**{**_fields(trade(1)), "time_exchange": at, "time_coinapi": at})
    sink = parquet_sink(tmp_path)
    sink.write_batch([event])
    sink.flush(True)
    sink.close()
    [(nanos,)] = sql(f"SELECT epoch_ns(time_exchange) FROM read_parquet('{tmp_path}/**/*.parquet')")
    assert nanos % 1_000_000_000 == 123_456_700


def test_what_a_killed_process_spooled_is_converted_by_the_next_start(tmp_path: Path) -> None:
    # A kill -9 skips flush and close: the events are in the spool file, on disk.
    killed = parquet_sink(tmp_path, parquet_roll_seconds=3600)
    killed.write_batch([trade(n) for n in range(500)])
    killed.write_batch([book(1, snapshot=True), gap()])
    os.close(killed._lock_fd)  # the kernel releases a dead process's lock
    with (tmp_path / SPOOL_DIR / "spool-000001-0.jsonl").open("ab") as spool:
        spool.write(b'{"kind":"trade","symbol_id":"BITSTAMP_SPOT_BTC_')  # torn by the kill
    assert files(tmp_path) == []
    again = parquet_sink(tmp_path)
    eventually(lambda: len(files(tmp_path)) == 3, "the leftover spool's files")
    again.write_batch([trade(500)])
    again.flush(True)
    again.close()
    assert sql(
        f"SELECT count(DISTINCT uuid) FROM read_parquet('{tmp_path}/kind=trade/**/*.parquet')"
    ) == [(501,)]
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []


def test_converting_a_spool_again_replaces_its_files_with_the_same(tmp_path: Path) -> None:
    # A crash between renaming a roll's files and deleting its spool: the next start converts
    # the spool again, and its files get the same names.
    sink = parquet_sink(tmp_path)
    sink.write_batch([trade(n, symbol=f"S{n % 2}") for n in range(10)])
    spool = next((tmp_path / SPOOL_DIR).iterdir())
    kept = spool.read_bytes()
    sink.flush(True)
    sink.close()
    before = files(tmp_path)
    spool.write_bytes(kept)
    again = parquet_sink(tmp_path)  # converts the spool in its rolling thread
    again.flush(True)
    again.close()
    assert not spool.exists()
    assert files(tmp_path) == before
    assert sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/*.parquet')") == [(10,)]


def test_a_spool_whose_only_append_failed_rolls_to_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = parquet_sink(tmp_path)

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        sink.write_batch([trade(1)])
    monkeypatch.undo()
    sink.flush(True)  # an empty spool: nothing to convert, and it goes
    sink.close()
    assert files(tmp_path) == []
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []


def test_spools_waiting_for_a_slow_conversion_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_rows=1000)
    real_write = pq.write_table

    def slow_disk(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)
        real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", slow_disk)
    most = 0
    for roll in range(12):
        sink.write_batch([trade(n) for n in range(roll * 1000, roll * 1000 + 1000)])
        most = max(most, len(list((tmp_path / SPOOL_DIR).iterdir())))
    # The one being filled, and at most SPOOLS_WAITING_MAX closed ones: then the writer waits.
    assert 3 <= most <= SPOOLS_WAITING_MAX + 1, "conversions lagged, within the bound"
    sink.flush(True)
    sink.close()
    assert sql(f"SELECT count(DISTINCT uuid) FROM read_parquet('{tmp_path}/**/*.parquet')") == [
        (12_000,)
    ]


def test_a_spool_that_cannot_be_created_fails_the_write_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = parquet_sink(tmp_path)
    real_open = JsonlSink.open

    def no_inodes(*args: Any, **kwargs: Any) -> JsonlSink:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JsonlSink, "open", no_inodes)
    with pytest.raises(OSError, match="No space"):
        sink.write_batch([trade(1)])
    sink.flush(True)  # nothing was taken in: nothing to roll
    monkeypatch.setattr(JsonlSink, "open", real_open)
    sink.write_batch([trade(1)])  # the writer's retry
    sink.flush(True)
    sink.close()
    assert sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/*.parquet')") == [(1,)]


async def test_a_conversion_bug_is_retried_and_reported_never_sets_events_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = parquet_sink(tmp_path, parquet_roll_rows=1000)
    status, counters = ServiceStatus(), SinkCounters()
    writer = SinkWriter(sink, EventChannel(5000), status, counters, max_batch=5000)
    real_write = pq.write_table

    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise ValueError("a bug in the conversion, not in an event")

    monkeypatch.setattr(pq, "write_table", broken)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.channel.send([trade(n) for n in range(1000)], 1)
        await writer.channel.send([trade(1000)], 2)  # the roll (it fails) starts before it
        await wait_for(lambda: bool(calls), 5, "the roll failed")
        await trio.sleep(0.05)
        await writer.channel.send([trade(1001)], 3)  # its write meets the failure
        await wait_for(lambda: bool(status.sink_failures), 5, "the sink reported failing")
        monkeypatch.setattr(pq, "write_table", real_write)
        await wait_for(lambda: not status.sink_failures, 10, "the sink recovered")
        writer.channel.close()
    assert counters.rejected.get(sink.name, 0) == 0
    assert sql(f"SELECT count(DISTINCT uuid) FROM read_parquet('{tmp_path}/**/*.parquet')") == [
        (1002,)
    ]
