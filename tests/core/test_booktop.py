"""BookTops: interval snapshots of synced books, at the multiples of the interval."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coinfeed.core.book import Books
from coinfeed.core.booktop import BookTops, SnapshotSchedule, parse_schedule
from coinfeed.core.events import BookTopEvent, Event
from coinfeed.core.protocol import levels

A, B = "BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_ETH_USD"
T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC).timestamp()


def books_with_a_synced() -> Books:
    books = Books()
    book = books.get_or_create(A)
    book.apply_snapshot(
        levels(
            [
                (Decimal("101"), Decimal("1")),
                (Decimal("102"), Decimal("2")),
                (Decimal("103"), Decimal("3")),
            ]
        ),
        levels([(Decimal("100"), Decimal("4")), (Decimal("99"), Decimal("5"))]),
        7,
    )
    books.get_or_create(B)  # no snapshot yet
    return books


def tops(events: list[Event]) -> list[BookTopEvent]:
    return [event for event in events if isinstance(event, BookTopEvent)]


def test_snapshots_come_at_each_multiple_of_the_interval_with_the_top_levels() -> None:
    books = books_with_a_synced()
    snapshots = BookTops((SnapshotSchedule(2, 1000),), (A, B))
    out: list[Event] = []
    snapshots.emit_due(T0 + 0.3, books, "r", out)  # the first call: moments before it are not ours
    assert out == [] and snapshots.next_due == T0 + 1
    snapshots.emit_due(T0 + 0.9, books, "r", out)
    assert out == []
    snapshots.emit_due(T0 + 1.05, books, "r", out)
    (top,) = tops(out)
    assert (top.symbol_id, top.depth, top.sequence, top.time) == (A, 2, 7, "2026-12-06T12:00:01Z")
    assert top.asks == [(Decimal("101"), Decimal("1")), (Decimal("102"), Decimal("2"))]
    assert top.bids == [(Decimal("100"), Decimal("4")), (Decimal("99"), Decimal("5"))]
    assert top.asks == books.get(A).top(2)[0]  # type: ignore[union-attr]
    assert snapshots.skipped == {"unsynced": 1, "behind": 0}


def test_moments_missed_while_held_up_are_counted_and_only_the_latest_is_emitted() -> None:
    books = books_with_a_synced()
    snapshots = BookTops((SnapshotSchedule(1, 500),), (A,))
    out: list[Event] = []
    snapshots.emit_due(T0, books, "r", out)
    snapshots.emit_due(T0 + 2.2, books, "r", out)  # moments 0.5, 1.0, 1.5 and 2.0 passed
    assert [t.time for t in tops(out)] == ["2026-12-06T12:00:02Z"]
    assert snapshots.skipped["behind"] == 3


def test_several_schedules_run_side_by_side() -> None:
    books = books_with_a_synced()
    snapshots = BookTops((SnapshotSchedule(1, 1000), SnapshotSchedule(3, 250)), (A,))
    out: list[Event] = []
    snapshots.emit_due(T0, books, "r", out)
    now = T0
    while now < T0 + 1.0:
        now = snapshots.next_due
        snapshots.emit_due(now, books, "r", out)
    assert [(t.depth, t.time[11:]) for t in tops(out)] == [
        (3, "12:00:00.250000Z"), (3, "12:00:00.500000Z"), (3, "12:00:00.750000Z"),
        (1, "12:00:01Z"), (3, "12:00:01Z"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "depth", "interval_ms"),
    [("10@1s", 10, 1000), ("50@500ms", 50, 500), ("1@1m", 1, 60_000), ("5@0.5s", 5, 500)],
)
def test_schedules(text: str, depth: int, interval_ms: int) -> None:
    assert parse_schedule(text) == SnapshotSchedule(depth, interval_ms)


@pytest.mark.parametrize("text", ["10", "@1s", "0@1s", "1001@1s", "10@50ms", "10@1.5ms", "10@1d"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"DEPTH@INTERVAL|depth|interval"):
        parse_schedule(text)
