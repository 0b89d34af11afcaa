"""A plain client for simulator tests: trio-websocket + coinfeed's frame decoder, httpx for REST."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from coinfeed.core.decoding import FrameDecoder, InvalidFrame
from coinfeed.core.protocol import BookUpdate, Level, ServerMessage
from coinfeed.simulator import Simulator

BTC = "BITSTAMP_SPOT_BTC_USD"
BTC_T = "BITSTAMP_SPOT_BTC_USDT"
ETH = "COINBASE_SPOT_ETH_USD"
DECODER = FrameDecoder()


def scope(
    types: Iterable[str],
    symbols: Iterable[str] | None = None,
    *,
    kind: str = "hello",
    heartbeat: bool = False,
    apikey: str | None = None,
    assets: Iterable[str] | None = None,
    periods: Iterable[str] | None = None,
) -> str:
    """A hello/subscribe/unsubscribe message as JSON text (filters used as given)."""
    msg: dict[str, object] = {"type": kind, "heartbeat": heartbeat}
    msg["subscribe_data_type"] = list(types)
    if symbols is not None:
        msg["subscribe_filter_symbol_id"] = list(symbols)
    if assets is not None:
        msg["subscribe_filter_asset_id"] = list(assets)
    if periods is not None:
        msg["subscribe_filter_period_id"] = list(periods)
    if apikey is not None:
        msg["apikey"] = apikey
    return json.dumps(msg)


@asynccontextmanager
async def connect(
    sim: Simulator,
    first: str | None = None,
    *,
    url: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    queue: int = 10_000,
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket to the simulator and send ``first`` (a scope message) if given."""
    async with open_websocket_url(
        url or sim.ws_url,
        extra_headers=headers or [],
        message_queue_size=queue,
        max_message_size=64 * 1024 * 1024,
    ) as ws:
        if first is not None:
            await ws.send_message(first)
        yield ws


async def receive(ws: WebSocketConnection, within: float = 5.0) -> ServerMessage | InvalidFrame:
    """The next frame, decoded (fails the test after ``within`` seconds)."""
    with trio.fail_after(within):
        return DECODER.decode(await ws.get_message())


async def collect(
    ws: WebSocketConnection,
    *,
    count: int | None = None,
    seconds: float | None = None,
    until: Callable[[ServerMessage | InvalidFrame], bool] | None = None,
    within: float = 10.0,
) -> list[ServerMessage | InvalidFrame]:
    """Frames until ``count`` arrived, ``seconds`` passed or ``until`` held (that one included)."""
    out: list[ServerMessage | InvalidFrame] = []
    with trio.move_on_after(seconds if seconds is not None else within) as scope_:
        while count is None or len(out) < count:
            msg = DECODER.decode(await ws.get_message())
            out.append(msg)
            if until is not None and until(msg):
                break
    if seconds is None and scope_.cancelled_caught:
        raise AssertionError(f"timed out after {within} s with {len(out)} frames")
    return out


async def drain(ws: WebSocketConnection, idle: float = 0.3) -> list[ServerMessage | InvalidFrame]:
    """Read until nothing arrived for ``idle`` seconds (the market should be paused)."""
    out: list[ServerMessage | InvalidFrame] = []
    while True:
        with trio.move_on_after(idle) as s:
            out.append(DECODER.decode(await ws.get_message()))
        if s.cancelled_caught:
            return out


async def closed_reason(ws: WebSocketConnection, within: float = 5.0) -> tuple[list[str], int]:
    """Read until the connection closes: (frames seen, close code)."""
    seen: list[str] = []
    with trio.fail_after(within):
        try:
            while True:
                m = await ws.get_message()
                seen.append(m if isinstance(m, str) else m.decode())
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return seen, exc.reason.code


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` (simulator state) until true."""
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(0.005)


def sequences(msgs: Iterable[object]) -> dict[tuple[str, str], list[int]]:
    """Sequence numbers per (type, symbol_id), in arrival order."""
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in msgs:
        seq = getattr(m, "sequence", None)
        if isinstance(seq, int):
            out[(type(m).__struct_config__.tag, m.symbol_id)].append(seq)  # type: ignore[attr-defined]
    return out


class LocalBook:
    """A client-side L2 book built from ``book`` snapshot + deltas (size 0 deletes)."""

    def __init__(self) -> None:
        self.asks: dict[Decimal, Decimal] = {}
        self.bids: dict[Decimal, Decimal] = {}

    def apply(self, msg: BookUpdate) -> None:
        """Apply one snapshot or delta."""
        if msg.is_snapshot:
            self.asks, self.bids = {}, {}
        for side, lv in ((self.asks, msg.asks), (self.bids, msg.bids)):
            for level in lv:
                if level.size == 0:
                    side.pop(level.price, None)
                else:
                    side[level.price] = level.size

    def levels(self) -> tuple[list[Level], list[Level]]:
        """(asks ascending, bids descending)."""
        asks = [Level(p, s) for p, s in sorted(self.asks.items())]
        bids = [Level(p, s) for p, s in sorted(self.bids.items(), reverse=True)]
        return asks, bids
