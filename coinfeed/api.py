"""The HTTP side: health, readiness, metrics, memory debug and books (ARCHITECTURE §4.3).

A Starlette app served by hypercorn's trio worker inside the root nursery, stopped through its
shutdown trigger. Handlers only read the service's state; they never await the pipeline, so a
stuck pipeline still answers /health and reports itself through /ready.

Exposure rule: on a loopback listener everything is open. On any other address ``/api/debug/*``
needs ``Authorization: Bearer <COINFEED_DEBUG_TOKEN>`` and is refused (403) without it, or always
when no token is configured. The other endpoints stay open.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import os
import sys
import tracemalloc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from coinfeed.allocator import pinned_mmap_threshold
from coinfeed.book import BookState
from coinfeed.cgroup import memory_limit_bytes
from coinfeed.logs import redact

if TYPE_CHECKING:
    from coinfeed.service import Service

_json = msgspec.json.Encoder(decimal_format="number")
MAX_BOOK_DEPTH = 1000
DEBUG_PREFIX = "/api/debug"
TRACEMALLOC_TOP = 20
BOOK_GRACE_FACTOR = 2.0
"""A book may be out of sync for ``BOOK_GRACE_FACTOR * stale_after`` before /ready says so."""


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this host only (127/8, ::1, localhost)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another name: it may resolve anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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


@attrs.define(slots=True, eq=False)
class BookSyncWatch:
    """Since when each expected book has been out of sync, from states sampled over time.

    ``observe`` is called by a sampler in :func:`serve_api` and on every /ready request; a book
    that was synced at the previous sample and is not now counts from this sample.
    """

    _since: dict[str, float] = attrs.field(factory=dict)

    def observe(self, states: dict[str, BookState], now: float) -> dict[str, float]:
        """Record ``states`` (symbol_id -> state) at ``now``; return out-of-sync since, by book."""
        for symbol_id, state in states.items():
            if state is BookState.SYNCED:
                self._since.pop(symbol_id, None)
            else:
                self._since.setdefault(symbol_id, now)
        for symbol_id in self._since.keys() - states.keys():
            del self._since[symbol_id]
        return dict(self._since)


def expected_book_states(service: Service) -> dict[str, BookState]:
    """The state of every subscribed incremental book; a book not created yet has no snapshot."""
    if "book" not in service.settings.types:
        return {}
    books = service.processor.books
    states: dict[str, BookState] = {}
    for symbol_id in service.settings.symbols:
        book = books.get(symbol_id)
        states[symbol_id] = BookState.NO_SNAPSHOT if book is None else book.state
    return states


def readiness_problems(service: Service, watch: BookSyncWatch) -> list[str]:
    """Why the service is not ready; empty when connected, subscribed, fresh, books and sinks ok."""
    status = service.status
    settings = service.settings
    now = trio.current_time()
    problems: list[str] = []
    if status.shutdown.is_set():
        problems.append("shutting down")
    if not status.connected:
        problems.append("not connected to CoinAPI")
    elif not status.subscribed:
        problems.append("not subscribed")
    elif status.connected_at is not None and status.last_frame_at == status.connected_at:
        # The connection sets both clocks when it opens: no frame has arrived since.
        problems.append(f"subscribed {now - status.connected_at:.1f}s ago, no frame yet")
    else:
        age = status.freshness(now)
        if age is not None and age > settings.stale_after:
            problems.append(f"no frame for {age:.1f}s (stale_after={settings.stale_after:g})")
    states = expected_book_states(service)
    grace = BOOK_GRACE_FACTOR * settings.stale_after
    for symbol_id, since in sorted(watch.observe(states, now).items()):
        if status.connected and now - since > grace:
            problems.append(
                f"book {symbol_id} {states[symbol_id].value} for {now - since:.1f}s "
                f"(grace {grace:g}s)"
            )
    problems.extend(f"sink {name} failing: {error}" for name, error in status.sink_failures.items())
    return [redact(problem, known_secrets(service)) for problem in problems]


def known_secrets(service: Service) -> list[str]:
    """The key and the debug token, which no answer may carry."""
    settings = service.settings
    return [s.reveal() for s in (settings.api_key, settings.debug_token) if s is not None]


def tracemalloc_report(limit: int = TRACEMALLOC_TOP) -> dict[str, Any]:
    """Traced memory and the ``limit`` largest allocation sites by size (file:line)."""
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        )
    )
    top = [
        {
            "where": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
            "size_bytes": stat.size,
            "count": stat.count,
        }
        for stat in snapshot.statistics("lineno")[:limit]
    ]
    return {"traced_bytes": current, "peak_bytes": peak, "top": top}


def memory_report(service: Service) -> dict[str, Any]:
    """What /api/debug/memory answers (ARCHITECTURE §4.3)."""
    from coinfeed.service import rss_bytes

    rss = rss_bytes()
    limit = memory_limit_bytes()
    queues = {
        name: {"size": q.depth, "capacity": q.capacity, "peak": q.peak}
        for name, q in service.queue_statistics().items()
    }
    report: dict[str, Any] = {
        "rss_bytes": rss,
        "memory_limit_bytes": limit,
        "rss_percent_of_limit": None if limit is None else round(100 * rss / limit, 1),
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
        "malloc_mmap_threshold": pinned_mmap_threshold(),
        "tasks": live_task_count(),
        "open_fds": open_fd_count(),
    }
    if service.settings.debug_tracemalloc and tracemalloc.is_tracing():
        report["tracemalloc"] = tracemalloc_report()
    return report


class DebugGuard:
    """ASGI middleware: ``/api/debug/*`` needs the bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self._token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        debug = path == DEBUG_PREFIX or path.startswith(DEBUG_PREFIX + "/")
        if scope["type"] == "http" and debug and not self._authorized(scope["headers"]):
            await json_response({"error": "forbidden"}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        if self._token is None:
            return False
        given = [value for name, value in headers if name.lower() == b"authorization"]
        if len(given) != 1:
            return False
        scheme, _, credentials = given[0].strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)


def build_app(
    service: Service, *, exposed: bool = False, watch: BookSyncWatch | None = None
) -> Starlette:
    """The Starlette app over one running service; ``exposed`` applies the debug token rule."""
    watch = watch or BookSyncWatch()

    async def health(_request: Request) -> Response:
        return json_response({"status": "alive"})

    async def ready(_request: Request) -> Response:
        problems = readiness_problems(service, watch)
        if problems:
            return json_response({"status": "not ready", "reasons": problems}, 503)
        return json_response({"status": "ready"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def memory(_request: Request) -> Response:
        return json_response(memory_report(service))

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

    token = service.settings.debug_token
    middleware = (
        [Middleware(DebugGuard, token=token.reveal() if token else None)] if exposed else []
    )
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
            Route(DEBUG_PREFIX + "/memory", memory),
            Route("/api/books/{symbol_id}", book),
        ],
        middleware=middleware,
    )


async def serve_api(
    service: Service,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    exposed: bool | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; ``task_status.started`` gets the base URL.

    ``exposed`` defaults to "``host`` is not loopback"; tests pass True to exercise the rule.
    """
    exposed = not is_loopback(host) if exposed is None else exposed
    if exposed and service.settings.debug_token is None:
        logger.warning(
            "debug endpoints disabled off-loopback: set COINFEED_DEBUG_TOKEN to enable them",
            host=host,
        )
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    watch = BookSyncWatch()
    app = build_app(service, exposed=exposed, watch=watch)
    started_tracing = service.settings.debug_tracemalloc and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    # coinfeed_ready reads the same problems, through the same watch, as /ready.
    service.metrics.sources.readiness = lambda: not readiness_problems(service, watch)
    try:
        async with trio.open_nursery() as nursery:

            async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(
                    app,  # type: ignore[arg-type]  # Starlette is an ASGI 3 app
                    config,
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # the sampler too

            nursery.start_soon(_sample_books, service, watch)
            binds = await nursery.start(serve_then_stop)
            task_status.started(binds[0] if binds else "")
    finally:
        service.metrics.sources.readiness = None
        if started_tracing:
            tracemalloc.stop()


async def _sample_books(service: Service, watch: BookSyncWatch) -> None:
    """Feed the watch between /ready calls, so "out of sync since" is accurate to a tick."""
    interval = min(1.0, service.settings.stale_after / 4)
    while True:
        watch.observe(expected_book_states(service), trio.current_time())
        await trio.sleep(interval)
