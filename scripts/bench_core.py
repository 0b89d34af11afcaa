"""Throughput of the sans-I/O core on a realistic, seeded frame mix.

Prints frames/s for (a) decode only (``FrameDecoder.decode``) and (b) the full core path: decode,
``SequenceTracker.observe``, ``OrderBook.apply_*`` for book frames and
``TradeDedup.first_sighting`` for trades, plus the ratio (b)/(a), each the median of several
rounds. The mix: about 55 % ``book`` (a snapshot per symbol first, then updates of 1-5 levels with
some deletes and new levels), 30 % trades, 15 % quotes over 10 symbols. Also the WebSocket framing
cost of the same frames as server text frames cut into 64 KiB reads: coinfeed's
``transport.frames.FrameReader`` against websockets' and wsproto's sans-I/O parsers (the
measurement behind the ``direct`` transport).

    .venv/bin/python scripts/bench_core.py [--frames N] [--rounds R] [--json] [--index-compare]
                                           [--amounts-compare]

``--index-compare`` also times the book's lazy sorted index against a bisect-maintained one on
the same updates, with top-10 reads every N updates (the measurement behind ``coinfeed.core.book``).

``--amounts-compare`` also times the hot path from frame to event line (decode, value check, book
levels, event, encode) written twice: with amounts as ``Decimal``, as coinfeed keeps them, and
kept as their JSON text (``msgspec.Raw``). Both must write the same lines and keep the same books.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coinfeed.core import protocol
from coinfeed.core.book import Books, BookState, LevelLike, OrderBook
from coinfeed.core.book import _normalize as normalize_exactly
from coinfeed.core.book import _price_key as price_key
from coinfeed.core.decoding import FrameDecoder
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.protocol import BookUpdate, Level, Quote, Trade
from coinfeed.core.sequence import OBSERVED_BEHIND, OBSERVED_NEXT, SequenceTracker

SYMBOLS = [
    f"BENCH_SPOT_{base}_USD"
    for base in ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "AVAX", "LINK"]
]
SNAPSHOT_LEVELS = 200  # per side
LADDER = 400  # ticks per side a level can appear on


def _size(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(1, 5_000_000_000)).scaleb(-8)


class _SymbolMarket:
    """Seeded book state of one symbol, so updates touch live levels and deletes hit."""

    def __init__(self, rng: random.Random, symbol_id: str, mid_ticks: int) -> None:
        self.rng = rng
        self.symbol_id = symbol_id
        self.ask_ticks = range(mid_ticks + 1, mid_ticks + 1 + LADDER)
        self.bid_ticks = range(mid_ticks - LADDER, mid_ticks)
        self.asks = set(self.ask_ticks[:SNAPSHOT_LEVELS])
        self.bids = set(self.bid_ticks[-SNAPSHOT_LEVELS:])
        self.sequence = {"book": 0, "trade": 0, "quote": 0}
        self.mid_ticks = mid_ticks

    def next_sequence(self, data_type: str) -> int:
        self.sequence[data_type] += 1
        return self.sequence[data_type]

    @staticmethod
    def price(ticks: int) -> Decimal:
        return Decimal(ticks).scaleb(-2)

    def snapshot(self, stamp: str) -> BookUpdate:
        return BookUpdate(
            symbol_id=self.symbol_id,
            sequence=self.next_sequence("book"),
            time_exchange=stamp,
            time_coinapi=stamp,
            is_snapshot=True,
            asks=[Level(self.price(t), _size(self.rng)) for t in sorted(self.asks)],
            bids=[Level(self.price(t), _size(self.rng)) for t in sorted(self.bids, reverse=True)],
        )

    def update(self, stamp: str) -> BookUpdate:
        rng = self.rng
        asks: list[Level] = []
        bids: list[Level] = []
        for _ in range(rng.randint(1, 5)):
            is_ask = rng.random() < 0.5
            live, ladder, out = (
                (self.asks, self.ask_ticks, asks) if is_ask else (self.bids, self.bid_ticks, bids)
            )
            roll = rng.random()
            if roll < 0.2 and len(live) > 50:  # delete a live level
                tick = rng.choice(tuple(live))
                live.discard(tick)
                out.append(Level(self.price(tick), Decimal(0)))
            elif roll < 0.4:  # a level anywhere on the ladder (often new)
                tick = rng.choice(ladder)
                live.add(tick)
                out.append(Level(self.price(tick), _size(rng)))
            else:  # new size for a live level
                tick = rng.choice(tuple(live))
                out.append(Level(self.price(tick), _size(rng)))
        return BookUpdate(
            symbol_id=self.symbol_id,
            sequence=self.next_sequence("book"),
            time_exchange=stamp,
            time_coinapi=stamp,
            is_snapshot=False,
            asks=asks,
            bids=bids,
        )

    def trade(self, stamp: str) -> Trade:
        rng = self.rng
        return Trade(
            symbol_id=self.symbol_id,
            sequence=self.next_sequence("trade"),
            time_exchange=stamp,
            time_coinapi=stamp,
            uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
            price=self.price(self.mid_ticks + rng.randint(-5, 5)),
            size=_size(rng),
            taker_side=rng.choice(("BUY", "SELL", "BUY_ESTIMATED", "SELL_ESTIMATED")),
        )

    def quote(self, stamp: str) -> Quote:
        rng = self.rng
        return Quote(
            symbol_id=self.symbol_id,
            sequence=self.next_sequence("quote"),
            time_exchange=stamp,
            time_coinapi=stamp,
            ask_price=self.price(self.mid_ticks + 1),
            ask_size=_size(rng),
            bid_price=self.price(self.mid_ticks - 1),
            bid_size=_size(rng),
        )


def build_frames(count: int, seed: int) -> tuple[list[bytes], list[BookUpdate]]:
    """Pre-encoded frames of the mix, and the book messages in order (for --index-compare)."""
    rng = random.Random(seed)
    markets = [_SymbolMarket(rng, symbol_id, rng.randint(100, 6_000_000)) for symbol_id in SYMBOLS]
    encode = protocol.encode
    frames: list[bytes] = []
    books: list[BookUpdate] = []
    for market in markets:
        snapshot = market.snapshot("2026-01-02T03:04:05.0000000Z")
        frames.append(encode(snapshot))
        books.append(snapshot)
    while len(frames) < count:
        n = len(frames)
        stamp = f"2026-01-02T03:{n // 600000 % 60:02d}:{n // 10000 % 60:02d}.{n % 10000:04d}123Z"
        market = rng.choice(markets)
        roll = rng.random()
        if roll < 0.55:
            message = market.update(stamp)
            books.append(message)
            frames.append(encode(message))
        elif roll < 0.85:
            frames.append(encode(market.trade(stamp)))
        else:
            frames.append(encode(market.quote(stamp)))
    return frames, books


def decode_only(frames: list[bytes]) -> None:
    decode = FrameDecoder().decode
    for frame in frames:
        decode(frame)


def full_core_path(frames: list[bytes]) -> None:
    """What the processor does per frame, minus events and I/O."""
    decode = FrameDecoder().decode
    observe = SequenceTracker().observe
    get_book = Books().get_or_create
    first_sighting = TradeDedup(200_000).first_sighting  # the service default
    synced = BookState.SYNCED
    for frame in frames:
        msg = decode(frame)
        kind = type(msg)  # one type() and "is" tests: cheaper than isinstance per branch
        if kind is BookUpdate:
            update: BookUpdate = msg  # type: ignore[assignment]
            obs = observe("book", update.symbol_id, update.sequence)
            book = get_book(update.symbol_id)
            if update.is_snapshot:
                book.apply_snapshot(update.asks, update.bids, update.sequence)
            elif obs is OBSERVED_NEXT and book.state is synced:
                book.apply_update(update.asks, update.bids, update.sequence)
            elif obs is not OBSERVED_BEHIND:
                book.mark_out_of_sync()
        elif kind is Trade:
            trade: Trade = msg  # type: ignore[assignment]
            if observe("trade", trade.symbol_id, trade.sequence) is not OBSERVED_BEHIND:
                first_sighting(trade.uuid)
        elif kind is Quote:
            quote: Quote = msg  # type: ignore[assignment]
            observe("quote", quote.symbol_id, quote.sequence)


def median_rates(
    runs: list[Callable[[list[bytes]], object]], frames: list[bytes], rounds: int
) -> list[float]:
    """Median frames/s of each run; rounds interleave the runs so drift hits them alike."""
    rates: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, samples in zip(runs, rates, strict=True):
            started = time.perf_counter()
            run(frames)
            samples.append(len(frames) / (time.perf_counter() - started))
    return [statistics.median(samples) for samples in rates]


class _BisectIndexBook:
    """OrderBook with the other index strategy: sorted (price, key) lists kept up to date by bisect
    on every added or removed level, instead of sorting lazily on read. Same keys, same dicts."""

    def __init__(self) -> None:
        self.sizes: tuple[dict[str, Decimal], dict[str, Decimal]] = ({}, {})
        self.prices: tuple[dict[str, Decimal], dict[str, Decimal]] = ({}, {})
        self.index: tuple[list[tuple[Decimal, str]], list[tuple[Decimal, str]]] = ([], [])

    def apply_snapshot(self, asks: Iterable[LevelLike], bids: Iterable[LevelLike], _: int) -> None:
        self.sizes, self.prices, self.index = ({}, {}), ({}, {}), ([], [])
        self.apply_update(asks, bids, _)

    def apply_update(self, asks: Iterable[LevelLike], bids: Iterable[LevelLike], _: int) -> None:
        for side, levels in ((0, asks), (1, bids)):
            sizes, prices, index = self.sizes[side], self.prices[side], self.index[side]
            for level in levels:
                key = price_key(level.price)
                size = level.size
                if size:
                    if key not in sizes:
                        prices[key] = level.price
                        bisect.insort(index, (level.price, key))
                    sizes[key] = size
                elif sizes.pop(key, None) is not None:
                    del index[bisect.bisect_left(index, (prices.pop(key), key))]

    def top(self, n: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        asks = self.index[0][:n]
        bids = self.index[1][: -n - 1 : -1] if n else []
        return (
            [(price, self.sizes[0][key]) for price, key in asks],
            [(price, self.sizes[1][key]) for price, key in bids],
        )


def index_compare(books: list[BookUpdate], rounds: int) -> dict[str, dict[str, float]]:
    """ns per book message, lazy vs bisect index, for several read frequencies."""
    results: dict[str, dict[str, float]] = {}
    factories: dict[str, Callable[[str], OrderBook | _BisectIndexBook]] = {
        "lazy": OrderBook,
        "bisect": lambda _symbol_id: _BisectIndexBook(),
    }
    for read_every in (0, 1000, 100, 10):
        row: dict[str, float] = {}
        for name, factory in factories.items():
            timings = []
            for _ in range(rounds):
                by_symbol = {symbol_id: factory(symbol_id) for symbol_id in SYMBOLS}
                started = time.perf_counter()
                for count, msg in enumerate(books):
                    book = by_symbol[msg.symbol_id]
                    if msg.is_snapshot:
                        book.apply_snapshot(msg.asks, msg.bids, msg.sequence)
                    else:
                        book.apply_update(msg.asks, msg.bids, msg.sequence)
                    if read_every and count % read_every == 0:
                        book.top(10)
                timings.append((time.perf_counter() - started) / len(books) * 1e9)
            row[name] = statistics.median(timings)
        results[f"read_every_{read_every or 'never'}"] = row
    return results


AmountPipeline = Callable[[list[bytes], list[bytes] | None], dict[str, dict[Any, Any]]]


def _amount_pipeline(
    amount: type,
    is_amount: Callable[[Any], bool],
    level_key: Callable[[Any], Any],
    is_zero: Callable[[Any], bool],
) -> AmountPipeline:
    """The hot path with amounts of type ``amount``: decode, value check, book levels (key and
    size per side), the event, its line. Returns the books; ``lines`` collects the output."""

    # defstruct, not class bodies: the field types are this call's ``amount``.
    def struct(name: str, fields: list[tuple[str, Any]], **options: Any) -> Any:
        return msgspec.defstruct(name, fields, kw_only=True, gc=False, **options)

    head = [("symbol_id", str), ("sequence", int), ("time_exchange", str)]
    pair = tuple[amount, amount]  # type: ignore[valid-type]
    level = struct("Level", [("price", amount), ("size", amount)], frozen=True)
    wire: dict[str, Any] = dict(tag_field="type")
    wire_trade = struct("WireTrade", [
        *head, ("time_coinapi", str), ("uuid", str), ("price", amount), ("size", amount),
        ("taker_side", str),
    ], tag="trade", **wire)  # fmt: skip
    wire_quote = struct("WireQuote", [
        *head, ("time_coinapi", str), ("ask_price", amount), ("ask_size", amount),
        ("bid_price", amount), ("bid_size", amount),
    ], tag="quote", **wire)  # fmt: skip
    wire_book = struct("WireBook", [
        *head, ("time_coinapi", str), ("is_snapshot", bool), ("asks", list[level]),  # type: ignore[valid-type]
        ("bids", list[level]),  # type: ignore[valid-type]
    ], tag="book", **wire)  # fmt: skip
    event: dict[str, Any] = dict(tag_field="kind", frozen=True)
    tail = [("source", str), ("received_at", str)]
    trade_event = struct("TradeEvent", [
        *head, ("time_coinapi", str), ("uuid", str), ("price", amount), ("size", amount),
        ("taker_side", str), *tail,
    ], tag="trade", **event)  # fmt: skip
    quote_event = struct("QuoteEvent", [
        *head, ("time_coinapi", str), ("ask_price", amount), ("ask_size", amount),
        ("bid_price", amount), ("bid_size", amount), *tail,
    ], tag="quote", **event)  # fmt: skip
    book_event = struct("BookEvent", [
        *head, ("depth", str), ("is_snapshot", bool), ("asks", list[pair]),
        ("bids", list[pair]), *tail,
    ], tag="book", **event)  # fmt: skip

    decode = msgspec.json.Decoder(wire_trade | wire_quote | wire_book).decode
    encode_lines = msgspec.json.Encoder(decimal_format="number").encode_lines
    received_at = "2026-01-02T03:04:05.000000Z"

    def apply(sizes: dict[Any, Any], levels: list[Any]) -> None:
        for level in levels:
            key = level_key(level.price)
            if is_zero(level.size):
                sizes.pop(key, None)
            else:
                sizes[key] = level.size

    def run(frames: list[bytes], lines: list[bytes] | None) -> dict[str, dict[Any, Any]]:
        books: dict[str, dict[Any, Any]] = {}
        out: list[Any] = []
        for frame in frames:
            msg = decode(frame)
            kind = type(msg)
            if kind is wire_book:
                for side in (msg.asks, msg.bids):
                    for level in side:
                        if not (is_amount(level.price) and is_amount(level.size)):
                            raise ValueError(frame)
                asks = books.setdefault(msg.symbol_id + " asks", {})
                bids = books.setdefault(msg.symbol_id + " bids", {})
                if msg.is_snapshot:
                    asks.clear()
                    bids.clear()
                apply(asks, msg.asks)
                apply(bids, msg.bids)
                out.append(book_event(
                    symbol_id=msg.symbol_id, sequence=msg.sequence, depth="book",
                    time_exchange=msg.time_exchange, is_snapshot=msg.is_snapshot,
                    asks=[(level.price, level.size) for level in msg.asks],
                    bids=[(level.price, level.size) for level in msg.bids],
                    source="ws", received_at=received_at,
                ))  # fmt: skip
            elif kind is wire_trade:
                if not (is_amount(msg.price) and is_amount(msg.size)):
                    raise ValueError(frame)
                out.append(trade_event(
                    symbol_id=msg.symbol_id, sequence=msg.sequence,
                    time_exchange=msg.time_exchange, time_coinapi=msg.time_coinapi,
                    uuid=msg.uuid.lower(), price=msg.price, size=msg.size,
                    taker_side=msg.taker_side, source="ws", received_at=received_at,
                ))  # fmt: skip
            else:
                amounts = (msg.ask_price, msg.ask_size, msg.bid_price, msg.bid_size)
                if not all(map(is_amount, amounts)):
                    raise ValueError(frame)
                out.append(quote_event(
                    symbol_id=msg.symbol_id, sequence=msg.sequence,
                    time_exchange=msg.time_exchange, time_coinapi=msg.time_coinapi,
                    ask_price=msg.ask_price, ask_size=msg.ask_size, bid_price=msg.bid_price,
                    bid_size=msg.bid_size, source="ws", received_at=received_at,
                ))  # fmt: skip
            if len(out) >= 250:
                data = encode_lines(out)
                out = []
                if lines is not None:
                    lines.append(data)
        data = encode_lines(out)
        if lines is not None:
            lines.append(data)
        return books

    return run


_DIGITS = frozenset(b"0123456789")


def _raw_is_amount(raw: msgspec.Raw) -> bool:
    # A valid JSON value that starts with a digit is a number, finite and not negative.
    return bytes(raw)[0] in _DIGITS


def _raw_key(raw: msgspec.Raw) -> bytes:
    """A canonical key from the text: ``1.50`` and ``1.5`` are one level."""
    text = bytes(raw)
    if b"e" in text or b"E" in text:
        text = format(normalize_exactly(Decimal(text.decode())), "f").encode()
    if b"." in text:
        text = text.rstrip(b"0").rstrip(b".")
    return text


def _raw_is_zero(raw: msgspec.Raw) -> bool:
    text = bytes(raw)
    if b"e" in text or b"E" in text:
        return Decimal(text.decode()) == 0
    return not text.strip(b"0.")


def _timed(run: AmountPipeline) -> Callable[[list[bytes]], object]:
    return lambda frames: run(frames, None)


def _as_decimal(value: Decimal | str | bytes | msgspec.Raw) -> Decimal:
    return Decimal(bytes(value).decode() if isinstance(value, bytes | msgspec.Raw) else value)


def amounts_compare(frames: list[bytes], rounds: int) -> dict[str, float]:
    """µs per frame of the hot path with ``Decimal`` amounts and with raw JSON text; fails
    unless both write the same lines and keep the same books."""
    runs = {
        "decimal": _amount_pipeline(
            Decimal,
            lambda value: not (value.is_signed() or not value.is_finite()),
            price_key,
            lambda size: not size,
        ),
        "raw_text": _amount_pipeline(msgspec.Raw, _raw_is_amount, _raw_key, _raw_is_zero),
    }
    outputs = {}
    for name, run in runs.items():
        lines: list[bytes] = []
        books = run(frames, lines)
        values = {
            side: {_as_decimal(key): _as_decimal(size) for key, size in levels.items()}
            for side, levels in books.items()
        }
        outputs[name] = (b"".join(lines), values)
    if outputs["decimal"] != outputs["raw_text"]:
        raise SystemExit("--amounts-compare: the two pipelines disagree; the figures would lie")
    names = list(runs)
    rates = median_rates([_timed(runs[name]) for name in names], frames, rounds)
    return {name: round(1e6 / rate, 3) for name, rate in zip(names, rates, strict=True)}


def _framed_chunks(frames: list[bytes], chunk_bytes: int = 64 * 1024) -> list[bytes]:
    """The frames as unmasked server text frames, cut into socket-read-sized chunks."""
    from coinfeed.transport.frames import OP_TEXT

    parts: list[bytes] = []
    for body in frames:
        n = len(body)
        if n < 126:
            head = bytes((0x80 | OP_TEXT, n))
        elif n < 1 << 16:
            head = bytes((0x80 | OP_TEXT, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | OP_TEXT, 127)) + n.to_bytes(8, "big")
        parts += (head, body)
    stream = b"".join(parts)
    return [stream[i : i + chunk_bytes] for i in range(0, len(stream), chunk_bytes)]


def framing_compare(frames: list[bytes], rounds: int) -> dict[str, float]:
    """Frames/s of three sans-I/O WebSocket parsers fed the same 64 KiB reads: coinfeed's
    :class:`~coinfeed.transport.frames.FrameReader`, websockets' client protocol, wsproto's."""
    import websockets.client
    import websockets.protocol
    import websockets.uri
    import wsproto.connection
    import wsproto.events

    from coinfeed.transport.frames import FrameReader

    chunks = _framed_chunks(frames)

    def coinfeed_reader() -> int:
        reader = FrameReader(1 << 24)
        return sum(len(reader.feed(chunk)) for chunk in chunks)

    def websockets_protocol() -> int:
        protocol = websockets.client.ClientProtocol(
            websockets.uri.parse_uri("ws://127.0.0.1/"), max_size=None
        )
        protocol.state = websockets.protocol.State.OPEN  # as after the handshake...
        protocol.parser = protocol.parse()  # ...whose parser now reads frames
        next(protocol.parser)
        count = 0
        for chunk in chunks:
            protocol.receive_data(chunk)
            count += len(protocol.events_received())
        return count

    def wsproto_connection() -> int:
        connection = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
        count = 0
        for chunk in chunks:
            connection.receive_data(chunk)
            count += sum(
                isinstance(e, wsproto.events.Message) and e.message_finished
                for e in connection.events()
            )
        return count

    parsers = {
        "coinfeed": coinfeed_reader,
        "websockets": websockets_protocol,
        "wsproto": wsproto_connection,
    }
    rates: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(rounds):
        for name, parse in parsers.items():
            started = time.perf_counter()
            count = parse()
            elapsed = time.perf_counter() - started
            if count != len(frames):
                raise RuntimeError(f"{name} parsed {count} of {len(frames)} frames")
            rates[name].append(len(frames) / elapsed)
    return {name: round(statistics.median(samples)) for name, samples in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames in the mix")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per figure (median)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the frame mix")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--index-compare", action="store_true", help="also time lazy vs bisect book index"
    )
    parser.add_argument(
        "--amounts-compare",
        action="store_true",
        help="also time the hot path with Decimal amounts vs amounts kept as JSON text",
    )
    args = parser.parse_args(argv)
    if args.frames < len(SYMBOLS) or args.rounds < 1:
        parser.error(f"--frames must be >= {len(SYMBOLS)} and --rounds >= 1")

    frames, books = build_frames(args.frames, args.seed)
    decode_rate, core_rate = median_rates([decode_only, full_core_path], frames, args.rounds)
    report: dict[str, object] = {
        "python": sys.version.split()[0],
        "frames": len(frames),
        "rounds": args.rounds,
        "mean_frame_bytes": round(sum(map(len, frames)) / len(frames), 1),
        "decode_only_frames_per_s": round(decode_rate),
        "full_core_frames_per_s": round(core_rate),
        "ratio_full_to_decode": round(core_rate / decode_rate, 3),
    }
    framing = framing_compare(frames, args.rounds)
    report["ws_framing_frames_per_s"] = framing
    index_rows = index_compare(books, args.rounds) if args.index_compare else {}
    if index_rows:
        report["book_index_ns_per_book_message"] = index_rows
    amounts = amounts_compare(frames, args.rounds) if args.amounts_compare else {}
    if amounts:
        report["hot_path_us_per_frame_by_amounts"] = amounts

    if args.json:
        print(json.dumps(report))
        return 0
    print(f"python {report['python']}, {len(frames):,} frames, median of {args.rounds} rounds")
    print(f"  mean frame size        {report['mean_frame_bytes']} bytes")
    print(f"  (a) decode only        {decode_rate:>12,.0f} frames/s  ({1e6 / decode_rate:.2f} µs)")
    print(f"  (b) full core path     {core_rate:>12,.0f} frames/s  ({1e6 / core_rate:.2f} µs)")
    print(f"  ratio (b)/(a)          {core_rate / decode_rate:>12.3f}")
    print("  targets: (b) >= 300,000 frames/s and (b)/(a) >= 0.5")
    print("  WebSocket framing (sans-I/O parsers, the same 64 KiB reads of the mix):")
    for name, rate in framing.items():
        print(f"    {name:<20} {rate:>12,.0f} frames/s  ({1e6 / rate:.2f} µs)")
    if index_rows:
        print("  book index, ns per book message (lazy sort on read vs bisect on insert/delete):")
        for label, row in index_rows.items():
            print(f"    {label:<20} lazy {row['lazy']:>7.0f}   bisect {row['bisect']:>7.0f}")
    if amounts:
        print("  frame to event line, µs per frame (decode, check, book levels, event, encode):")
        print(f"    amounts as Decimal   {amounts['decimal']:>7.3f}")
        ratio = amounts["raw_text"] / amounts["decimal"]
        print(f"    amounts as JSON text {amounts['raw_text']:>7.3f}   ({ratio:.2f} of that)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
