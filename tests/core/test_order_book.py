"""OrderBook and Books: snapshot/update rules, states, reads, and a naive reference model."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfeed.core.book import BookNotSyncedError, Books, BookState, OrderBook
from coinfeed.core.protocol import Level


def lv(price: str, size: str) -> Level:
    return Level(Decimal(price), Decimal(size))


def text_pairs(pairs: list[tuple[Decimal, Decimal]]) -> list[tuple[str, str]]:
    return [(str(price), str(size)) for price, size in pairs]


@pytest.fixture
def synced() -> OrderBook:
    book = OrderBook("BITSTAMP_SPOT_BTC_USD")
    book.apply_snapshot(
        [lv("456.35", "123"), lv("456.36", "23"), lv("456.40", "1")],
        [lv("456.10", "42"), lv("456.09", "5")],
        sequence=10,
    )
    return book


def test_new_book_has_no_snapshot_and_rejects_updates() -> None:
    book = OrderBook("S")
    assert book.state is BookState.NO_SNAPSHOT
    assert (book.sequence, book.level_count, book.top(5)) == (None, 0, ([], []))
    with pytest.raises(BookNotSyncedError, match="S: update with sequence 1 needs a snapshot"):
        book.apply_update([lv("1", "1")], [], sequence=1)
    assert book.level_count == 0


def test_snapshot_syncs_the_book_and_orders_both_sides_best_first(synced: OrderBook) -> None:
    assert synced.state is BookState.SYNCED
    assert synced.sequence == 10
    assert synced.level_count == 5
    asks, bids = synced.top(10)
    assert text_pairs(asks) == [("456.35", "123"), ("456.36", "23"), ("456.40", "1")]
    assert text_pairs(bids) == [("456.10", "42"), ("456.09", "5")]
    assert synced.top(1) == ([(Decimal("456.35"), Decimal(123))], [(Decimal("456.10"), 42)])
    assert synced.best_ask() == (Decimal("456.35"), Decimal(123))
    assert synced.best_bid() == (Decimal("456.10"), Decimal(42))


def test_update_sets_absolute_sizes_adds_levels_and_deletes_with_size_zero(
    synced: OrderBook,
) -> None:
    synced.apply_update(
        [lv("456.35", "0"), lv("456.36", "7"), lv("456.30", "2")],
        [lv("456.09", "0.000"), lv("456.20", "3")],
        sequence=11,
    )
    asks, bids = synced.top(10)
    assert text_pairs(asks) == [("456.30", "2"), ("456.36", "7"), ("456.40", "1")]
    assert text_pairs(bids) == [("456.20", "3"), ("456.10", "42")]
    assert synced.sequence == 11
    assert synced.level_count == 5


def test_deleting_an_absent_level_is_harmless(synced: OrderBook) -> None:
    before = synced.top(10)
    synced.apply_update([lv("999", "0")], [lv("1", "0")], sequence=11)
    assert synced.top(10) == before
    assert synced.sequence == 11


def test_snapshot_ignores_zero_size_levels_and_replaces_everything(synced: OrderBook) -> None:
    synced.apply_snapshot([lv("500", "0"), lv("501", "1")], [lv("400", "0")], sequence=3)
    assert synced.top(10) == ([(Decimal(501), Decimal(1))], [])
    assert synced.best_bid() is None
    assert synced.sequence == 3


def test_equal_prices_are_one_level_keeping_the_first_price_text(synced: OrderBook) -> None:
    synced.apply_update([lv("456.3500", "9.50")], [lv("456.1", "1")], sequence=11)
    asks, bids = synced.top(1)
    assert text_pairs(asks) == [("456.35", "9.50")]
    assert text_pairs(bids) == [("456.10", "1")]
    assert synced.level_count == 5
    synced.apply_update([lv("456.350", "0")], [lv("4.561E+2", "0")], sequence=12)
    assert synced.best_ask() == (Decimal("456.36"), Decimal(23))
    assert synced.best_bid() == (Decimal("456.09"), Decimal(5))
    assert synced.level_count == 3
    synced.apply_update([lv("456.3500", "1")], [], sequence=13)  # a new level: its text
    assert text_pairs(synced.top(1)[0]) == [("456.3500", "1")]


def test_a_snapshot_with_one_price_twice_keeps_one_level() -> None:
    book = OrderBook("S")
    book.apply_snapshot([lv("1.0", "1"), lv("1.00", "2"), lv("100", "3"), lv("1E+2", "4")], [], 1)
    assert text_pairs(book.top(5)[0]) == [("1.0", "2"), ("100", "4")]


def test_price_keys_survive_a_caller_changing_the_decimal_context() -> None:
    book = OrderBook("S")
    book.apply_snapshot([lv("1.0000000001", "1"), lv("1.0000000002", "1")], [], 1)
    with decimal.localcontext(decimal.Context(prec=3)):
        book.apply_update([lv("1.0000000003", "1")], [], 2)
    assert book.level_count == 3


def test_negative_zero_is_the_same_level_as_zero() -> None:
    book = OrderBook("S")
    book.apply_snapshot([], [lv("0.00", "1")], 1)
    book.apply_update([], [lv("-0", "0")], 2)
    assert book.level_count == 0


def test_crossed_book_is_kept_as_sent() -> None:
    book = OrderBook("S")
    book.apply_snapshot([lv("100", "1")], [lv("101", "1")], sequence=1)
    book.apply_update([], [lv("102", "2")], sequence=2)
    assert book.best_ask() == (Decimal(100), Decimal(1))
    assert book.best_bid() == (Decimal(102), Decimal(2))
    assert book.state is BookState.SYNCED


def test_stale_book_keeps_levels_rejects_updates_until_a_new_snapshot(synced: OrderBook) -> None:
    levels_before = synced.top(10)
    synced.mark_out_of_sync()
    assert synced.state is BookState.OUT_OF_SYNC
    assert synced.top(10) == levels_before
    with pytest.raises(BookNotSyncedError, match="state is stale"):
        synced.apply_update([lv("1", "1")], [], sequence=12)
    assert synced.top(10) == levels_before
    synced.apply_snapshot([lv("600", "1")], [lv("599", "1")], sequence=1)
    assert synced.state is BookState.SYNCED
    assert synced.top(10) == ([(Decimal(600), Decimal(1))], [(Decimal(599), Decimal(1))])


def test_mark_stale_leaves_a_book_without_snapshot_as_it_is() -> None:
    book = OrderBook("S")
    book.mark_out_of_sync()
    assert book.state is BookState.NO_SNAPSHOT


def test_reset_empties_the_book_and_waits_for_a_snapshot(synced: OrderBook) -> None:
    synced.reset()
    assert synced.state is BookState.NO_SNAPSHOT
    assert (synced.sequence, synced.level_count, synced.top(3)) == (None, 0, ([], []))
    with pytest.raises(BookNotSyncedError):
        synced.apply_update([lv("1", "1")], [], sequence=11)


def test_top_rejects_a_negative_depth(synced: OrderBook) -> None:
    with pytest.raises(ValueError, match="n >= 0"):
        synced.top(-1)
    assert synced.top(0) == ([], [])


def test_books_registry_creates_once_resets_all_and_reports_states() -> None:
    books = Books()
    a = books.get_or_create("A")
    assert books.get_or_create("A") is a
    assert books.get("B") is None
    b = books.get_or_create("B")
    a.apply_snapshot([lv("1", "1")], [], sequence=1)
    b.apply_snapshot([lv("2", "1")], [], sequence=1)
    b.mark_out_of_sync()
    assert books.states() == {"A": BookState.SYNCED, "B": BookState.OUT_OF_SYNC}
    # Only the books out of sync, and a book not created yet has no snapshot.
    assert books.unsynced_of(["A", "B", "C"]) == {
        "B": BookState.OUT_OF_SYNC,
        "C": BookState.NO_SNAPSHOT,
    }
    assert (len(books), "A" in books, "C" in books) == (2, True, False)
    assert {book.symbol_id for book in books} == {"A", "B"}
    books.reset_all()
    assert books.states() == {"A": BookState.NO_SNAPSHOT, "B": BookState.NO_SNAPSHOT}
    assert a.level_count == b.level_count == 0


# --- reference model --------------------------------------------------------------------------

# Prices on a small tick grid, written with 2..4 decimals so "1.5", "1.50", "1.500" meet.
prices = st.builds(
    lambda tick, extra: Decimal(tick * 10**extra).scaleb(-(2 + extra)),
    st.integers(0, 15),
    st.integers(0, 2),
)
sizes = st.sampled_from(["0", "0.00", "1", "2.5", "0.001", "10.000"]).map(Decimal)
sides = st.lists(st.builds(Level, prices, sizes), max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("snapshot"), sides, sides),
        st.tuples(st.just("update"), sides, sides),
        st.tuples(st.just("update"), sides, sides),
        st.tuples(st.just("update"), sides, sides),
        st.tuples(st.just("stale"), st.just([]), st.just([])),
        st.tuples(st.just("reset"), st.just([]), st.just([])),
    ),
    max_size=40,
)


class ReferenceBook:
    """The obvious implementation: dicts keyed by Decimal value, sorted on every read."""

    def __init__(self) -> None:
        self.state = BookState.NO_SNAPSHOT
        self.asks: dict[Decimal, Level] = {}
        self.bids: dict[Decimal, Level] = {}
        self.sequence: int | None = None

    def apply(self, operation: str, asks: list[Level], bids: list[Level], sequence: int) -> None:
        if operation in ("snapshot", "update"):
            if operation == "snapshot":
                self.asks, self.bids = {}, {}
                asks = [level for level in asks if level.size != 0]
                bids = [level for level in bids if level.size != 0]
                self.state = BookState.SYNCED
            for side, new in ((self.asks, asks), (self.bids, bids)):
                for level in new:
                    if level.size == 0:
                        side.pop(level.price, None)
                    elif level.price in side:  # the first price text, the latest size
                        side[level.price] = Level(side[level.price].price, level.size)
                    else:
                        side[level.price] = level
            self.sequence = sequence
        elif operation == "stale":
            if self.state is BookState.SYNCED:
                self.state = BookState.OUT_OF_SYNC
        else:
            self.asks, self.bids = {}, {}
            self.state, self.sequence = BookState.NO_SNAPSHOT, None

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        asks = [(lv.price, lv.size) for _, lv in sorted(self.asks.items())[:n]]
        bids = [(lv.price, lv.size) for _, lv in sorted(self.bids.items(), reverse=True)[:n]]
        return text_pairs(asks), text_pairs(bids)


@settings(max_examples=200, deadline=None)
@given(operations, st.lists(st.integers(0, 8), min_size=1, max_size=5))
def test_book_matches_a_naive_reference_model(
    ops: list[tuple[str, list[Level], list[Level]]], depths: list[int]
) -> None:
    book = OrderBook("S")
    reference = ReferenceBook()
    for sequence, (operation, asks, bids) in enumerate(ops, start=1):
        if operation == "update" and reference.state is not BookState.SYNCED:
            with pytest.raises(BookNotSyncedError):
                book.apply_update(asks, bids, sequence)
        elif operation == "update":
            book.apply_update(asks, bids, sequence)
        elif operation == "snapshot":
            book.apply_snapshot(asks, bids, sequence)
        elif operation == "stale":
            book.mark_out_of_sync()
        else:
            book.reset()
        if not (operation == "update" and reference.state is not BookState.SYNCED):
            reference.apply(operation, asks, bids, sequence)
        assert book.state is reference.state
        assert book.sequence == reference.sequence
        assert book.level_count == len(reference.asks) + len(reference.bids)
        depth = depths[sequence % len(depths)]
        asks_top, bids_top = book.top(depth)
        assert (text_pairs(asks_top), text_pairs(bids_top)) == reference.top(depth)
        asks_all, bids_all = reference.top(1)
        assert text_pairs([book.best_ask()] if book.best_ask() else []) == asks_all
        assert text_pairs([book.best_bid()] if book.best_bid() else []) == bids_all
