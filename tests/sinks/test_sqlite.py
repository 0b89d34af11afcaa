"""The SQLite sink: exact decimals, no duplicate trades, one final row per bar, migrations,
durability under kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from coinfeed.core.events import BookDepth, BookEvent, Source
from coinfeed.sinks import SinkSpecError, open_sink
from coinfeed.sinks.sqlite import MIGRATIONS, SqliteSink, migrate, schema_version
from tests.helpers import AT, SYM, book, book_from_sqlite, gap, quote, trade
from tests.sinks.kinds import MINUTE_END, PAIR, RECEIVED, bar, book_top, exrate, ohlcv, one_of_each


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_replaying_the_same_events_leaves_no_duplicate_trades(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    events = [trade(n) for n in range(50)] + [quote(1), gap()]
    sink = open_sink(f"sqlite:{path}")
    sink.write_batch(events)
    sink.write_batch(events[10:30])
    sink.close()
    again = open_sink(f"sqlite:{path}")  # a later process replays everything
    again.write_batch(events)
    again.close()
    assert rows(path, "SELECT count(*), count(DISTINCT uuid) FROM trades") == [(50, 50)]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("770.000000000", "770.000000000"),
        ("0.00000050", "5.0E-7"),  # str(Decimal): same digits and exponent, exponent notation
        ("1E-9", "1E-9"),
        ("123456789.123456789", "123456789.123456789"),
    ],
)
def test_prices_and_sizes_round_trip_exactly(tmp_path: Path, sent: str, stored: str) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([trade(1, price=sent, size=sent), quote(2), book(3, snapshot=True)])
    sink.close()
    [(price, size, price_type)] = rows(path, "SELECT price, size, typeof(price) FROM trades")
    assert (price, size, price_type) == (stored, stored, "text")
    # Reading it back gives the identical Decimal: value, digits and exponent (trailing zeros).
    assert Decimal(str(price)).as_tuple() == Decimal(sent).as_tuple()
    [quote_row] = rows(path, "SELECT ask_price, ask_size, bid_price, bid_size FROM quotes")
    assert quote_row == ("101.50", "5.0E-7", "99.0", "1E-9")
    [(asks, bids)] = rows(path, "SELECT asks, bids FROM book_snapshots")
    assert json.loads(asks) == [["101.50", "2"], ["101.25", "1E-9"]]
    assert json.loads(bids) == [["99.0", "3.000"]]


def test_book_snapshots_keeps_only_snapshots_and_book_updates_every_book_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([book(1, snapshot=True), book(2, snapshot=False), book(3, snapshot=False)])
    sink.write_batch([book(4, snapshot=True), gap()])
    sink.close()
    assert rows(path, "SELECT sequence FROM book_snapshots ORDER BY id") == [(1,), (4,)]
    assert rows(path, "SELECT sequence, is_snapshot FROM book_updates ORDER BY id") == [
        (1, 1),
        (2, 0),
        (3, 0),
        (4, 1),
    ]
    assert rows(path, "SELECT data_type, status, missing FROM gaps") == [("trade", "pending", 3)]


def levels(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(size)) for price, size in pairs]


def book_event(
    n: int,
    *,
    snapshot: bool,
    asks: list[tuple[Decimal, Decimal]],
    bids: list[tuple[Decimal, Decimal]],
    symbol: str = SYM,
    depth: BookDepth = "book",
    source: Source = "ws",
) -> BookEvent:
    return BookEvent(
        symbol_id=symbol, depth=depth, sequence=n if source == "ws" else None, time_exchange=AT,
        is_snapshot=snapshot, asks=asks, bids=bids, source=source, received_at=AT,
    )  # fmt: skip


def rebuilt_book(path: Path, symbol: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``symbol``'s book rebuilt from ``book_updates``, every level as text."""
    top_asks, top_bids = book_from_sqlite(path, symbol).top(10_000)
    return [(str(p), str(s)) for p, s in top_asks], [(str(p), str(s)) for p, s in top_bids]


