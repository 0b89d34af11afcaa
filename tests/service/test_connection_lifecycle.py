"""Connection lifecycle against scripted fake transports, in virtual time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from coinfeed.config import Settings
from coinfeed.service import Service
from tests.fakes import FakeTransport, FakeWebSocket
from tests.helpers import MemorySink

HEARTBEAT = '{"type":"hearbeat"}'


async def run_service(service: Service, until: Callable[[], bool], *, limit: float) -> int:
    """Run the service until ``until()`` holds (or ``limit`` virtual seconds), then stop it."""
    code = -1

    async def runner() -> None:
        nonlocal code
        code = await service.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner)
        with trio.move_on_after(limit):
            while not until() and not service.status.shutdown.is_set():
                await trio.sleep(0.05)
        service.status.request_shutdown("test over")
    return code


def build(settings: Settings, transport: FakeTransport) -> tuple[Service, MemorySink]:
    sink = MemorySink()
    service = Service.build(settings, transport=transport, sinks=[sink], handle_signals=False)
    return service, sink


async def test_stalled_handshake_is_abandoned_at_connect_timeout_and_retried_with_backoff(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    transport = FakeTransport(["stall", "stall", "stall", FakeWebSocket()])
    service, _ = build(make_settings(connect_timeout=30, backoff_max=30), transport)
    start = trio.current_time()
    code = await run_service(service, lambda: transport.connected.is_set(), limit=600)
    assert code == 0
    gaps = [b - a for a, b in zip([start, *transport.attempts], transport.attempts, strict=False)]
    assert gaps[0] == pytest.approx(0)
    # Each stalled attempt is abandoned after exactly connect_timeout; the first retry is
    # immediate, later ones wait a jittered backoff on top of the timeout.
    assert gaps[1] == pytest.approx(30, abs=1e-6)
    assert 30 <= gaps[2] <= 30 + 0.5 + 1e-6
    assert 30 <= gaps[3] <= 30 + 1.0 + 1e-6
    assert service.connection.counters.reconnects["connect_timeout"] == 3


async def test_silence_longer_than_stale_after_reconnects(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    first, second = FakeWebSocket(), FakeWebSocket()
    transport = FakeTransport([first, second])
    service, _ = build(make_settings(stale_after=10), transport)

    async def heartbeats_then_silence() -> None:
        await transport.connected.wait()
        for _ in range(5):
            first.feed(HEARTBEAT)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeats_then_silence)
        await run_service(service, lambda: len(transport.attempts) >= 2, limit=120)
    assert len(transport.attempts) == 2
    # Heartbeats kept it alive for 5 s, then 10 s of silence (plus one watchdog tick).
    assert 14 <= transport.attempts[1] - transport.attempts[0] <= 17.6
    assert service.connection.counters.reconnects == {"stale": 1}


async def test_rejected_upgrade_exits_3_without_retry_loop(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    transport = FakeTransport([401])
    service, _ = build(make_settings(), transport)
    code = await run_service(service, lambda: False, limit=60)
    assert code == 3
    assert len(transport.attempts) == 1


async def test_error_frame_for_key_is_terminal(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    ws = FakeWebSocket()
    transport = FakeTransport([ws, FakeWebSocket()])
    service, _ = build(make_settings(), transport)

    async def reject() -> None:
        await transport.connected.wait()
        ws.feed('{"type":"error","message":"Invalid API key"}')
        ws.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reject)
        code = await run_service(service, lambda: False, limit=60)
    assert code == 3
    assert len(transport.attempts) == 1
    assert service.status.fatal is not None
    assert "Invalid API key" in service.status.fatal.message


async def test_buffer_overflow_error_reconnects_instead_of_exiting(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    ws = FakeWebSocket()
    transport = FakeTransport([ws, FakeWebSocket()])
    service, _ = build(make_settings(), transport)

    async def overflow() -> None:
        await transport.connected.wait()
        ws.feed(
            '{"type":"error","message":"Reached maximum allowed buffered messages '
            'for this connection."}'
        )
        ws.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(overflow)
        code = await run_service(service, lambda: len(transport.attempts) >= 2, limit=60)
    assert code == 0
    assert service.connection.counters.reconnects == {"server_buffer_overflow": 1}


async def test_hello_asks_heartbeats_for_exact_symbols_and_key_goes_in_header(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    from coinfeed.config import Secret

    ws = FakeWebSocket()
    transport = FakeTransport([ws])
    settings = make_settings(api_key=Secret("k-123"), symbols=("A_USD", "B_USD"))
    service, _ = build(settings, transport)
    await run_service(service, lambda: bool(ws.sent), limit=10)
    hello = ws.sent[0]
    assert isinstance(hello, str), "scope messages go out as text frames"
    assert '"type":"hello"' in hello
    assert '"heartbeat":true' in hello
    assert '"subscribe_filter_symbol_id":["A_USD$","B_USD$"]' in hello
    assert "k-123" not in hello
    assert transport.headers[0] == [("X-CoinAPI-Key", "k-123")]


async def test_resubscribes_are_batched_and_stay_within_10_scope_messages_per_10_s(
    autojump_clock: trio.abc.Clock, make_settings: Callable[..., Settings]
) -> None:
    ws = FakeWebSocket()
    transport = FakeTransport([ws])
    symbols = tuple(f"S{i}_USD" for i in range(8))
    service, _ = build(make_settings(symbols=symbols, stale_after=1000), transport)

    async def storm() -> None:
        await transport.connected.wait()
        await trio.sleep(0.1)
        for symbol in symbols[:3]:  # three requests at once: one unsubscribe + subscribe pair
            service.connection.scope_requests.request(symbol)
        await trio.sleep(0.5)
        for round_ in range(20):  # then a resubscribe request every 0.25 s for 5 s
            service.connection.scope_requests.request(symbols[round_ % len(symbols)])
            await trio.sleep(0.25)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(storm)
        await run_service(service, lambda: False, limit=30)
    messages = [m if isinstance(m, bytes) else m.encode() for m in ws.sent]
    assert b'"type":"unsubscribe"' in messages[1] and b'"type":"subscribe"' in messages[2]
    assert all(f'"{s}$"'.encode() in messages[1] for s in symbols[:3])
    # Every 10 s window holds at most 10 scope messages, the hello included.
    for start in ws.sent_at:
        assert sum(1 for t in ws.sent_at if start <= t < start + 10) <= 10
    assert len(ws.sent_at) > 10, "the storm should have needed more than one window"
