"""The HTTP side: health, readiness, metrics, memory debug and books (docs/architecture.md).

A Starlette app served by hypercorn's trio worker inside the root nursery, stopped through its
shutdown trigger; ``GET /metrics`` is answered in front of it (:class:`MetricsRoute`), gzipped when
the scraper accepts it. Handlers read a :class:`ServiceView`, never the service itself, and never
await the pipeline, so a stuck pipeline still answers /health and reports itself through /ready.

Exposure rule: on a loopback listener everything is open. On any other address ``/api/debug/*``
needs ``Authorization: Bearer <COINFEED_DEBUG_TOKEN>`` and is refused (403) without it, or always
when no token is configured. The other endpoints stay open.

Abuse rule: a client that pipelines many requests and leaves must not leave work behind.
hypercorn parses a connection's pipelined requests into h11 and answers them one at a time
without reading the socket in between, so it never sees the client go: each queued request still
runs, and only learns of the departure when writing its own answer fails (hypercorn then delivers
``http.disconnect`` to that request and goes on with the next one). So:

- hypercorn closes a connection after :data:`MAX_REQUESTS_PER_CONNECTION` answers, dropping what
  was queued behind the last one (``keep_alive_max_requests``);
- :class:`GoneClientGuard` refuses, with ``Connection: close``, the next request of a connection
  whose answer could not be written, which drops the rest of its queue at once.

/metrics is rendered for every request, never reused: ``coinfeed_ready`` must agree with /ready.
"""

from __future__ import annotations

import errno
import gc
import hmac
import ipaddress
import math
import socket
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import attrs
import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coinfeed.core.book import OrderBook
from coinfeed.framequeue import QueueStatistics
from coinfeed.observability.process import (
    live_task_count,
    memory_limit_bytes,
    open_fd_count,
    pinned_mmap_threshold,
    rss_bytes,
)
from coinfeed.observability.readiness import Readiness

E = TypeVar("E", bound=BaseException)
_json = msgspec.json.Encoder(decimal_format="number")
MAX_BOOK_DEPTH = 1000
DEBUG_PREFIX = "/api/debug"
TRACEMALLOC_TOP = 20
MAX_REQUESTS_PER_CONNECTION = 10
"""Answers per connection; the last carries ``Connection: close`` and the connection ends."""
GONE_CLIENT_SECONDS = 1.0
"""How long a client whose answer could not be written is remembered (see GoneClientGuard)."""
GONE_CLIENTS_KEPT = 1024


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


@attrs.frozen
class ServiceView:
    """What the HTTP side may read of a running service, and nothing more."""

    readiness: Readiness
    metrics: Callable[[], Callable[[], bytes]]
    """Reads the metrics now; the callable it returns renders them (in any thread)."""
    book: Callable[[str], OrderBook | None]
    """The incremental book of a symbol, if there is one."""
    queue_statistics: Callable[[], dict[str, QueueStatistics]]
    """Every queue's size, capacity and peak (the raw frame queue and each sink's channel)."""
    pipeline_figures: Callable[[], dict[str, int]]
    """Counts /api/debug/memory reports: ``frames_dropped``, ``recovery_pending``,
    ``dedup_entries``."""
    symbols: Callable[[], dict[str, Any]] = dict
    """The body of ``GET /api/symbols``: per-symbol freshness and the silent ones."""
    latency: Callable[[], dict[str, Any]] = dict
    """The body of ``GET /api/latency``: p50/p99 per exchange and stage."""
    debug_token: str | None = None
    debug_tracemalloc: bool = False


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


def memory_report(view: ServiceView) -> dict[str, Any]:
    """What /api/debug/memory answers (docs/operations.md lists every field)."""
    rss = rss_bytes()
    limit = memory_limit_bytes()
    queues = {
        name: {"size": q.depth, "capacity": q.capacity, "peak": q.peak}
        for name, q in view.queue_statistics().items()
    }
    figures = view.pipeline_figures()
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
        "frames_dropped": figures["frames_dropped"],
        "recovery_pending": figures["recovery_pending"],
        "dedup_entries": figures["dedup_entries"],
        "bars_retained": figures["bars_retained"],
        "malloc_mmap_threshold": pinned_mmap_threshold(),
        "tasks": live_task_count(),
        "open_fds": open_fd_count(),
    }
    if view.debug_tracemalloc and tracemalloc.is_tracing():
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


def closing_response(status: int = 503) -> Response:
    """An empty answer after which hypercorn closes the connection, discarding what is queued."""
    return Response(status_code=status, headers={"connection": "close"})


