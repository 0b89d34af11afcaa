"""SQLite sink: the embedded default. One table per event kind, one transaction per batch.

How this works: the connection is opened in WAL mode with ``synchronous=NORMAL`` (a commit
survives the process being killed; after a power loss the last commits may roll back, never
corrupt). Opening a database applies, in order, every step of :data:`MIGRATIONS` it has not seen
yet (``schema_version`` holds how many), so an older file is upgraded in place. Prices and sizes
are stored as exact text (``str(Decimal)``), book levels as JSON arrays of such strings. Trades
are keyed by ``uuid`` and written with ``INSERT OR IGNORE``, so replaying events never duplicates
a trade. Every book event (snapshots and deltas, WS and REST, every depth) is stored in
``book_updates`` in the order received, so ``id`` order is event order: reading one symbol's rows
``ORDER BY id`` and applying them (a snapshot replaces the book, a delta sets each listed level to
its absolute size, size 0 deletes it) rebuilds its L2 book. ``book_snapshots`` keeps only the
events that are snapshots (``is_snapshot``: WS snapshots after each (re)subscribe, REST interim
views, and every ``book5/20/50`` message). A file from before schema version 4 gets an empty
``book_updates``: its past deltas were never stored.

Bars are kept, not appended: ``bars`` holds one row per (symbol, period, start), replaced only by
a higher revision, or by a complete bar of the same revision (:data:`_UPSERT_BAR`), so a stale
revision written later (after a restart, or a replay) never undoes the final bar. ``ohlcv`` holds
CoinAPI's latest update of each bar: the later message replaces the earlier. ``book_tops`` and
``exrates`` are appended, every event a row.

Threads: the writer calls ``write_batch`` and ``close`` from trio worker threads, one call at a
time, so the connection is opened with ``check_same_thread=False`` and is never used by two
threads at once.
"""

from __future__ import annotations

import os
import sqlite3
from decimal import Decimal
from typing import Final

import attrs
import msgspec

from coinfeed.core.events import (
    BarEvent,
    BookEvent,
    BookTopEvent,
    Event,
    ExrateEvent,
    GapEvent,
    OhlcvEvent,
    PriceLevel,
    QuoteEvent,
    TradeEvent,
)
from coinfeed.sinks.base import SinkSpecError

