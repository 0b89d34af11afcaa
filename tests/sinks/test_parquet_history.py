"""coinfeed book: the book coinfeed held at an instant, rebuilt from the Parquet history."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from coinfeed.core.book import BookState
from coinfeed.core.events import BookEvent, Event, GapEvent
from coinfeed.sinks import open_sink
from coinfeed.sinks.parquet_history import HistoryError, book_at, render
from tests.coinfeed_process import child_environment

SYM = "BITSTAMP_SPOT_BTC_USD"


def at(second: int) -> str:
    return f"2026-12-06T14:03:{second:02d}.000000Z"


def when(second: int) -> datetime:
    return datetime(2026, 12, 6, 14, 3, second, tzinfo=UTC)


def book(
    second: int,
    sequence: int | None,
    *,
    snapshot: bool,
    asks: list[tuple[str, str]],
    bids: list[tuple[str, str]] = (),
    source: str = "ws",
) -> BookEvent:  # type: ignore[assignment]
    return BookEvent(
        symbol_id=SYM, depth="book", sequence=sequence, time_exchange=at(second),
        is_snapshot=snapshot, asks=[(Decimal(p), Decimal(s)) for p, s in asks],
        bids=[(Decimal(p), Decimal(s)) for p, s in bids], source=source,  # type: ignore[arg-type]
        received_at=at(second),
    )  # fmt: skip


def book_gap(second: int, reason: str, status: str) -> GapEvent:
    return GapEvent(
        data_type="book", symbol_id=SYM, reason=reason, missing=None,  # type: ignore[arg-type]
        recovery="resubscribe", status=status, received_at=at(second),  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def history(tmp_path: Path) -> Path:
    events: list[Event] = [
        book(1, 10, snapshot=True, asks=[("101.5", "2"), ("102", "1")], bids=[("99.0", "3")]),
        book(2, 11, snapshot=False, asks=[("101.5", "0"), ("101.75", "0.5")]),
        book_gap(3, "sequence", "pending"),
        book(4, None, snapshot=True, asks=[("500", "1")], source="rest"),  # interim view
        book(5, 20, snapshot=True, asks=[("103", "1")], bids=[("98", "1")]),
        book_gap(5, "sequence", "recovered"),
        book_gap(6, "reconnect", "pending"),
    ]
    sink = open_sink(f"parquet:{tmp_path}")
    sink.write_batch(events)
    sink.flush(True)  # type: ignore[attr-defined]
    sink.close()
    return tmp_path


def test_the_book_follows_snapshots_updates_gaps_and_reconnects(history: Path) -> None:
    before = book_at(history, SYM, when(0))
    assert (before.state, before.asks, before.updated_at) == (BookState.NO_SNAPSHOT, [], None)
    assert "(no levels)" in render(before)
    updated = book_at(history, SYM, when(2))
    assert updated.state is BookState.SYNCED and updated.sequence == 11
    assert updated.asks == [(Decimal("101.75"), Decimal("0.5")), (Decimal("102"), Decimal("1"))]
    stale = book_at(history, SYM, when(4))  # the gap at :03; the REST view changes nothing
    assert stale.state is BookState.OUT_OF_SYNC and stale.asks == updated.asks
    resynced = book_at(history, SYM, when(5), depth=1)
    assert (resynced.state, resynced.sequence) == (BookState.SYNCED, 20)
    assert resynced.asks == [(Decimal("103"), Decimal("1"))]
    reconnected = book_at(history, SYM, when(7))
    assert (reconnected.state, reconnected.asks) == (BookState.NO_SNAPSHOT, [])


def test_a_symbol_without_history_is_a_clear_error(history: Path) -> None:
    with pytest.raises(HistoryError, match="no book history for 'NOPE'"):
        book_at(history, "NOPE", when(5))
    done = subprocess.run(
        [sys.executable, "-m", "coinfeed", "book", str(history), "NOPE", "--at", at(5)],
        capture_output=True, text=True, env=child_environment(), check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("coinfeed: error: no book history for 'NOPE'")


def test_the_command_prints_the_book_as_a_table(history: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coinfeed", "book", str(history), SYM,
         "--at", "2026-12-06 14:03:02"],
        capture_output=True, text=True, env=child_environment(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{SYM} at 2026-12-06T14:03:02Z: synced, sequence 11")
    assert [line.split() for line in lines[2:]] == [
        ["ask", "102", "1"], ["ask", "101.75", "0.5"], ["bid", "99.0", "3"],
    ]  # fmt: skip


def test_a_reconnect_on_a_day_without_book_rows_still_empties_the_book(tmp_path: Path) -> None:
    next_day = GapEvent(
        data_type="book", symbol_id=SYM, reason="reconnect", missing=None,
        recovery="resubscribe", status="pending", received_at="2026-12-07T00:00:01.000000Z",
    )  # fmt: skip
    sink = open_sink(f"parquet:{tmp_path}")
    sink.write_batch([book(1, 10, snapshot=True, asks=[("101.5", "2")]), next_day])
    sink.flush(True)  # type: ignore[attr-defined]
    sink.close()
    after = book_at(tmp_path, SYM, datetime(2026, 12, 7, 0, 0, 2, tzinfo=UTC))
    assert (after.state, after.asks) == (BookState.NO_SNAPSHOT, [])