class GoneClientGuard:
    """ASGI middleware: no more work for a connection whose client is known to have left.

    An ``http.disconnect`` that arrives before the answer's last body message is handed over
    means the client is gone (hypercorn could not write the answer, or read the end of the
    stream); the one during that last message is hypercorn's routine end of a request. The
    client's address is then remembered for :data:`GONE_CLIENT_SECONDS` and the next request
    from it, which on a pipelined connection follows at once, gets :func:`closing_response`
    without reaching the app. Another connection from that address so soon is unlikely (a
    client's ports go round its whole ephemeral range); it would get that empty 503 once.

    Starlette's ``Request.is_disconnected()`` cannot be used for this: it receives under an
    already-cancelled scope, and trio's channels check cancellation before their buffer, so
    under hypercorn's trio worker it always answers False.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._gone: dict[Hashable, float] = {}
        """Client address -> when it is forgotten; in that order, as the delay is fixed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or client is None:
            await self.app(scope, receive, send)
            return
        peer = tuple(client)
        if self._gone.pop(peer, -math.inf) > trio.current_time():
            await closing_response()(scope, receive, send)
            return
        answered = False
        # Room for the one request message a GET handler never reads, so that watch() gets to
        # the disconnect behind it; a body's further chunks wait for the app as before.
        relay, relayed = trio.open_memory_channel[Message](1)

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" and not answered:
                    self._remember(peer)
                await relay.send(message)

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # A failed write of the response start queued http.disconnect: two scheduling
                # rounds let watch() take it before it would pass for the routine one.
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                answered = True
            await send(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await self.app(scope, relayed.receive, watched_send)
            nursery.cancel_scope.cancel()

    def _remember(self, peer: Hashable) -> None:
        now = trio.current_time()
        self._gone.pop(peer, None)
        self._gone[peer] = now + GONE_CLIENT_SECONDS
        while len(self._gone) > GONE_CLIENTS_KEPT or next(iter(self._gone.values())) <= now:
            del self._gone[next(iter(self._gone))]


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (Prometheus sends ``gzip``)."""
    qualities: dict[str, float] = {}
    for coding in accept_encoding.split(","):
        name, _, parameters = coding.partition(";")
        quality, parameters = 1.0, parameters.strip().lower()
        if parameters.startswith("q="):
            try:
                quality = float(parameters[2:])
            except ValueError:
                quality = 0.0
        qualities[name.strip().lower()] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def gzipped(render: Callable[[], bytes]) -> bytes:
    """``render()``'s bytes in gzip, at the fastest level: the text repeats itself so much that
    level 1 already shrinks it 10-18 times, and zlib lets go of the GIL while it works."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(render()) + compressor.flush()


async def render_metrics(view: ServiceView, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """/metrics' body and its headers (beyond the type). The numbers are read here, on the
    event loop; the text, which grows with the market, is written and compressed in a worker
    thread (Metrics.snapshot), where the feed does not wait for it. Compressed, the loop also
    sends a tenth of the bytes."""
    render = view.metrics()
    if accepts_gzip(accept_encoding):
        body = await trio.to_thread.run_sync(gzipped, render, abandon_on_cancel=True)
        return body, {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    body = await trio.to_thread.run_sync(render, abandon_on_cancel=True)
    return body, {"Vary": "Accept-Encoding"}


class MetricsRoute:
    """ASGI: ``GET /metrics`` answered without Starlette's middleware and routing, which cost
    the event loop about a third of what the whole request costs; everything else goes on to
    ``app``."""

    def __init__(self, app: ASGIApp, view: ServiceView) -> None:
        self.app = app
        self._view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        accept_encoding = b", ".join(
            value for name, value in scope["headers"] if name.lower() == b"accept-encoding"
        )
        body, headers = await render_metrics(self._view, accept_encoding.decode("latin-1"))
        raw_headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", b"%d" % len(body)),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


def build_app(view: ServiceView, *, exposed: bool = False) -> ASGIApp:
    """The ASGI app over one running service; ``exposed`` applies the debug token rule."""

    async def health(_request: Request) -> Response:
        return json_response({"status": "alive"})

    async def ready(_request: Request) -> Response:
        problems = view.readiness.problems()
        if problems:
            return json_response({"status": "not ready", "reasons": problems}, 503)
        return json_response({"status": "ready"})

    async def metrics(request: Request) -> Response:
        # HEAD and the other methods; GET is answered by MetricsRoute.
        body, headers = await render_metrics(view, request.headers.get("accept-encoding", ""))
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)

    async def symbols(_request: Request) -> Response:
        return json_response(view.symbols())

    async def latency(_request: Request) -> Response:
        return json_response(view.latency())

    async def memory(_request: Request) -> Response:
        return json_response(memory_report(view))

    async def book(request: Request) -> Response:
        symbol_id = request.path_params["symbol_id"]
        try:
            depth = int(request.query_params.get("depth", "10"))
        except ValueError:
            return json_response({"error": "depth must be an integer"}, 400)
        if not 1 <= depth <= MAX_BOOK_DEPTH:
            return json_response({"error": f"depth must be 1..{MAX_BOOK_DEPTH}"}, 400)
        found = view.book(symbol_id)
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

    middleware = []
    if exposed:
        middleware.append(Middleware(DebugGuard, token=view.debug_token))
    starlette = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
            Route(DEBUG_PREFIX + "/memory", memory),
            Route("/api/books/{symbol_id}", book),
            Route("/api/symbols", symbols),
            Route("/api/latency", latency),
        ],
        middleware=middleware,
    )
    return GoneClientGuard(MetricsRoute(starlette, view))


