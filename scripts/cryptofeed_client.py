"""cryptofeed 2.4.1 on a CoinAPI stream: the other side of ``scripts/bench_cryptofeed.py``.

Runs in the cryptofeed venv that script builds (it imports cryptofeed, never coinfeed). The
CoinAPI feed below is written the way cryptofeed's own exchange modules are: ``json.loads`` with
``parse_float=Decimal`` (cryptofeed's yapic json), a sequence check per (type, symbol) raising
``MissingSequenceNumber`` on a gap, ``Trade`` and ``Ticker`` objects through ``self.callback``,
and L2 books in cryptofeed's ``OrderBook`` (the order_book C extension) through
``self.book_callback`` with a delta. Callbacks only count. Two extension points cryptofeed
provides stand in for the network: ``symbol_mapping`` reads the symbols given on the command line
instead of CoinAPI's REST ``/v1/symbols``, and the ``authentication`` hook (which gemini.py uses
to rewrite its address) swaps in the local ``ws://`` address that cryptofeed would otherwise
refuse.

Prints ``DONE <time.monotonic()>`` when the N-th callback has run, and ``RSS <peak bytes>``.

    python cryptofeed_client.py --url ws://127.0.0.1:PORT/v1/ --frames N --symbols ID,...
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

from cryptofeed import FeedHandler
from cryptofeed.connection import AsyncConnection, WebsocketEndpoint
from cryptofeed.defines import ASK, BID, BUY, L2_BOOK, SELL, TICKER, TRADES
from cryptofeed.exceptions import MissingSequenceNumber
from cryptofeed.feed import Feed
from cryptofeed.symbols import Symbol, Symbols
from cryptofeed.types import OrderBook, Ticker, Trade
from yapic import json


def pair_of(symbol_id: str) -> tuple[str, str]:
    """``EXCHANGE_SPOT_BASE_QUOTE`` -> (base, quote)."""
    _exchange, _kind, base, quote = symbol_id.split("_", 3)
    return base, quote


class CoinAPIFeed(Feed):
    id = "COINAPI"
    websocket_endpoints = [
        WebsocketEndpoint(
            "wss://ws.coinapi.io/v1/", options={"compression": None}, authentication=True
        )
    ]
    websocket_channels = {L2_BOOK: "book", TRADES: "trade", TICKER: "quote"}
    request_limit = 10
    symbol_ids: list[str] = []

    @classmethod
    def symbol_mapping(cls, refresh: bool = False) -> dict[str, str]:
        if Symbols.populated(cls.id) and not refresh:
            return Symbols.get(cls.id)[0]
        mapping: dict[str, str] = {}
        info: dict[str, dict[str, str]] = defaultdict(dict)
        for symbol_id in cls.symbol_ids:
            symbol = Symbol(*pair_of(symbol_id))
            mapping[symbol.normalized] = symbol_id
            info["instrument_type"][symbol.normalized] = symbol.type
        Symbols.set(cls.id, mapping, info)
        return mapping

    def __init__(self, address: str, **kwargs: Any) -> None:
        self.local_address = address
        super().__init__(**kwargs)
        self.books: dict[str, OrderBook] = {}
        self.last_sequence: dict[tuple[str, str], int] = {}

    async def _ws_authentication(self, address: str, options: dict) -> tuple[str, dict]:
        return self.local_address, options

    async def subscribe(self, conn: AsyncConnection) -> None:
        self.books, self.last_sequence = {}, {}
        symbols = sorted({s for symbols in conn.subscription.values() for s in symbols})
        await conn.write(json.dumps({
            "type": "hello", "apikey": self.key_id or "", "heartbeat": False,
            "subscribe_data_type": list(conn.subscription),
            "subscribe_filter_symbol_id": [s + "$" for s in symbols],
        }))  # fmt: skip

    async def message_handler(self, msg: str, conn: AsyncConnection, timestamp: float) -> None:
        data = json.loads(msg, parse_float=Decimal)
        kind = data["type"]
        if "sequence" in data:
            key = (kind, data["symbol_id"])
            last = self.last_sequence.get(key)
            if last is not None and data["sequence"] != last + 1:
                if data["sequence"] <= last:
                    return
                raise MissingSequenceNumber(f"{key}: {last} -> {data['sequence']}")
            self.last_sequence[key] = data["sequence"]
        if kind == "book":
            await self._book(data, timestamp)
        elif kind == "trade":
            await self._trade(data, timestamp)
        elif kind == "quote":
            await self._quote(data, timestamp)

    async def _trade(self, data: dict, timestamp: float) -> None:
        trade = Trade(
            self.id, self.exchange_symbol_to_std_symbol(data["symbol_id"]),
            BUY if data["taker_side"].startswith("BUY") else SELL,
            Decimal(data["size"]), Decimal(data["price"]),
            self.timestamp_normalize(data["time_exchange"]), id=data["uuid"], raw=data,
        )  # fmt: skip
        await self.callback(TRADES, trade, timestamp)

    async def _quote(self, data: dict, timestamp: float) -> None:
        ticker = Ticker(
            self.id, self.exchange_symbol_to_std_symbol(data["symbol_id"]),
            Decimal(data["bid_price"]), Decimal(data["ask_price"]),
            self.timestamp_normalize(data["time_exchange"]), raw=data,
        )  # fmt: skip
        await self.callback(TICKER, ticker, timestamp)

    async def _book(self, data: dict, timestamp: float) -> None:
        pair = self.exchange_symbol_to_std_symbol(data["symbol_id"])
        when = self.timestamp_normalize(data["time_exchange"])
        if data.get("is_snapshot"):
            self.books[pair] = OrderBook(
                self.id, pair, max_depth=self.max_depth,
                bids={Decimal(e["price"]): Decimal(e["size"]) for e in data["bids"]},
                asks={Decimal(e["price"]): Decimal(e["size"]) for e in data["asks"]},
            )  # fmt: skip
            await self.book_callback(
                L2_BOOK, self.books[pair], timestamp, timestamp=when, raw=data,
                sequence_number=data["sequence"],
            )  # fmt: skip
            return
        book = self.books.get(pair)
        if book is None:
            return  # an update is applied on top of a snapshot only
        delta: dict[str, list[tuple[Decimal, Decimal]]] = {BID: [], ASK: []}
        for side, key in ((BID, "bids"), (ASK, "asks")):
            levels = book.book[side]
            for entry in data[key]:
                price, size = Decimal(entry["price"]), Decimal(entry["size"])
                if size == 0:
                    if price in levels:
                        del levels[price]
                        delta[side].append((price, Decimal(0)))
                else:
                    levels[price] = size
                    delta[side].append((price, size))
        await self.book_callback(
            L2_BOOK, book, timestamp, timestamp=when, raw=data,
            sequence_number=data["sequence"], delta=delta,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--symbols", required=True, help="the stream's symbol ids, comma-separated")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    CoinAPIFeed.symbol_ids = args.symbols.split(",")
    counted = 0

    def stop() -> None:
        raise SystemExit  # how cryptofeed's own signal handlers stop FeedHandler.run

    async def count(*_args: object) -> None:
        nonlocal counted
        counted += 1
        if counted == args.frames:
            print(f"DONE {time.monotonic():.6f}", flush=True)
            asyncio.get_running_loop().call_soon(stop)

    config = {"uvloop": True, "log": {"filename": "/dev/null", "level": "WARNING"}}
    handler = FeedHandler(config=config)
    handler.add_feed(CoinAPIFeed(
        args.url, symbols=["-".join(pair_of(s)) for s in CoinAPIFeed.symbol_ids],
        channels=[L2_BOOK, TRADES, TICKER],
        callbacks={L2_BOOK: count, TRADES: count, TICKER: count}, config=config, timeout=-1,
    ))  # fmt: skip
    # FeedHandler.run() calls asyncio.get_event_loop(), which uvloop's policy refuses without a
    # loop set first.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.call_later(args.timeout, stop)
    handler.run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"RSS {peak}", flush=True)
    sys.exit(0 if counted >= args.frames else 1)


if __name__ == "__main__":
    main()
