"""The Parquet section of docs/sinks.md: its column table is the code's schema, its ``coinfeed
book`` output is what ``render`` prints, and every query example (its ```sql and ```python
blocks), run on a real history, gives what the JSON Lines sink of the same run says, computed
with Decimal; the examples on bars, which the service run does not produce, give what the SQLite
sink keeps of the same events."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import duckdb
import msgspec
import polars as pl
import pyarrow as pa
import pytest
import trio

from coinfeed.config import Settings
from coinfeed.core.book import BookState
from coinfeed.core.events import BookEvent, Event, QuoteEvent, TradeEvent, decode_event
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.sinks.parquet import LEVELS, SCHEMAS, TIME, ParquetSink
from coinfeed.sinks.parquet_history import BookAt, book_at, render
from coinfeed.sinks.sqlite import SqliteSink
from tests.helpers import SYM, SYMBOLS, settle
from tests.sinks.kinds import MINUTE_END, bar, nanos, ohlcv

DOC = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"
HEADING = "## Parquet (`parquet:DIR`)"
DIRECTORY = "history"
"""The sink's DIR in the examples: they run in the directory that holds it."""
DOC_AT = "2026-12-06 10:00:10Z"
"""T in the book example; the test puts its own instants in its place."""
WRITTEN_HERE = ("kind=bar/", "kind=ohlcv/")
"""The kinds of the examples that run on events a test writes: the service run makes none."""

Rows = list[dict[str, Any]]


# -- the section -------------------------------------------------------------------------------