def test_the_book_rebuilt_from_book_updates_has_every_delta_applied(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    other = "COINBASE_SPOT_ETH_USD"
    sink = SqliteSink.open(str(path))
    sink.write_batch([
        book_event(1, snapshot=True, asks=levels(("101.50", "2"), ("101.25", "1")),
                   bids=levels(("99.0", "3.000"), ("98.5", "1"))),
        book_event(7, snapshot=True, symbol=other, asks=levels(("2000", "1")),
                   bids=levels(("1999", "1"))),
        book_event(2, snapshot=False, asks=levels(("101.25", "0")),  # deletes a level
                   bids=levels(("99.5", "0.25"))),  # adds one
    ])  # fmt: skip
    sink.write_batch([
        book_event(3, snapshot=False, asks=levels(("101.50", "4.0")), bids=levels(("98.5", "0"))),
        book_event(8, snapshot=False, symbol=other, asks=levels(("2000", "0")), bids=[]),
        book_event(0, snapshot=True, source="rest", asks=levels(("500", "9")), bids=[]),
        book_event(4, snapshot=True, depth="book5", asks=levels(("600", "9")), bids=[]),
        book_event(4, snapshot=False, asks=levels(("102", "1")), bids=[]),
    ])  # fmt: skip
    assert rebuilt_book(path, SYM) == (
        [("101.50", "4.0"), ("102", "1")],
        [("99.5", "0.25"), ("99.0", "3.000")],
    )
    assert rebuilt_book(path, other) == ([], [("1999", "1")])
    # A resubscribe: the new snapshot replaces the whole book, later deltas apply to it.
    sink.write_batch([
        book_event(10, snapshot=True, asks=levels(("103", "1")), bids=levels(("100", "2"))),
        book_event(11, snapshot=False, asks=[], bids=levels(("100", "0"), ("99.75", "5"))),
    ])  # fmt: skip
    sink.close()
    assert rebuilt_book(path, SYM) == ([("103", "1")], [("99.75", "5")])
    assert rows(path, "SELECT count(*), sum(is_snapshot) FROM book_updates") == [(10, 5)]
    assert rows(
        path, "SELECT symbol_id, depth, source, sequence FROM book_snapshots ORDER BY id"
    ) == [
        (SYM, "book", "ws", 1),
        (other, "book", "ws", 7),
        (SYM, "book", "rest", None),
        (SYM, "book5", "ws", 4),
        (SYM, "book", "ws", 10),
    ]


def test_the_database_uses_wal_and_indexes_each_market_table(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    SqliteSink.open(str(path)).close()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    indexed = {
        (table, tuple(c[2] for c in rows(path, f"PRAGMA index_info({name})")))
        for name, table in rows(path, "SELECT name, tbl_name FROM sqlite_master WHERE type='index'")
        if not str(name).startswith("sqlite_autoindex")
    }
    for table in ("trades", "quotes", "book_snapshots", "book_updates"):
        assert (table, ("symbol_id", "time_exchange")) in indexed
    assert ("book_tops", ("symbol_id", "time")) in indexed
    assert ("exrates", ("symbol_id", "time")) in indexed


def test_an_older_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == 1
        conn.execute(
            "INSERT INTO trades VALUES ('u-1', 'S', 1, 't', 't', '1.0', '2', 'BUY', 'ws', 'r')"
        )
    conn.close()
    sink = SqliteSink.open(str(path))
    sink.write_batch([trade(7)])
    sink.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == len(MIGRATIONS)
    conn.close()
    assert rows(path, "SELECT uuid FROM trades ORDER BY uuid")[0] == (
        "00000000-0000-4000-8000-000000000007",
    )
    assert ("u-1",) in rows(path, "SELECT uuid FROM trades")


def test_a_version_2_database_gets_the_gap_window_columns_and_keeps_its_gaps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert migrate(conn, MIGRATIONS[:2]) == 2
        conn.execute(
            "INSERT INTO gaps (data_type, symbol_id, reason, missing, recovery, status,"
            " received_at) VALUES ('trade', 'S', 'sequence', 1, 'backfill', 'pending', 'r')"
        )
    conn.close()
    sink = SqliteSink.open(str(path))
    sink.write_batch([gap()])
    sink.close()
    stored = rows(
        path,
        "SELECT gap_id, after_sequence, before_sequence, window_start, window_end FROM gaps"
        " ORDER BY id",
    )
    assert stored == [(None, None, None, None, None), ("1a2b3c4d-1", 4, 8, AT, AT)]


def test_a_version_3_database_gets_book_updates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:  # as coinfeed with 3 steps left it
        assert migrate(conn, MIGRATIONS[:3]) == 3
        conn.execute(
            "INSERT INTO book_snapshots (symbol_id, depth, sequence, time_exchange, asks, bids,"
            " source, received_at) VALUES ('S', 'book', 1, 't', '[[\"2\",\"1\"]]', '[]',"
            " 'ws', 'r')"
        )
        conn.execute(
            "INSERT INTO trades VALUES ('u-1', 'S', 1, 't', 't', '1.0', '2', 'BUY', 'ws', 'r')"
        )
    conn.close()
    sink = open_sink(f"sqlite:{path}")
    sink.write_batch([book(5, snapshot=True), book(6, snapshot=False), book(7, snapshot=False)])
    sink.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == len(MIGRATIONS)
    conn.close()
    assert rows(path, "SELECT symbol_id, sequence, asks FROM book_snapshots ORDER BY id") == [
        ("S", 1, '[["2","1"]]'),
        (SYM, 5, '[["101.50","2"],["101.25","1E-9"]]'),
    ]
    assert rows(path, "SELECT uuid FROM trades") == [("u-1",)]
    # The old file's past has no deltas; from now on every book event is there, in order.
    assert rows(path, "SELECT sequence, is_snapshot FROM book_updates ORDER BY id") == [
        (5, 1),
        (6, 0),
        (7, 0),
    ]


def test_a_version_4_database_gets_the_newer_kinds_tables_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:  # as coinfeed with 4 steps left it
        assert migrate(conn, MIGRATIONS[:4]) == 4
        conn.execute(
            "INSERT INTO trades VALUES ('u-1', 'S', 1, 't', 't', '1.0', '2', 'BUY', 'ws', 'r')"
        )
    conn.close()
    sink = open_sink(f"sqlite:{path}")
    sink.write_batch([trade(2), *one_of_each()])
    sink.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == 5 == len(MIGRATIONS)
    conn.close()
    assert rows(path, "SELECT uuid FROM trades ORDER BY uuid") == [
        ("00000000-0000-4000-8000-000000000002",),
        ("u-1",),
    ]
    counts = [rows(path, f"SELECT count(*) FROM {table}")[0][0]
              for table in ("bars", "book_tops", "ohlcv", "exrates")]  # fmt: skip
    assert counts == [1, 1, 2, 1]


def test_the_newer_kinds_are_stored_with_the_exact_digits(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch(one_of_each())
    sink.close()
    assert rows(path, "SELECT * FROM bars") == [
        (SYM, "1MIN", AT, MINUTE_END, "2026-11-28T10:00:00.1234567Z",
         "2026-11-28T10:00:59.9999999Z", "769.50", "1E+3", "5.0E-7", "770.000000000",
         "123456789012345678901234567890.5", 7, 0, 1, RECEIVED),
    ]  # fmt: skip
    assert rows(path, "SELECT * FROM book_tops") == [
        (1, SYM, 2, "2026-11-28T10:00:01.000250Z", 42, '[["101.50","2"],["101.25","1E-9"]]',
         '[["99.0","3.000"]]', RECEIVED),
    ]  # fmt: skip
    assert rows(path, "SELECT * FROM ohlcv ORDER BY sequence") == [
        (SYM, 1, "1MIN", AT, MINUTE_END, AT, AT, "5.0E-7", "5.0E-7", "5.0E-7", "5.0E-7",
         "12.50", 1, RECEIVED),
        (SYM, 2, None, AT, MINUTE_END, None, None, None, None, None, None, "0E-8", 0, RECEIVED),
    ]  # fmt: skip
    assert rows(path, "SELECT * FROM exrates") == [
        (1, PAIR, "BTC", "USD", "BASE_ALL_CROSSES_TO_REF", AT, "65013.000000000", RECEIVED),
    ]
    [(high, typed)] = rows(path, "SELECT high, typeof(high) FROM bars")
    assert typed == "text" and Decimal(str(high)).as_tuple() == Decimal("1E+3").as_tuple()


def stored_bar(path: Path) -> tuple[object, ...]:
    [row] = rows(path, "SELECT revision, complete, close FROM bars")
    return row


def test_a_bar_keeps_its_highest_revision_whatever_comes_later(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([bar(0, complete=False, close="1"), bar(1, complete=False, close="2")])
    assert stored_bar(path) == (1, 0, "2")
    # Out of order within one batch: revision 3 stays, whatever follows it.
    sink.write_batch([bar(3, close="4.0"), bar(2, close="3")])
    assert stored_bar(path) == (3, 1, "4.0")
    sink.close()
    # A restart: the new run numbers the bar's re-emissions from 0 again; lower revisions and an
    # incomplete one of the same revision do not undo the final bar.
    again = SqliteSink.open(str(path))
    again.write_batch([bar(0, close="9"), bar(3, complete=False, close="8")])
    again.write_batch([bar(3, close="7")])  # equal revision, equally complete: the stored stays
    assert stored_bar(path) == (3, 1, "4.0")
    again.write_batch([bar(4, complete=False, close="5")])  # a higher revision always wins
    assert stored_bar(path) == (4, 0, "5")
    again.close()
    assert rows(path, "SELECT count(*), max(trades_count) FROM bars") == [(1, 11)]


def test_at_an_equal_revision_a_complete_bar_replaces_an_incomplete_one(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([bar(2, complete=False, close="1")])
    sink.write_batch([bar(2, complete=True, close="1.5")])
    assert stored_bar(path) == (2, 1, "1.5")
    sink.close()


def test_bars_of_other_periods_symbols_and_starts_are_rows_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([bar(5), bar(0, period="5MIN"), bar(0, symbol="OTHER"),
                      bar(0, start="2026-11-28T10:01:00.0000000Z")])  # fmt: skip
    sink.close()
    assert rows(path, "SELECT count(*), max(revision) FROM bars") == [(4, 5)]


def test_ohlcv_keeps_the_last_update_of_each_bar(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([ohlcv(7, close="1.0"), ohlcv(8, close="2.00")])
    # A reconnect: CoinAPI's sequence starts again, and the later update still wins.
    sink.write_batch([ohlcv(1, close="3.000")])
    sink.close()
    assert rows(path, "SELECT sequence, price_close, trades_count FROM ohlcv") == [(1, "3.000", 1)]


def test_ohlcv_without_a_period_id_is_one_bar_per_start_and_end(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    hour_end = "2026-11-28T11:00:00.0000000Z"
    sink = SqliteSink.open(str(path))
    sink.write_batch([
        ohlcv(1, period=None, close="1"), ohlcv(2, period=None, close="2"),  # one bar
        ohlcv(3, period=None, end=hour_end, close="3"),  # starts there too, ends later
        ohlcv(4, close="4"),  # the same times with a period_id: another bar
    ])  # fmt: skip
    sink.write_batch([ohlcv(5, period=None, end=hour_end, close="5")])
    sink.close()
    stored = rows(
        path, "SELECT period_id, time_period_end, price_close FROM ohlcv ORDER BY sequence"
    )
    assert stored == [(None, MINUTE_END, "2"), ("1MIN", MINUTE_END, "4"), (None, hour_end, "5")]


def test_book_tops_and_exrates_keep_every_event(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    sink = SqliteSink.open(str(path))
    sink.write_batch([book_top(1), exrate("1.5"), book_top(2)])
    sink.write_batch([book_top(2), exrate("1.5"), exrate("1.50")])  # repeats are rows too
    sink.close()
    assert rows(path, "SELECT sequence FROM book_tops ORDER BY id") == [(1,), (2,), (2,)]
    assert rows(path, "SELECT rate FROM exrates ORDER BY id") == [("1.5",), ("1.5",), ("1.50",)]


def test_a_database_from_a_newer_coinfeed_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    SqliteSink.open(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(SinkSpecError, match="schema version 99 is newer"):
        SqliteSink.open(str(path))


CHILD = textwrap.dedent(
    """
    import sys
    from coinfeed.sinks.sqlite import SqliteSink
    from tests.helpers import trade, quote

    sink = SqliteSink.open(sys.argv[1])
    batch = 0
    while True:
        base = batch * 200
        sink.write_batch([trade(base + i) for i in range(200)] + [quote(batch)])
        print(f"committed {batch}", flush=True)
        batch += 1
    """
)


def test_kill_9_mid_run_keeps_every_committed_batch_and_a_sound_database(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout is not None
    committed: list[int] = []
    try:
        while len(committed) < 30:
            line = child.stdout.readline()
            assert line, f"the writer exited early with {child.wait()}"
            committed.append(int(line.split()[1]))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        committed.extend(int(line.split()[1]) for line in child.stdout.read().splitlines())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    stored = {int(str(u)[-12:]) for (u,) in rows(path, "SELECT uuid FROM trades")}
    for batch in committed:
        assert set(range(batch * 200, batch * 200 + 200)) <= stored, f"batch {batch} lost"
    # Whole batches only: a transaction is all or nothing.
    assert len(stored) % 200 == 0
    SqliteSink.open(str(path)).close()  # and it opens again as a sink