# Each step is applied once, in order, in its own transaction; never edit a released step,
# append a new one instead.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (  # 1: one table per event kind
        """CREATE TABLE trades (
            uuid TEXT PRIMARY KEY, symbol_id TEXT NOT NULL, sequence INTEGER,
            time_exchange TEXT NOT NULL, time_coinapi TEXT NOT NULL,
            price TEXT NOT NULL, size TEXT NOT NULL, taker_side TEXT NOT NULL,
            source TEXT NOT NULL, received_at TEXT NOT NULL)""",
        """CREATE TABLE quotes (
            id INTEGER PRIMARY KEY, symbol_id TEXT NOT NULL, sequence INTEGER,
            time_exchange TEXT NOT NULL, time_coinapi TEXT NOT NULL,
            ask_price TEXT NOT NULL, ask_size TEXT NOT NULL,
            bid_price TEXT NOT NULL, bid_size TEXT NOT NULL,
            source TEXT NOT NULL, received_at TEXT NOT NULL)""",
        """CREATE TABLE book_snapshots (
            id INTEGER PRIMARY KEY, symbol_id TEXT NOT NULL, depth TEXT NOT NULL,
            sequence INTEGER, time_exchange TEXT NOT NULL,
            asks TEXT NOT NULL, bids TEXT NOT NULL,
            source TEXT NOT NULL, received_at TEXT NOT NULL)""",
        """CREATE TABLE gaps (
            id INTEGER PRIMARY KEY, data_type TEXT NOT NULL, symbol_id TEXT NOT NULL,
            reason TEXT NOT NULL, missing INTEGER, recovery TEXT NOT NULL,
            status TEXT NOT NULL, received_at TEXT NOT NULL)""",
    ),
    (  # 2: time-range reads per symbol
        "CREATE INDEX trades_symbol_time ON trades (symbol_id, time_exchange)",
        "CREATE INDEX quotes_symbol_time ON quotes (symbol_id, time_exchange)",
        "CREATE INDEX book_snapshots_symbol_time ON book_snapshots (symbol_id, time_exchange)",
        "CREATE INDEX gaps_symbol ON gaps (symbol_id, received_at)",
    ),
    (  # 3: a gap's identity and window (the event's id is gap_id: id is the row's key)
        "ALTER TABLE gaps ADD COLUMN gap_id TEXT",
        "ALTER TABLE gaps ADD COLUMN after_sequence INTEGER",
        "ALTER TABLE gaps ADD COLUMN before_sequence INTEGER",
        "ALTER TABLE gaps ADD COLUMN window_start TEXT",
        "ALTER TABLE gaps ADD COLUMN window_end TEXT",
        "CREATE INDEX gaps_gap_id ON gaps (gap_id)",
    ),
    (  # 4: every book event, deltas too, in the order received (id order is event order)
        """CREATE TABLE book_updates (
            id INTEGER PRIMARY KEY, symbol_id TEXT NOT NULL, depth TEXT NOT NULL,
            sequence INTEGER, time_exchange TEXT NOT NULL, is_snapshot INTEGER NOT NULL,
            asks TEXT NOT NULL, bids TEXT NOT NULL,
            source TEXT NOT NULL, received_at TEXT NOT NULL)""",
        "CREATE INDEX book_updates_symbol_time ON book_updates (symbol_id, time_exchange)",
    ),
    (  # 5: coinfeed's bars, the regular top-of-book series, CoinAPI's bars and exchange rates
        """CREATE TABLE bars (
            symbol_id TEXT NOT NULL, period_id TEXT NOT NULL, time_period_start TEXT NOT NULL,
            time_period_end TEXT NOT NULL, time_open TEXT NOT NULL, time_close TEXT NOT NULL,
            open TEXT NOT NULL, high TEXT NOT NULL, low TEXT NOT NULL, close TEXT NOT NULL,
            volume TEXT NOT NULL, trades_count INTEGER NOT NULL, revision INTEGER NOT NULL,
            complete INTEGER NOT NULL, received_at TEXT NOT NULL,
            PRIMARY KEY (symbol_id, period_id, time_period_start))""",
        """CREATE TABLE book_tops (
            id INTEGER PRIMARY KEY, symbol_id TEXT NOT NULL, depth INTEGER NOT NULL,
            time TEXT NOT NULL, sequence INTEGER, asks TEXT NOT NULL, bids TEXT NOT NULL,
            received_at TEXT NOT NULL)""",
        "CREATE INDEX book_tops_symbol_time ON book_tops (symbol_id, time)",
        """CREATE TABLE ohlcv (
            symbol_id TEXT NOT NULL, sequence INTEGER NOT NULL, period_id TEXT,
            time_period_start TEXT NOT NULL, time_period_end TEXT NOT NULL,
            time_open TEXT, time_close TEXT, price_open TEXT, price_high TEXT, price_low TEXT,
            price_close TEXT, volume_traded TEXT NOT NULL, trades_count INTEGER NOT NULL,
            received_at TEXT NOT NULL)""",
        # NULLs never conflict in a UNIQUE index, so a bar without period_id is keyed as '';
        # its end then tells a 1MIN bar from a 1HRS one that starts at the same time (for a
        # named period the end follows from the start). Symbol and start lead, so the index
        # also serves a symbol's time-range reads.
        """CREATE UNIQUE INDEX ohlcv_bar
            ON ohlcv (symbol_id, time_period_start, ifnull(period_id, ''), time_period_end)""",
        """CREATE TABLE exrates (
            id INTEGER PRIMARY KEY, symbol_id TEXT NOT NULL, asset_id_base TEXT NOT NULL,
            asset_id_quote TEXT NOT NULL, rate_type TEXT, time TEXT NOT NULL,
            rate TEXT NOT NULL, received_at TEXT NOT NULL)""",
        "CREATE INDEX exrates_symbol_time ON exrates (symbol_id, time)",
    ),
)

_INSERT_TRADE: Final = (
    "INSERT OR IGNORE INTO trades (uuid, symbol_id, sequence, time_exchange, time_coinapi,"
    " price, size, taker_side, source, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_QUOTE: Final = (
    "INSERT INTO quotes (symbol_id, sequence, time_exchange, time_coinapi, ask_price, ask_size,"
    " bid_price, bid_size, source, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_BOOK: Final = (
    "INSERT INTO book_snapshots (symbol_id, depth, sequence, time_exchange, asks, bids, source,"
    " received_at) VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_BOOK_UPDATE: Final = (
    "INSERT INTO book_updates (symbol_id, depth, sequence, time_exchange, is_snapshot, asks, bids,"
    " source, received_at) VALUES (?,?,?,?,?,?,?,?,?)"
)
_INSERT_GAP: Final = (
    "INSERT INTO gaps (data_type, symbol_id, reason, missing, recovery, status, received_at,"
    " gap_id, after_sequence, before_sequence, window_start, window_end)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_BOOK_TOP: Final = (
    "INSERT INTO book_tops (symbol_id, depth, time, sequence, asks, bids, received_at)"
    " VALUES (?,?,?,?,?,?,?)"
)
_INSERT_EXRATE: Final = (
    "INSERT INTO exrates (symbol_id, asset_id_base, asset_id_quote, rate_type, time, rate,"
    " received_at) VALUES (?,?,?,?,?,?,?)"
)