_BIND_FAILURES: dict[int, str] = {
    errno.EADDRINUSE: "address already in use (another process listens there): pick a free port",
    errno.EADDRNOTAVAIL: "address not available on this host: pick one of its addresses "
    "(127.0.0.1 for this host only, 0.0.0.0 for every interface)",
    errno.EACCES: "permission denied (ports below 1024 need privileges): pick a higher port",
}


class ListenError(Exception):
    """The listener cannot bind ``host:port``; ``str()`` says where, why and what to change.

    A problem of the setting, not a bug: the entry point reports it in one line (exit 2).
    """

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host = host
        self.port = port
        self.error = error
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if isinstance(error, socket.gaierror):
            why = f"cannot resolve host {host!r}: use an IP address or a name this host resolves"
        else:
            why = _BIND_FAILURES.get(error.errno or 0) or error.strerror or str(error)
        super().__init__(f"cannot listen on {where}: {why}")


def check_listen_address(host: str, port: int) -> None:
    """Raise :class:`ListenError` if ``host:port`` cannot be bound now, as hypercorn binds it.

    A probe (the socket is closed at once), so a process can refuse a taken port before it
    connects anything; :func:`serve_api` raises the same error if the port goes in between.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn does
            probe.bind((host, port))
    except OSError as exc:
        raise ListenError(host, port, exc) from None


def sole_exception(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` if it is a ``kind``, or the one a group holds if it holds nothing else (each
    nursery on the way wraps it in a group of its own)."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(kind)
        if matched is None or rest is not None:
            return None
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        exc = leaf
    return exc if isinstance(exc, kind) else None


async def serve_api(
    view: ServiceView,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    exposed: bool | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; ``task_status.started`` gets the base URL.

    ``exposed`` defaults to "``host`` is not loopback"; tests pass True to exercise the rule.
    If the address cannot be bound, raises :class:`ListenError` (not wrapped in a group).
    """
    exposed = not is_loopback(host) if exposed is None else exposed
    if exposed and view.debug_token is None:
        logger.warning(
            "debug endpoints disabled off-loopback: set COINFEED_DEBUG_TOKEN to enable them",
            host=host,
        )
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    config.keep_alive_max_requests = MAX_REQUESTS_PER_CONNECTION
    app = build_app(view, exposed=exposed)
    started_tracing = view.debug_tracemalloc and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    readiness = view.readiness
    readiness.listeners += 1  # coinfeed_ready is exported while /ready is answered
    bind_error: OSError | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(
                    app,  # type: ignore[arg-type]  # an ASGI 3 app
                    config,
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # the sampler too

            nursery.start_soon(_sample_books, readiness)
            # Before it has started, hypercorn only binds and listens: an OSError then is the
            # address (taken, not this host's, privileged), which the operator can fix. It
            # arrives wrapped in hypercorn's nurseries' groups; raised from here it would be
            # wrapped once more, so keep it and raise it plainly once the nursery is closed.
            try:
                binds = await nursery.start(serve_then_stop)
            except OSError as exc:
                bind_error = exc
            except BaseExceptionGroup as group:
                bind_error = sole_exception(group, OSError)
                if bind_error is None:
                    raise
            if bind_error is not None:
                nursery.cancel_scope.cancel()
            else:
                task_status.started(binds[0] if binds else "")
    finally:
        readiness.listeners -= 1
        if started_tracing:
            tracemalloc.stop()
    if bind_error is not None:
        raise ListenError(host, port, bind_error) from None


async def _sample_books(readiness: Readiness) -> None:
    """Feed the watch between /ready calls, so "out of sync since" is accurate to a tick."""
    interval = min(1.0, readiness.stale_after / 4)
    while True:
        readiness.sample()
        await trio.sleep(interval)
