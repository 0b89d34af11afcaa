"""Incremental L2 order books (CoinAPI ``book``), sans-I/O.

How this works: each side is a dict from a price key to the size (exact ``Decimal``), plus a dict
from the same key to the price as first seen. A snapshot replaces both sides; an update sets
absolute sizes, and size 0 deletes a level. Top-N reads use a sorted index per side built lazily:
adding or removing a price drops it and the next read sorts the side again. Keeping a bisect
index up to date instead costs more per book message than it saves unless reads come more often
than about once per 30 updates (``scripts/bench_core.py --index-compare``); reads here are
occasional (HTTP, periodic snapshots), so lazy wins.

Prices equal as Decimals are one level (``1.0``, ``1.00`` and ``1E+0``): the key is the text of
the normalized value, the price object kept is the first one seen while the level lives, and the
size is always the latest one sent. Crossed books (best bid >= best ask) are legitimate on CoinAPI
and are kept as sent.
"""

from __future__ import annotations

import decimal
import enum
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Final, Protocol

import attrs

PriceSize = tuple[Decimal, Decimal]
"""One ``(price, size)`` level as returned by reads."""


class LevelLike(Protocol):
    """Anything with exact ``price`` and ``size`` (``coinfeed.core.protocol.Level``)."""

    @property
    def price(self) -> Decimal: ...

    @property
    def size(self) -> Decimal: ...


class BookState(enum.Enum):
    """Whether a book may be published and may take updates. Values match the HTTP contract."""

    NO_SNAPSHOT = "no_snapshot"
    """No snapshot yet on this connection: updates cannot be applied."""
    SYNCED = "synced"
    """A snapshot plus every update since: correct and publishable."""
    OUT_OF_SYNC = "stale"  # the HTTP contract's word; elsewhere "stale" is about stale_after
    """Updates were lost: levels are kept for inspection but must not be published or updated."""


_SYNCED: Final = BookState.SYNCED


class BookNotSyncedError(RuntimeError):
    """An update was applied to a book without a snapshot (a caller bug: check ``state`` first)."""


# Level keys. Hashing a Decimal costs ~400 ns (CPython computes it with modular arithmetic, and
# every decoded price is a new object), as much as decoding the level. The text of the
# normalized value is an exact, canonical key ("1.0", "1.00" -> "1"; "100" -> "1E+2") for about a
# third of that. The context has the largest precision so normalizing never rounds, whatever the
# caller's decimal context; its to_sci_string is str() without the current-context lookup.
# Measured in the full core path, always normalizing beat str() plus a "needs normalizing?" test.
_EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
)
_normalize: Final = _EXACT.normalize
_to_text: Final = _EXACT.to_sci_string


def _price_key(price: Decimal) -> str:
    """Exact canonical text of ``price`` (inlined in ``apply_update``; keep the two in step)."""
    key = _to_text(_normalize(price))
    return "0" if key == "-0" else key  # -0 == 0, but normalizing keeps the sign