def _upsert(table: str, columns: str, key: str, *, when: str = "") -> str:
    """An ``INSERT`` of one row of ``columns`` (comma-separated) that overwrites the row with the
    same ``key`` instead, when there is one (and only if ``when`` holds for it)."""
    names = [name.strip() for name in columns.split(",")]
    overwrite = ", ".join(f"{name} = excluded.{name}" for name in names)
    condition = f" WHERE {when}" if when else ""
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {overwrite}{condition}"
    )


_UPSERT_BAR: Final = _upsert(
    "bars",
    "symbol_id, period_id, time_period_start, time_period_end, time_open, time_close, open, high,"
    " low, close, volume, trades_count, revision, complete, received_at",
    key="symbol_id, period_id, time_period_start",
    # The highest revision is the final bar. An equal revision with other content comes from
    # another process (each numbers a bar's re-emissions on its own): a complete bar beats an
    # incomplete one, else the stored row stays, so a replayed bar changes nothing.
    when="(excluded.revision, excluded.complete) > (bars.revision, bars.complete)",
)
"""Keeps the row of the highest (``revision``, ``complete``) of each bar."""
_UPSERT_OHLCV: Final = _upsert(
    "ohlcv",
    "symbol_id, sequence, period_id, time_period_start, time_period_end, time_open, time_close,"
    " price_open, price_high, price_low, price_close, volume_traded, trades_count, received_at",
    key="symbol_id, time_period_start, ifnull(period_id, ''), time_period_end",  # ohlcv_bar
)
"""The later update of a CoinAPI bar replaces the earlier (arrival order: CoinAPI's sequence
restarts with each connection, so it cannot say which is newer)."""

_levels_encoder: Final = msgspec.json.Encoder(decimal_format="string")

Row = tuple[object, ...]


