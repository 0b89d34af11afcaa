"""The HTTP side under abuse: pipelined floods from clients that leave cost little and leave
nothing behind (open connections, tasks, CPU), and what one connection may queue is bounded."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import generate_latest

from coinfeed.config import Settings
from coinfeed.observability import http, metrics
from coinfeed.observability.process import live_task_count, open_fd_count
from coinfeed.service import Service
from tests.fakes import FakeWebSocket
from tests.helpers import serving_fake_feed, wait_for

CONNECTIONS = 50
PIPELINED = 200
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
SETTLE = 3.0
"""Seconds after the clients left by which the server must have dropped their work."""


@pytest.fixture
async def service(make_settings: Callable[..., Settings]) -> AsyncIterator[Service]:
    async with serving_fake_feed(make_settings, FakeWebSocket()) as (service, _client):
        yield service


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times /metrics was rendered (one entry per render)."""
    counted: list[int] = []

    def counting(registry: Any) -> bytes:
        counted.append(1)
        return bytes(generate_latest(registry))

    monkeypatch.setattr(metrics, "generate_latest", counting)
    return counted


def address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def flood_then_leave(where: tuple[str, int], connections: int, pipelined: int) -> None:
    """Open ``connections`` sockets, pipeline ``pipelined`` requests on each, close them all
    without reading a byte (plain sockets, in a thread: like an outside client)."""
    sockets = [socket.create_connection(where) for _ in range(connections)]
    for sock in sockets:
        sock.sendall(REQUEST * pipelined)
    for sock in sockets:
        sock.close()


async def flood_and_settle(service: Service, renders: list[int]) -> None:
    """The flood; then, within :data:`SETTLE` s, no connection or task is left over and
    rendering has stopped."""
    assert service.http_url is not None
    await trio.sleep(0.2)  # the service's own tasks and files are all up
    fds, tasks = open_fd_count() or 0, live_task_count()
    await trio.to_thread.run_sync(
        flood_then_leave, address(service.http_url), CONNECTIONS, PIPELINED
    )
    await wait_for(lambda: (open_fd_count() or 0) <= fds, SETTLE, "the connections to close")
    await wait_for(lambda: live_task_count() <= tasks, SETTLE, "the connection tasks to end")
    settled, cpu = len(renders), time.process_time()
    await trio.sleep(0.5)
    assert len(renders) == settled, "still rendering /metrics for clients that left"
    assert time.process_time() - cpu < 0.25, "still busy after the clients left"


async def test_a_flood_from_clients_that_left_stops_at_once_and_leaves_nothing_behind(
    service: Service, renders: list[int]
) -> None:
    await flood_and_settle(service, renders)
    # 10,000 requests queued; each connection answered at most MAX_REQUESTS_PER_CONNECTION
    # times (hypercorn then closes it), usually twice (its writes fail, the next is refused).
    assert len(renders) <= CONNECTIONS * http.MAX_REQUESTS_PER_CONNECTION, len(renders)


async def test_a_client_that_left_gets_no_more_work_than_its_failed_writes(
    service: Service, renders: list[int]
) -> None:
    assert service.http_url is not None
    fds = open_fd_count() or 0
    stream = await trio.open_tcp_stream(*address(service.http_url))
    await stream.send_all(REQUEST * PIPELINED)
    await stream.aclose()
    await wait_for(lambda: (open_fd_count() or 0) <= fds, SETTLE, "the connection to close")
    # Well under MAX_REQUESTS_PER_CONNECTION: the connection was dropped for its failed writes.
    assert 0 < len(renders) <= http.MAX_REQUESTS_PER_CONNECTION // 2, len(renders)


async def test_a_pipelining_client_is_answered_a_bounded_number_of_requests(
    service: Service,
) -> None:
    assert service.http_url is not None
    stream = await trio.open_tcp_stream(*address(service.http_url))
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED)
    received = bytearray()
    with trio.fail_after(5):
        while chunk := await stream.receive_some():
            received += chunk  # until the server closes the connection
    await stream.aclose()
    # The last answer carries "Connection: close". hypercorn may close the connection before
    # writing it, when it parses the next queued request first ("data when expecting EOF").
    answered = received.count(b"HTTP/1.1 200 ")
    assert http.MAX_REQUESTS_PER_CONNECTION - 1 <= answered <= http.MAX_REQUESTS_PER_CONNECTION


async def test_keep_alive_clients_reconnect_past_the_bound(service: Service) -> None:
    async with httpx.AsyncClient(base_url=str(service.http_url)) as client:
        for _ in range(3 * http.MAX_REQUESTS_PER_CONNECTION):
            assert (await client.get("/health")).status_code == 200