def _side_from_snapshot(
    levels: Iterable[LevelLike],
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    sizes: dict[str, Decimal] = {}
    prices: dict[str, Decimal] = {}
    for level in levels:
        size = level.size
        if size:
            key = _price_key(level.price)
            prices.setdefault(key, level.price)
            sizes[key] = size
    return sizes, prices


@attrs.define(slots=True)
class OrderBook:
    """The L2 book of one symbol, kept from a snapshot plus incremental updates.

    ``apply_update`` raises :class:`BookNotSyncedError` unless the book is SYNCED: the processor
    checks :attr:`state` first, so reaching it is a bug that must not silently corrupt the book.
    ``state`` is a plain attribute because it is read once per book message (a property costs
    ~45 ns more); read it, never assign it: ``apply_*``, ``mark_out_of_sync`` and ``reset`` do.
    """

    symbol_id: str
    state: BookState = attrs.field(default=BookState.NO_SNAPSHOT, init=False)
    _sequence: int | None = attrs.field(default=None, init=False)
    # Per side: price key -> size, and price key -> the price as first seen. Keeping the price
    # apart means an update replaces one Decimal, not a whole level (measured ~60 ns/frame).
    _ask_sizes: dict[str, Decimal] = attrs.field(factory=dict, init=False, repr=False)
    _ask_prices: dict[str, Decimal] = attrs.field(factory=dict, init=False, repr=False)
    _bid_sizes: dict[str, Decimal] = attrs.field(factory=dict, init=False, repr=False)
    _bid_prices: dict[str, Decimal] = attrs.field(factory=dict, init=False, repr=False)
    # Price keys sorted best first; None once a price was added or removed since the last read.
    _ask_index: list[str] | None = attrs.field(default=None, init=False, repr=False)
    _bid_index: list[str] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def sequence(self) -> int | None:
        """``sequence`` of the last snapshot or update applied, ``None`` after a reset."""
        return self._sequence

    @property
    def level_count(self) -> int:
        """Number of price levels on both sides together."""
        return len(self._ask_sizes) + len(self._bid_sizes)

    def apply_snapshot(
        self, asks: Iterable[LevelLike], bids: Iterable[LevelLike], sequence: int
    ) -> None:
        """Replace the whole book (levels of size 0 are ignored); the book becomes SYNCED."""
        self._ask_sizes, self._ask_prices = _side_from_snapshot(asks)
        self._bid_sizes, self._bid_prices = _side_from_snapshot(bids)
        self._ask_index = None
        self._bid_index = None
        self._sequence = sequence
        self.state = _SYNCED

    def apply_update(
        self, asks: Iterable[LevelLike], bids: Iterable[LevelLike], sequence: int
    ) -> None:
        """Set each listed level to its absolute size; size 0 deletes it (absent is fine)."""
        if self.state is not _SYNCED:
            raise BookNotSyncedError(
                f"book {self.symbol_id}: update with sequence {sequence} needs a snapshot first "
                f"(state is {self.state.value}); check OrderBook.state before apply_update"
            )
        # The hot path: one loop per side, _price_key inlined.
        sizes = self._ask_sizes
        prices = self._ask_prices
        for level in asks:
            key = _to_text(_normalize(level.price))
            if key == "-0":
                key = "0"
            size = level.size
            if size:
                if key not in sizes:
                    prices[key] = level.price
                    self._ask_index = None
                sizes[key] = size
            elif sizes.pop(key, None) is not None:
                del prices[key]
                self._ask_index = None
        sizes = self._bid_sizes
        prices = self._bid_prices
        for level in bids:
            key = _to_text(_normalize(level.price))
            if key == "-0":
                key = "0"
            size = level.size
            if size:
                if key not in sizes:
                    prices[key] = level.price
                    self._bid_index = None
                sizes[key] = size
            elif sizes.pop(key, None) is not None:
                del prices[key]
                self._bid_index = None
        self._sequence = sequence

    def mark_out_of_sync(self) -> None:
        """Updates were lost: a SYNCED book is now OUT_OF_SYNC (one without a snapshot stays so)."""
        if self.state is _SYNCED:
            self.state = BookState.OUT_OF_SYNC

    def reset(self) -> None:
        """Forget every level and the sequence (new connection): back to NO_SNAPSHOT."""
        self._ask_sizes, self._ask_prices = {}, {}
        self._bid_sizes, self._bid_prices = {}, {}
        self._ask_index = None
        self._bid_index = None
        self._sequence = None
        self.state = BookState.NO_SNAPSHOT

    def _sorted_asks(self) -> list[str]:
        index = self._ask_index
        if index is None:
            prices = self._ask_prices
            index = self._ask_index = sorted(prices, key=prices.__getitem__)
        return index

    def _sorted_bids(self) -> list[str]:
        index = self._bid_index
        if index is None:
            prices = self._bid_prices
            index = self._bid_index = sorted(prices, key=prices.__getitem__, reverse=True)
        return index

    def top(self, n: int) -> tuple[list[PriceSize], list[PriceSize]]:
        """The best ``n`` levels per side: asks ascending, bids descending (whatever the state)."""
        if n < 0:
            raise ValueError(f"top(n) needs n >= 0, got {n}")
        ask_prices, ask_sizes = self._ask_prices, self._ask_sizes
        bid_prices, bid_sizes = self._bid_prices, self._bid_sizes
        return (
            [(ask_prices[key], ask_sizes[key]) for key in self._sorted_asks()[:n]],
            [(bid_prices[key], bid_sizes[key]) for key in self._sorted_bids()[:n]],
        )

    def best_ask(self) -> PriceSize | None:
        """Lowest ask ``(price, size)``, or ``None`` if the ask side is empty."""
        if not self._ask_sizes:
            return None
        key = self._sorted_asks()[0]
        return self._ask_prices[key], self._ask_sizes[key]

    def best_bid(self) -> PriceSize | None:
        """Highest bid ``(price, size)``, or ``None`` if the bid side is empty."""
        if not self._bid_sizes:
            return None
        key = self._sorted_bids()[0]
        return self._bid_prices[key], self._bid_sizes[key]


@attrs.define(slots=True)
class Books:
    """Every incremental book of the process, by symbol_id (bounded by the configured symbols)."""

    _books: dict[str, OrderBook] = attrs.field(factory=dict, init=False)

    def get_or_create(self, symbol_id: str) -> OrderBook:
        """The book of ``symbol_id``, created empty (NO_SNAPSHOT) on first use."""
        try:
            return self._books[symbol_id]
        except KeyError:
            book = self._books[symbol_id] = OrderBook(symbol_id)
            return book

    def get(self, symbol_id: str) -> OrderBook | None:
        """The book of ``symbol_id`` if one exists (HTTP reads must not create books)."""
        return self._books.get(symbol_id)

    def reset_all(self) -> None:
        """New connection: every book goes back to NO_SNAPSHOT and waits for a snapshot."""
        for book in self._books.values():
            book.reset()

    def states(self) -> dict[str, BookState]:
        """symbol_id -> state of every book there is."""
        return {symbol_id: book.state for symbol_id, book in self._books.items()}

    def unsynced_of(self, symbol_ids: Iterable[str]) -> dict[str, BookState]:
        """symbol_id -> state of those of ``symbol_ids`` whose book is not in sync (a book not
        created yet has no snapshot)."""
        books, synced, missing = self._books, BookState.SYNCED, BookState.NO_SNAPSHOT
        unsynced = {}
        for symbol_id in symbol_ids:
            book = books.get(symbol_id)
            if book is None:
                unsynced[symbol_id] = missing
            elif book.state is not synced:
                unsynced[symbol_id] = book.state
        return unsynced

    def __iter__(self) -> Iterator[OrderBook]:
        return iter(self._books.values())

    def __len__(self) -> int:
        return len(self._books)

    def __contains__(self, symbol_id: object) -> bool:
        return symbol_id in self._books
