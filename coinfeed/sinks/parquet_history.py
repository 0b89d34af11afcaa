"""Reading the Parquet sink's history back: the L2 book of a symbol at an instant.

How this works: the book of ``SYMBOL_ID`` at ``at`` is what coinfeed's own book held after the
last event it received at or before ``at``. This reads the symbol's ``book`` rows (the
incremental ``book`` stream, as received over the WebSocket) and its ``book`` gap events, from
the latest date holding a snapshot up to ``at``, in the order the sink took them (file name,
then ``ingest_seq``), and applies them as the live service did: a snapshot replaces the book, an
update sets absolute sizes, a gap puts the book out of sync (``stale``; coinfeed emitted no
updates then), and the gap of a reconnect empties it until the next snapshot. REST interim
views (``source = 'rest'``) never changed the live book, so they do not change this one.

A ``stale`` book's levels are those it had when it went out of sync; after a reconnect while it
was already stale, the live service had emptied it, which its events do not show.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coinfeed.core.book import BookState, OrderBook, PriceSize

_BOOK_COLUMNS = ["depth", "sequence", "is_snapshot", "asks", "bids", "source", "received_at",
                 "ingest_seq"]  # fmt: skip
_GAP_COLUMNS = ["data_type", "reason", "status", "received_at", "ingest_seq"]
_SNAPSHOT_PROBE = ["depth", "is_snapshot", "source", "received_at"]


class HistoryError(Exception):
    """The directory holds no history for the question (the message says what is missing)."""


class _Level(NamedTuple):
    price: Decimal
    size: Decimal


@attrs.frozen
class BookAt:
    """A book rebuilt from the history, shaped like ``/api/books/{symbol_id}``'s answer."""

    symbol_id: str
    at: datetime
    state: BookState
    sequence: int | None
    updated_at: datetime | None
    """``received_at`` of the last row that changed the book (None: nothing before ``at``)."""
    asks: list[PriceSize]
    bids: list[PriceSize]

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol_id": self.symbol_id,
            "at": _iso(self.at),
            "state": self.state.value,
            "sequence": self.sequence,
            "updated_at": _iso(self.updated_at) if self.updated_at else None,
            "asks": [[str(price), str(size)] for price, size in self.asks],
            "bids": [[str(price), str(size)] for price, size in self.bids],
        }


def book_at(directory: Path, symbol_id: str, at: datetime, depth: int | None = None) -> BookAt:
    """The book of ``symbol_id`` after the last event received at or before ``at`` (UTC), with
    at most ``depth`` levels per side (all when None)."""
    at = at.astimezone(UTC)
    book_dates = _dates(directory / "kind=book", symbol_id, at.date())
    if not book_dates:
        raise HistoryError(
            f"no book history for {symbol_id!r} in {str(directory)!r} up to {_iso(at)}"
        )
    # The latest date with a snapshot before `at` is where the book starts from.
    limit = pa.scalar(at, pa.timestamp("ns", tz="UTC"))
    first = 0
    for index in range(len(book_dates) - 1, -1, -1):
        table = _read(directory, "book", book_dates[index], symbol_id, _SNAPSHOT_PROBE)
        if table is not None and _has_snapshot_before(table, limit):
            first = index
            break
    start = book_dates[first]
    # Gap events too from that date on, also of days without book rows (a reconnect).
    gap_dates = _dates(directory / "kind=gap", symbol_id, at.date())
    reads = [("book", day, _BOOK_COLUMNS) for day in book_dates[first:]]
    reads += [("gap", day, _GAP_COLUMNS) for day in gap_dates if day >= start]
    rows = [
        table.filter(pc.less_equal(table["received_at"], limit))
        for kind, day, columns in reads
        if (table := _read(directory, kind, day, symbol_id, columns, tagged=kind)) is not None
    ]
    book = OrderBook(symbol_id)
    updated_at: datetime | None = None
    for row in _in_order(rows):
        if _apply(book, row):
            updated_at = row["received_at"]
    asks, bids = book.top(depth if depth is not None else book.level_count)
    return BookAt(symbol_id, at, book.state, book.sequence, updated_at, asks, bids)