def section() -> str:
    """The Parquet section: from its heading to the next ``## `` heading outside code blocks."""
    lines = DOC.read_text().splitlines()
    assert HEADING in lines, f"{DOC.name} has no {HEADING!r} section"
    body: list[str] = []
    fenced = False
    for line in lines[lines.index(HEADING) + 1 :]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            break
        body.append(line)
    return "\n".join(body)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of ``text``, in order."""
    return [
        (m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    ]


def examples() -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in code_blocks(section()) if lang in ("sql", "python")]


def reads_written_here(code: str) -> bool:
    return any(kind in code for kind in WRITTEN_HERE)


def test_the_column_table_is_the_schema_of_each_kind() -> None:
    text = section()
    assert f"time is `{TIME}`" in text
    assert f"levels is `{str(LEVELS).replace('item: ', '')}`" in text
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
             "bool": pa.bool_(), "time": TIME, "levels": LEVELS}  # fmt: skip
    documented = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"`[a-z_]+`", cells[0]):
            columns = re.findall(r"`([a-z0-9_]+)` ([a-z0-9]+)", cells[1])
            documented[cells[0].strip("`")] = [(name, types[kind]) for name, kind in columns]
    assert documented == {
        kind: [(field.name, field.type) for field in schema] for kind, schema in SCHEMAS.items()
    }


def test_the_book_output_shown_is_what_render_prints() -> None:
    [shown] = [code for _, code in code_blocks(section()) if code.startswith("$ coinfeed book")]
    _, header, _, *levels = shown.splitlines()
    symbol, at, state, sequence, changed = re.fullmatch(
        r"(\S+) at (\S+): (\w+), sequence (\d+), last change (\S+)", header
    ).groups()  # type: ignore[union-attr]
    sides: dict[str, list[tuple[Decimal, Decimal]]] = {"ask": [], "bid": []}
    for line in levels:
        side, price, size = line.split()
        sides[side].append((Decimal(price), Decimal(size)))
    book = BookAt(
        symbol, datetime.fromisoformat(at), BookState(state), int(sequence),
        datetime.fromisoformat(changed), sides["ask"][::-1], sides["bid"],
    )  # fmt: skip
    assert render(book) == "\n".join(shown.splitlines()[1:])


# -- a real history ----------------------------------------------------------------------------


@attrs.frozen
class History:
    directory: Path
    """Holds ``history/`` (the Parquet sink's DIR) and ``events.jsonl`` of the same run."""
    events: list[Event]
    """What the JSON Lines sink wrote, in order."""
    live: tuple[list[tuple[str, str]], list[tuple[str, str]]]
    """The service's book of :data:`SYM` at the end, as text."""
    end: datetime
    """After the run's last event."""


async def run_service(make_settings: Callable[..., Settings], directory: Path) -> History:
    lines = directory / "events.jsonl"
    config = SimulatorConfig(rate=2000, seed=12, faults="gaps", snapshot_every=40)
    async with open_simulator(config) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS,
            sinks=(f"jsonl:{lines}", f"parquet:{directory / DIRECTORY}"), stale_after=2.0,
            recovery_pause=0.02, sink_flush_interval=0.1, parquet_roll_seconds=0.3,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        books = service.processor.books
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await trio.sleep(1.5)  # 1 % of the frames skipped: backfills, resyncs, REST views
            await settle(sim, service)
            live = books.get(SYM)
            assert live is not None
            asks, bids = live.top(live.level_count)
            service.status.request_shutdown("test over")
    events = [decode_event(line) for line in lines.read_bytes().splitlines()]
    as_text = [[(str(p), str(s)) for p, s in side] for side in (asks, bids)]
    return History(directory, events, (as_text[0], as_text[1]), datetime.now(UTC))


# -- what the events say (the references) ----------------------------------------------------


def minute(text: str) -> datetime:
    return datetime.fromisoformat(text[:16]).replace(tzinfo=UTC)


def trades_by_minute(history: History) -> dict[tuple[str, datetime], list[TradeEvent]]:
    """Each symbol's trades per minute of ``time_exchange``, in exchange time, ties in arrival
    order (the JSON Lines file's)."""
    trades = [e for e in history.events if isinstance(e, TradeEvent)]
    assert len(trades) > 300
    assert len({t.uuid for t in trades}) == len(trades)
    groups: dict[tuple[str, datetime], list[TradeEvent]] = {}
    for trade in sorted(trades, key=lambda t: nanos(t.time_exchange)):  # stable
        groups.setdefault((trade.symbol_id, minute(trade.time_exchange)), []).append(trade)
    return groups


def keyed(rows: Rows) -> dict[tuple[str, datetime], dict[str, Any]]:
    keys = [(row["symbol_id"], row["minute"].astimezone(UTC)) for row in rows]
    assert len(set(keys)) == len(keys)
    return dict(zip(keys, rows, strict=True))


def close(value: float, expected: Decimal) -> bool:
    return math.isclose(value, float(expected), rel_tol=1e-12, abs_tol=1e-12)


def check_vwap(history: History, rows: Rows, _: str) -> None:
    groups = trades_by_minute(history)
    found = keyed(rows)
    assert found.keys() == groups.keys()
    for key, trades in groups.items():
        row = found[key]
        volume = sum((t.size for t in trades), Decimal(0))
        notional = sum((t.price * t.size for t in trades), Decimal(0))
        assert row["trades"] == len(trades), key
        if isinstance(row["volume"], Decimal):  # the DECIMAL query: exact
            assert (row["volume"], row["notional"]) == (volume, notional), key
        else:
            assert close(row["volume"], volume), key
        assert close(row["vwap"], notional / volume), key


def check_ohlcv(history: History, rows: Rows, _: str) -> None:
    groups = trades_by_minute(history)
    found = keyed(rows)
    assert found.keys() == groups.keys()
    for key, trades in groups.items():
        prices = [t.price for t in trades]
        expected = {
            "open": prices[0], "high": max(prices), "low": min(prices), "close": prices[-1],
            "volume": sum((t.size for t in trades), Decimal(0)), "trades": len(trades),
        }  # fmt: skip
        assert {name: found[key][name] for name in expected} == expected, key
        assert all(isinstance(found[key][name], Decimal) for name in ("open", "volume")), key


def check_spread(history: History, rows: Rows, _: str) -> None:
    last: dict[str, QuoteEvent] = {}
    for event in history.events:
        if isinstance(event, QuoteEvent):
            last[event.symbol_id] = event
    assert set(last) == set(SYMBOLS)
    assert [row["symbol_id"] for row in rows] == sorted(last)
    for row in rows:
        quote = last[row["symbol_id"]]
        assert (row["bid_price"], row["ask_price"]) == (str(quote.bid_price), str(quote.ask_price))
        spread = quote.ask_price - quote.bid_price
        if isinstance(row["spread"], Decimal):
            assert row["spread"] == spread
        else:
            assert close(row["spread"], spread)


def book_rows(rows: Rows) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    asks = [(row["price"], row["size"]) for row in rows if row["side"] == "ask"]
    bids = [(row["price"], row["size"]) for row in rows if row["side"] == "bid"]
    assert len(asks) + len(bids) == len(rows)
    return asks, bids


def rebuilt(history: History, at: datetime) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    found = book_at(history.directory / DIRECTORY, SYM, at)
    assert found.state is BookState.SYNCED, at
    return [(str(p), str(s)) for p, s in found.asks], [(str(p), str(s)) for p, s in found.bids]


def check_book(history: History, _: Rows, code: str) -> None:
    """Run the example again at two instants of the run: mid-way, and after its end."""
    assert code.count(DOC_AT) == 1, f"the book example names T as {DOC_AT!r}"
    times = sorted(
        datetime.fromisoformat(e.received_at)
        for e in history.events
        if isinstance(e, BookEvent) and e.symbol_id == SYM
    )
    # A mid-way instant when the book was synced (the example looks at no gap events).
    middle = next(
        at
        for at in times[len(times) // 2 :]
        if book_at(history.directory / DIRECTORY, SYM, at).state is BookState.SYNCED
    )
    for at, expected in ((middle, rebuilt(history, middle)), (history.end, history.live)):
        assert expected == rebuilt(history, at)
        shown = duckdb.connect().sql(code.replace(DOC_AT, at.isoformat()))
        assert book_rows(to_rows(shown.columns, shown.fetchall())) == expected, at
    assert rebuilt(history, middle) != history.live, "the middle instant shows another book"


def to_rows(columns: list[str], values: list[tuple[Any, ...]]) -> Rows:
    return [dict(zip(columns, row, strict=True)) for row in values]


CHECKS: dict[frozenset[str], Callable[[History, Rows, str], None]] = {
    frozenset({"symbol_id", "minute", "trades", "vwap"}): check_vwap,
    frozenset({"symbol_id", "minute", "open", "high", "low", "close", "volume"}): check_ohlcv,
    frozenset({"symbol_id", "bid_price", "ask_price", "spread"}): check_spread,
    frozenset({"side", "price", "size"}): check_book,
}


def run_example(language: str, code: str) -> Rows:
    if language == "sql":
        relation = duckdb.connect().sql(code)
        return to_rows(relation.columns, relation.fetchall())
    namespace: dict[str, Any] = {}
    exec(compile(code, f"{DOC.name} (Parquet example)", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, pl.DataFrame), "a Python example leaves a DataFrame in `result`"
    return result.rows(named=True)


async def test_every_query_example_gives_what_the_events_say(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = [(language, code) for language, code in examples() if not reads_written_here(code)]
    assert all(f"'{DIRECTORY}/" in code or f'"{DIRECTORY}/' in code for _, code in blocks)
    history = await run_service(make_settings, tmp_path)
    monkeypatch.chdir(tmp_path)  # the examples read the relative path history/
    ran: list[tuple[str, str]] = []
    for language, code in blocks:
        rows = run_example(language, code.replace(DOC_AT, history.end.isoformat()))
        assert rows, code
        [check] = [check for columns, check in CHECKS.items() if columns <= rows[0].keys()]
        check(history, rows, code)
        ran.append((language, check.__name__))
    assert len(ran) == len(blocks)
    assert {("sql", check.__name__) for check in CHECKS.values()} <= set(ran)
    assert {("python", check.__name__) for check in (check_vwap, check_ohlcv, check_spread)} <= (
        set(ran)
    )


# -- bars: the examples against the SQLite sink's tables ------------------------------------


NEXT_MINUTE = "2026-11-28T10:01:00.0000000Z"
HOUR_END = "2026-11-28T11:00:00.0000000Z"


def received(events: list[Event], at: str) -> list[Event]:
    return [msgspec.structs.replace(event, received_at=at) for event in events]


RUNS = (
    received([
        bar(0, complete=False, close="1"), bar(1, complete=False, close="2"), bar(2, close="3"),
        bar(0, symbol="OTHER", close="10"),
        bar(1, complete=False, start=NEXT_MINUTE, close="20"),
        bar(1, start=NEXT_MINUTE, close="21"),  # equal revision: the complete one wins
        ohlcv(1, close="1"), ohlcv(2, close="2"), ohlcv(3, period=None, close="5"),
        ohlcv(4, period=None, end=HOUR_END, close="6"),
    ], "2026-11-28T10:01:30.000001Z"),
    # A restart, the next day: the new run numbers its re-emissions from 0 again, and CoinAPI's
    # sequence starts again with the new connection.
    received([
        bar(0, close="9"),  # a lower revision
        bar(2, complete=False, close="8"), bar(2, close="7"),  # equal, not better: passed over
        bar(0, start=NEXT_MINUTE, close="30"),
        bar(0, complete=False, start="2026-11-28T10:02:00.0000000Z", close="40"),
        ohlcv(1, close="3"), ohlcv(2, period=None, close="7"),
    ], "2026-11-29T00:00:00.5Z"),
)  # fmt: skip
"""Two runs of coinfeed writing bars and CoinAPI's bars into the same history and database."""


def to_ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def test_the_final_bar_examples_keep_what_the_sqlite_sink_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = {kind: code for _, code in examples() for kind in WRITTEN_HERE if kind in code}
    assert blocks.keys() == set(WRITTEN_HERE)
    database = tmp_path / "feed.sqlite"
    for events in RUNS:
        history = ParquetSink.open(str(tmp_path / DIRECTORY))
        history.write_batch(events)
        history.flush(True)
        history.close()
        tables = SqliteSink.open(str(database))
        tables.write_batch(events)
        tables.close()
    monkeypatch.chdir(tmp_path)
    shown = duckdb.connect().sql(blocks["kind=bar/"])
    bars = [
        (row["symbol_id"], to_ns(row["time_period_start"]), row["close"], row["revision"],
         row["complete"], row["open"], row["volume"])
        for row in to_rows(shown.columns, shown.fetchall())
    ]  # fmt: skip
    assert [(symbol, close) for symbol, _, close, *_ in bars] == [
        ("BITSTAMP_SPOT_BTC_USD", "3"), ("BITSTAMP_SPOT_BTC_USD", "21"),
        ("BITSTAMP_SPOT_BTC_USD", "40"), ("OTHER", "10"),
    ]  # fmt: skip
    with sqlite3.connect(database) as conn:
        kept = conn.execute(
            "SELECT symbol_id, time_period_start, close, revision, complete, open, volume"
            " FROM bars ORDER BY symbol_id, period_id, time_period_start"
        ).fetchall()
    conn.close()
    assert bars == [(s, nanos(t), c, r, bool(k), o, v) for s, t, c, r, k, o, v in kept]
    shown = duckdb.connect().sql(blocks["kind=ohlcv/"])
    final = [
        (row["period_id"], to_ns(row["time_period_end"]), row["price_close"], row["trades_count"])
        for row in to_rows(shown.columns, shown.fetchall())
    ]
    assert set(final) == {
        ("1MIN", nanos(MINUTE_END), "3", 1), (None, nanos(MINUTE_END), "7", 2),
        (None, nanos(HOUR_END), "6", 4),
    }  # fmt: skip
    with sqlite3.connect(database) as conn:
        kept = conn.execute(
            "SELECT period_id, time_period_end, price_close, trades_count FROM ohlcv"
        ).fetchall()
    conn.close()
    assert len(final) == 3
    assert set(final) == {(p, nanos(e), c, n) for p, e, c, n in kept}