def schema_version(conn: sqlite3.Connection) -> int:
    """How many migration steps this database has applied (0 for a new file)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS) -> int:
    """Apply the steps the database has not seen yet, each in one transaction; return version."""
    version = schema_version(conn)
    if version > len(migrations):
        raise SinkSpecError(
            f"database schema version {version} is newer than this coinfeed knows "
            f"({len(migrations)}): upgrade coinfeed or use another file"
        )
    for number, step in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in step:
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed) and migrate a coinfeed database, WAL + synchronous=NORMAL.

    If SQLite cannot open or write it and the directory or the file says why (missing, not a
    directory, not writable), the error says that instead of "unable to open database file".
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.OperationalError as exc:
        reason = _open_failure(path)
        if reason is None:
            raise
        raise sqlite3.OperationalError(reason) from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # creates the -wal and -shm files beside it
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn)
    except sqlite3.OperationalError as exc:
        conn.close()
        reason = _open_failure(path)
        if reason is None:
            raise
        raise sqlite3.OperationalError(reason) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _open_failure(path: str) -> str | None:
    """Why SQLite could not open or write ``path``, if its directory or the file says so.

    Checked only after SQLite failed, so nothing SQLite could open is refused. ``os.access``
    asks the kernel with this process's ids (root may write where the mode bits say no).
    """
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing!r} is a file, not a directory: choose a path in a directory"
    if existing != directory:
        return f"directory {directory!r} does not exist: create it, or choose another path"
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"directory {directory!r} is not writable by this user (SQLite creates the "
            "database and its -wal and -shm files there): make it writable, or use another one"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return f"file {path!r} is not readable and writable by this user"
    return None


def _levels(levels: list[PriceLevel]) -> str:
    return _levels_encoder.encode(levels).decode()


def _text(value: Decimal | None) -> str | None:
    """Exact text of a nullable number (CoinAPI's bar of a period without trades has none)."""
    return None if value is None else str(value)


def _trade_row(e: TradeEvent) -> Row:
    return (e.uuid, e.symbol_id, e.sequence, e.time_exchange, e.time_coinapi,
            str(e.price), str(e.size), e.taker_side, e.source, e.received_at)  # fmt: skip


def _quote_row(e: QuoteEvent) -> Row:
    return (e.symbol_id, e.sequence, e.time_exchange, e.time_coinapi, str(e.ask_price),
            str(e.ask_size), str(e.bid_price), str(e.bid_size), e.source,
            e.received_at)  # fmt: skip


def _book_update_row(e: BookEvent, asks: str, bids: str) -> Row:
    return (e.symbol_id, e.depth, e.sequence, e.time_exchange, int(e.is_snapshot), asks, bids,
            e.source, e.received_at)  # fmt: skip


def _book_snapshot_row(e: BookEvent, asks: str, bids: str) -> Row:
    return (e.symbol_id, e.depth, e.sequence, e.time_exchange, asks, bids, e.source,
            e.received_at)  # fmt: skip


def _bar_row(e: BarEvent) -> Row:
    return (e.symbol_id, e.period_id, e.time_period_start, e.time_period_end, e.time_open,
            e.time_close, str(e.open), str(e.high), str(e.low), str(e.close), str(e.volume),
            e.trades_count, e.revision, int(e.complete), e.received_at)  # fmt: skip


def _book_top_row(e: BookTopEvent) -> Row:
    return (e.symbol_id, e.depth, e.time, e.sequence, _levels(e.asks), _levels(e.bids),
            e.received_at)  # fmt: skip


def _ohlcv_row(e: OhlcvEvent) -> Row:
    return (e.symbol_id, e.sequence, e.period_id, e.time_period_start, e.time_period_end,
            e.time_open, e.time_close, _text(e.price_open), _text(e.price_high),
            _text(e.price_low), _text(e.price_close), str(e.volume_traded), e.trades_count,
            e.received_at)  # fmt: skip


def _exrate_row(e: ExrateEvent) -> Row:
    return (e.symbol_id, e.asset_id_base, e.asset_id_quote, e.rate_type, e.time, str(e.rate),
            e.received_at)  # fmt: skip


@attrs.define(slots=True, eq=False)
class SqliteSink:
    """Writes each batch in one transaction; see the module docstring for tables and threads."""

    name: str
    _conn: sqlite3.Connection
    blocking: bool = True
    # Binding errors say "this row cannot be stored", unlike a locked or full database.
    permanent_errors: tuple[type[Exception], ...] = (
        sqlite3.DataError,
        sqlite3.IntegrityError,
        sqlite3.InterfaceError,
    )

    @classmethod
    def open(cls, path: str) -> SqliteSink:
        return cls(f"sqlite:{path}", connect(path))

    def write_batch(self, events: list[Event]) -> None:
        trades: list[Row] = []
        quotes: list[Row] = []
        books: list[Row] = []
        book_updates: list[Row] = []
        gaps: list[Row] = []
        bars: list[Row] = []
        book_tops: list[Row] = []
        ohlcvs: list[Row] = []
        exrates: list[Row] = []
        for e in events:
            if isinstance(e, TradeEvent):
                trades.append(_trade_row(e))
            elif isinstance(e, QuoteEvent):
                quotes.append(_quote_row(e))
            elif isinstance(e, BookEvent):
                asks, bids = _levels(e.asks), _levels(e.bids)
                book_updates.append(_book_update_row(e, asks, bids))
                if e.is_snapshot:
                    books.append(_book_snapshot_row(e, asks, bids))
            elif isinstance(e, GapEvent):
                gaps.append((e.data_type, e.symbol_id, e.reason, e.missing, e.recovery,
                             e.status, e.received_at, e.id, e.after_sequence,
                             e.before_sequence, e.window_start, e.window_end))  # fmt: skip
            elif isinstance(e, BarEvent):
                bars.append(_bar_row(e))
            elif isinstance(e, BookTopEvent):
                book_tops.append(_book_top_row(e))
            elif isinstance(e, OhlcvEvent):
                ohlcvs.append(_ohlcv_row(e))
            elif isinstance(e, ExrateEvent):
                exrates.append(_exrate_row(e))
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for sql, rows in (
                (_INSERT_TRADE, trades),
                (_INSERT_QUOTE, quotes),
                (_INSERT_BOOK, books),
                (_INSERT_BOOK_UPDATE, book_updates),
                (_INSERT_GAP, gaps),
                # executemany runs the rows in order: of two updates of one bar in a batch,
                # the later is applied last, as if it had come in the next batch.
                (_UPSERT_BAR, bars),
                (_INSERT_BOOK_TOP, book_tops),
                (_UPSERT_OHLCV, ohlcvs),
                (_INSERT_EXRATE, exrates),
            ):
                if rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