def _has_snapshot_before(table: pa.Table, limit: pa.Scalar) -> bool:
    mask = pc.and_(
        pc.and_(pc.equal(table["depth"], "book"), pc.equal(table["source"], "ws")),
        pc.and_(table["is_snapshot"], pc.less_equal(table["received_at"], limit)),
    )
    return bool(pc.any(mask).as_py())


def _apply(book: OrderBook, row: dict[str, Any]) -> bool:
    """Apply one history row as the live service did; True if it changed the book."""
    if row["_kind"] == "gap":
        if row["data_type"] != "book":
            return False
        if row["reason"] == "reconnect" and row["status"] == "pending":
            book.reset()
            return True
        if row["status"] in ("pending", "unrecovered") and book.state is BookState.SYNCED:
            book.mark_out_of_sync()
            return True
        return False
    if row["depth"] != "book" or row["source"] != "ws":
        return False
    asks = [_Level(Decimal(level["price"]), Decimal(level["size"])) for level in row["asks"]]
    bids = [_Level(Decimal(level["price"]), Decimal(level["size"])) for level in row["bids"]]
    if row["is_snapshot"]:
        book.apply_snapshot(asks, bids, row["sequence"])
        return True
    if book.state is not BookState.SYNCED:
        return False  # never written by coinfeed; a hand-made file could hold one
    book.apply_update(asks, bids, row["sequence"])
    return True


def _in_order(tables: list[pa.Table]) -> Iterator[dict[str, Any]]:
    """Rows of every table in the order the sink took them: file name, then ``ingest_seq``."""
    if not tables:
        return
    columns = sorted({name for table in tables for name in table.column_names})
    aligned = [_with_columns(table, columns, tables) for table in tables]
    merged = pa.concat_tables(aligned).sort_by(
        [("_file", "ascending"), ("ingest_seq", "ascending")]
    )
    yield from merged.to_pylist()


def _type_of(tables: list[pa.Table], name: str) -> pa.DataType:
    for table in tables:
        if name in table.column_names:
            return table.schema.field(name).type
    raise KeyError(name)  # pragma: no cover - names come from the tables


def _with_columns(table: pa.Table, columns: list[str], tables: list[pa.Table]) -> pa.Table:
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, _type_of(tables, name)))
    return table.select(columns)


def _dates(kind_dir: Path, symbol_id: str, until: date) -> list[str]:
    """The ``date=`` partitions up to ``until`` that hold files of ``symbol_id``, ascending."""
    if not kind_dir.is_dir():
        return []
    folder = f"symbol_id={quote(symbol_id, safe='')}"
    found = []
    for entry in kind_dir.iterdir():
        name = entry.name
        if name.startswith("date=") and name[5:] <= until.isoformat() and (entry / folder).is_dir():
            found.append(name[5:])
    return sorted(found)


def _read(
    directory: Path,
    kind: str,
    day: str,
    symbol_id: str,
    columns: list[str],
    *,
    tagged: str | None = None,
) -> pa.Table | None:
    """The rows of one partition (files in name order), with ``_file`` and ``_kind`` columns
    when ``tagged``; None when it has no files."""
    folder = directory / f"kind={kind}" / f"date={day}" / f"symbol_id={quote(symbol_id, safe='')}"
    if not folder.is_dir():
        return None
    tables = []
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path, columns=columns)
        if tagged is not None:
            table = table.append_column("_file", pa.repeat(path.name, table.num_rows))
            table = table.append_column("_kind", pa.repeat(tagged, table.num_rows))
        tables.append(table)
    return pa.concat_tables(tables) if tables else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render(book: BookAt) -> str:
    """The book as a table: asks above (best last), bids below (best first)."""
    sequence = "-" if book.sequence is None else book.sequence
    changed = _iso(book.updated_at) if book.updated_at else "never"
    lines = [
        f"{book.symbol_id} at {_iso(book.at)}: {book.state.value}, sequence {sequence}, "
        f"last change {changed}",
    ]
    if not book.asks and not book.bids:
        lines.append("(no levels)")
        return "\n".join(lines)
    width = max((len(str(p)) for p, _ in [*book.asks, *book.bids]), default=5)
    lines.append(f"{'side':<4}  {'price':>{width}}  size")
    lines.extend(f"{'ask':<4}  {p!s:>{width}}  {s}" for p, s in reversed(book.asks))
    lines.extend(f"{'bid':<4}  {p!s:>{width}}  {s}" for p, s in book.bids)
    return "\n".join(lines)
