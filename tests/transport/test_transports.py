"""Every WebSocket transport behind the seam, against the simulator or a tiny trio-websocket server.

Each test runs once per transport: ids end in [direct], [websockets] or [trio-websocket].
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

from coinfeed.config import TRANSPORTS
from coinfeed.core.protocol import encode, scope_message
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.transport import Transport, TransportClosed, TransportError, WebSocket
from coinfeed.transport.direct import DirectTransport
from coinfeed.transport.libraries import TrioWebSocketTransport, WebsocketsTransport

SYMBOL = "BITSTAMP_SPOT_BTC_USD"
Handler = Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]


def _maker(name: str) -> Callable[..., Transport]:
    def make(**options: Any) -> Transport:
        if name == "direct":
            return DirectTransport(**options)
        if name == "websockets":
            return WebsocketsTransport(**options)
        assert name == "trio-websocket", name
        return TrioWebSocketTransport(**options)

    return make


@pytest.fixture(params=TRANSPORTS)
def make_transport(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    return _maker(request.param)


@pytest.fixture(params=[name for name in TRANSPORTS if name != "direct"])
def make_library_transport(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    """The transports whose library reads the socket in a task of its own."""
    return _maker(request.param)


@asynccontextmanager
async def tiny_server(handler: Handler) -> AsyncIterator[str]:
    """A trio-websocket server on loopback running ``handler`` per upgrade request."""
    async with trio.open_nursery() as nursery:
        serve = partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        server = await nursery.start(serve)
        yield f"ws://127.0.0.1:{server.port}/v1/"
        nursery.cancel_scope.cancel()


def as_bytes(messages: list[str | bytes]) -> list[bytes]:
    """trio-websocket hands over text frames as ``str``, websockets as raw ``bytes``."""
    return [m.encode() if isinstance(m, str) else m for m in messages]


async def receive_until_closed(ws: WebSocket) -> tuple[list[bytes], TransportClosed]:
    received: list[bytes] = []
    with trio.fail_after(5):
        while True:
            try:
                received += as_bytes(await ws.receive_batch())
            except TransportClosed as closed:
                return received, closed


async def test_one_receive_batch_returns_every_buffered_message(
    make_transport: Callable[..., Transport],
) -> None:
    sent = [f'{{"type":"trade","n":{i}}}' for i in range(50)]

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        for message in sent:
            await ws.send_message(message)
        await trio.sleep_forever()

    async with tiny_server(handler) as url, trio.open_nursery() as nursery:
        ws = await make_transport().connect(nursery, url, headers=[])
        await trio.sleep(0.3)  # all 50 arrive and wait in the library's buffer
        batch = await ws.receive_batch()
        assert as_bytes(batch) == [m.encode() for m in sent]
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_a_server_close_reports_its_code_and_reason(
    make_transport: Callable[..., Transport],
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message('{"type":"reconnect"}')
        await ws.aclose(1001, "maintenance")

    async with tiny_server(handler) as url, trio.open_nursery() as nursery:
        ws = await make_transport().connect(nursery, url, headers=[])
        received, closed = await receive_until_closed(ws)
        assert received == [b'{"type":"reconnect"}']
        assert (closed.code, closed.reason) == (1001, "maintenance")
        nursery.cancel_scope.cancel()


async def test_an_abrupt_disconnect_is_1006(make_transport: Callable[..., Transport]) -> None:
    sim_config = SimulatorConfig(rate=500, seed=21)
    async with open_simulator(sim_config) as sim, trio.open_nursery() as nursery:
        ws = await make_transport().connect(nursery, sim.ws_url, headers=[])
        await ws.send(encode(scope_message("hello", ("trade", "quote"), (SYMBOL,))))
        assert await ws.receive_batch()
        await sim.disconnect_all()
        _, closed = await receive_until_closed(ws)
        assert closed.code == 1006
        nursery.cancel_scope.cancel()


async def test_a_rejected_key_gets_the_error_frame_then_a_close(
    make_transport: Callable[..., Transport],
) -> None:
    sim_config = SimulatorConfig(rate=500, keys=frozenset({"good"}))
    async with open_simulator(sim_config) as sim, trio.open_nursery() as nursery:
        headers = [("X-CoinAPI-Key", "wrong")]
        ws = await make_transport().connect(nursery, sim.ws_url, headers=headers)
        await ws.send(encode(scope_message("hello", ("trade",), (SYMBOL,))))
        received, closed = await receive_until_closed(ws)
        assert b'"type":"error"' in received[-1]
        assert b"Invalid API key" in received[-1]
        assert closed.code == 1000
        nursery.cancel_scope.cancel()


async def test_an_http_403_upgrade_rejection_carries_the_status(
    make_transport: Callable[..., Transport],
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403, body=b"Forbidden")

    async with tiny_server(handler) as url, trio.open_nursery() as nursery:
        with pytest.raises(TransportError) as rejected:
            await make_transport().connect(nursery, url, headers=[("X-CoinAPI-Key", "bad")])
        assert rejected.value.status == 403


async def test_a_refused_connection_is_a_transport_error_without_status(
    make_transport: Callable[..., Transport],
) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(TransportError) as failed:
            await make_transport().connect(nursery, "ws://127.0.0.1:9/v1/", headers=[])
        assert failed.value.status is None


async def test_a_stalled_handshake_is_bounded_by_our_fail_after(
    make_transport: Callable[..., Transport],
) -> None:
    async with open_simulator(SimulatorConfig(rate=10)) as sim, trio.open_nursery() as nursery:
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.3):
            await make_transport().connect(nursery, sim.blackhole_url, headers=[])
        assert trio.current_time() - started < 1


async def test_server_pings_are_answered_while_nobody_reads(
    make_library_transport: Callable[..., Transport],
) -> None:
    """The library clients answer from their reader task. (``direct`` has none: it answers
    from ``receive_batch``, which the connection task always runs; see test_direct.py.)"""
    answered: list[bool] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(2):
            for _ in range(3):
                await ws.ping()  # returns when the matching pong arrives
                answered.append(True)
        await trio.sleep_forever()

    async with tiny_server(handler) as url, trio.open_nursery() as nursery:
        ws = await make_library_transport().connect(nursery, url, headers=[])
        with trio.move_on_after(3):
            while len(answered) < 3:
                await trio.sleep(0.02)
        assert answered == [True, True, True]
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_a_message_over_max_message_bytes_closes_with_1009(
    make_transport: Callable[..., Transport],
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("x" * 5000)
        await trio.sleep_forever()

    async with tiny_server(handler) as url, trio.open_nursery() as nursery:
        ws = await make_transport(max_message_bytes=4096).connect(nursery, url, headers=[])
        received, closed = await receive_until_closed(ws)
        assert received == []
        assert closed.code == 1009
        nursery.cancel_scope.cancel()
