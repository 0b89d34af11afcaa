"""The HTTP side: health, readiness, metrics, memory debug and books (ARCHITECTURE §4.3).

A Starlette app served by hypercorn's trio worker inside the root nursery, stopped through its
shutdown trigger. Handlers only read the service's state; they never await the pipeline, so a
stuck pipeline still answers /health and reports itself through /ready.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coinfeed.book import BookState

if TYPE_CHECKING:
    from coinfeed.service import Service

_json = msgspec.json.Encoder(decimal_format="number")
MAX_BOOK_DEPTH = 1000


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def live_task_count() -> int:
    """Tasks alive in this trio run (trio's own system tasks included: compare to a baseline)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def open_fd_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def readiness_problems(service: Service) -> list[str]:
    """Why the service is not ready; empty when it is (connected, subscribed, fresh, sinks ok)."""
    status = service.status
    problems: list[str] = []
    if status.shutdown.is_set():
        problems.append("shutting down")
    if not status.connected:
        problems.append("not connected to CoinAPI")
    elif not status.subscribed:
        problems.append("not subscribed")
    age = status.freshness(trio.current_time())
    if status.connected and age is not None and age > service.settings.stale_after:
        problems.append(f"no frame for {age:.1f}s (stale_after={service.settings.stale_after:g})")
    problems.extend(f"sink {name} failing: {error}" for name, error in status.sink_failures.items())
    grace = service.settings.stale_after * 2
    connected_for = (
        trio.current_time() - status.connected_at if status.connected_at is not None else 0.0
    )
    if status.connected and connected_for > grace:
        for book in service.processor.books:
            if book.state is not BookState.SYNCED:
                problems.append(f"book {book.symbol_id} is {book.state.value}")
    return problems


def build_app(service: Service) -> Starlette:
    """The Starlette app over one running :class:`~coinfeed.service.Service`."""

    async def health(_request: Request) -> Response:
        return json_response({"status": "alive"})

    async def ready(_request: Request) -> Response:
        problems = readiness_problems(service)
        if problems:
            return json_response({"status": "not ready", "reasons": problems}, 503)
        return json_response({"status": "ready"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def memory(_request: Request) -> Response:
        from coinfeed.service import rss_bytes

        queues = {
            name: {"size": q.depth, "capacity": q.capacity, "peak": q.peak}
            for name, q in service.queue_statistics().items()
        }
        return json_response(
            {
                "rss_bytes": rss_bytes(),
                "python": {
                    "allocated_blocks": sys.getallocatedblocks(),
                    "gc_counts": list(gc.get_count()),
                    "gc_collections": [s["collections"] for s in gc.get_stats()],
                    "gc_objects": len(gc.get_objects()),
                },
                "queues": queues,
                "frames_dropped": service.queue.dropped_total,
                "recovery_pending": service.recovery.pending,
                "dedup_entries": len(service.processor.dedup),
                "tasks": live_task_count(),
                "open_fds": open_fd_count(),
            }
        )

    async def book(request: Request) -> Response:
        symbol_id = request.path_params["symbol_id"]
        try:
            depth = int(request.query_params.get("depth", "10"))
        except ValueError:
            return json_response({"error": "depth must be an integer"}, 400)
        if not 1 <= depth <= MAX_BOOK_DEPTH:
            return json_response({"error": f"depth must be 1..{MAX_BOOK_DEPTH}"}, 400)
        found = service.processor.books.get(symbol_id)
        if found is None:
            return json_response({"error": f"no book for symbol_id {symbol_id!r}"}, 404)
        asks, bids = found.top(depth)
        return json_response(
            {
                "symbol_id": symbol_id,
                "state": found.state.value,
                "sequence": found.sequence,
                "asks": asks,
                "bids": bids,
            }
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
            Route("/api/debug/memory", memory),
            Route("/api/books/{symbol_id}", book),
        ]
    )


async def serve_api(
    service: Service,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; ``task_status.started`` gets the base URL."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                build_app(service),  # type: ignore[arg-type]  # Starlette is an ASGI 3 app
                config,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
        )
        task_status.started(binds[0] if binds else "")
