"""CoinAPI's REST recovery endpoints, answered from the simulator's ground truth (Starlette).

Every request passes one gate (:meth:`RestApi.endpoint`) that counts it and its concurrency
(tests assert coinfeed never has more than 2 in flight), applies fault delays, checks the key
(401), the optional request budget (429 + ``Retry-After``), injected failures (429, 5xx), and
adds the rate-limit headers. ``/_sim/truth`` is the simulator's own: no key, not counted.

History windows are ``time_start <= time_exchange < time_end`` and must lie within one UTC day
(``time_end`` may be the next midnight); without ``time_end`` the window runs to the end of
``time_start``'s day.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import attrs
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coinfeed.core.protocol import encode, format_time
from coinfeed.core.rest_protocol import RestErrorBody
from coinfeed.simulator.config import SimulatorConfig
from coinfeed.simulator.faults import RestFaults
from coinfeed.simulator.truth import Truth

MAX_LIMIT = 100_000
_RAW_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """A parameter is wrong: answered with 400 and the message."""


@attrs.define
class RestStats:
    """Requests answered by the REST side, and how many were in flight at once at most."""

    requests_total: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    by_status: dict[int, int] = attrs.field(factory=dict)
    faults_injected: int = 0


@attrs.define(eq=False)
class RestApi:
    """The REST application state: truth to answer from, faults, budget and stats."""

    config: SimulatorConfig
    truth: Truth
    faults: RestFaults
    stats: RestStats = attrs.field(factory=RestStats)
    _spent: deque[tuple[float, int]] = attrs.field(factory=deque)

    def app(self) -> Starlette:
        """The Starlette application (it handles ASGI lifespan, which hypercorn needs)."""
        e = self.endpoint
        return Starlette(
            routes=[
                Route("/v1/trades/{symbol_id}/history", e(self.trades_history)),
                Route("/v1/trades/{symbol_id}/latest", e(self.trades_latest)),
                Route("/v1/orderbooks/{symbol_id}/current", e(self.book_current)),
                Route("/v1/quotes/{symbol_id}/current", e(self.quote_current)),
                Route("/_sim/truth", self.truth_dump),
                Route("/{path:path}", e(self.not_found)),
            ]
        )

    # -- the gate -----------------------------------------------------------------------------

    def endpoint(self, handler: Handler) -> Handler:
        """Wrap a handler with counting, faults, key check, budget and rate-limit headers."""

        async def gated(request: Request) -> Response:
            st = self.stats
            st.requests_total += 1
            st.in_flight += 1
            st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
            try:
                response = await self._answer(handler, request)
            finally:
                st.in_flight -= 1
            st.by_status[response.status_code] = st.by_status.get(response.status_code, 0) + 1
            return response

        return gated

    async def _answer(self, handler: Handler, request: Request) -> Response:
        decision = self.faults.decide()
        if decision.delay:
            await trio.sleep(decision.delay)
        keys = self.config.keys
        key = request.headers.get("x-coinapi-key") or request.query_params.get("apikey")
        if keys is not None and key not in keys:
            return _error(401, "Invalid API key")
        now = trio.current_time()
        retry = self._budget_retry_after(now)
        if retry is not None:
            response = _error(429, "Too many requests: request budget exhausted.")
            response.headers["Retry-After"] = str(retry)
        elif decision.status is not None:
            self.stats.faults_injected += 1
            response = _error(decision.status, f"Simulated failure (HTTP {decision.status}).")
            if decision.retry_after is not None:
                response.headers["Retry-After"] = str(decision.retry_after)
        else:
            try:
                response = await handler(request)
            except BadRequest as exc:
                response = _error(400, str(exc))
            if self.config.rest_budget is not None:
                self._spent.append((now, int(response.headers["X-RateLimit-Request-Cost"])))
        self._add_budget_headers(response, now)
        return response

    def _budget_used(self, now: float) -> int:
        window = self.config.rest_budget_window
        while self._spent and self._spent[0][0] <= now - window:
            self._spent.popleft()
        return sum(cost for _, cost in self._spent)

    def _budget_retry_after(self, now: float) -> int | None:
        budget = self.config.rest_budget
        if budget is None or self._budget_used(now) < budget:
            return None
        return max(1, math.ceil(self._spent[0][0] + self.config.rest_budget_window - now))

    def _add_budget_headers(self, response: Response, now: float) -> None:
        budget = self.config.rest_budget
        if budget is None:
            return
        used = self._budget_used(now)
        reset_in = self._spent[0][0] + self.config.rest_budget_window - now if self._spent else 0
        reset = datetime.now(UTC) + timedelta(seconds=max(0.0, reset_in))
        response.headers["X-RateLimit-Limit"] = str(budget)
        response.headers["X-RateLimit-Used"] = str(used)
        response.headers["X-RateLimit-Remaining"] = str(max(0, budget - used))
        response.headers["X-RateLimit-Reset"] = format_time(reset)

    # -- endpoints ----------------------------------------------------------------------------

    async def trades_history(self, request: Request) -> Response:
        """``/v1/trades/{symbol_id}/history``: oldest first, filtered on ``time_exchange``."""
        q = request.query_params
        start, end = _window(q.get("time_start"), q.get("time_end"), q.get("date"))
        limit = _int_param(q.get("limit"), "limit", default=100, high=MAX_LIMIT)
        i = self.truth.index.get(request.path_params["symbol_id"])
        rows = [] if i is None else self.truth.logs[i].history(start, end, limit)
        return _json_list(rows)

    async def trades_latest(self, request: Request) -> Response:
        """``/v1/trades/{symbol_id}/latest``: newest first."""
        limit = _int_param(request.query_params.get("limit"), "limit", default=100, high=MAX_LIMIT)
        i = self.truth.index.get(request.path_params["symbol_id"])
        return _json_list([] if i is None else self.truth.logs[i].latest(limit))

    async def book_current(self, request: Request) -> Response:
        """``/v1/orderbooks/{symbol_id}/current``: the market's true book (550 if unknown)."""
        raw = request.query_params.get("limit_levels")
        depth = None if raw is None else _int_param(raw, "limit_levels", default=0, high=10**6)
        book = self.truth.book(request.path_params["symbol_id"], depth)
        if book is None:
            return _error(550, "No data for this symbol_id.")
        return _json(encode(book), 1)

    async def quote_current(self, request: Request) -> Response:
        """``/v1/quotes/{symbol_id}/current``: one object with ``last_trade`` (550 if unknown)."""
        quote = self.truth.quote(request.path_params["symbol_id"])
        if quote is None:
            return _error(550, "No data for this symbol_id.")
        return _json(encode(quote), 1)

    async def not_found(self, request: Request) -> Response:
        """Any other path: 404 (gated like the rest, so it carries the cost header too)."""
        return _error(404, f"Not found: {request.url.path[:80]}")

    async def truth_dump(self, request: Request) -> Response:
        """``/_sim/truth[?symbol_id=A,B]``: trades, books and counters (simulator only)."""
        raw = request.query_params.get("symbol_id")
        ids = raw.split(",") if raw else None
        return Response(encode(self.truth.snapshot(ids)), media_type="application/json")


def _json(body: bytes, items: int) -> Response:
    cost = max(1, math.ceil(items / 100))
    headers = {"X-RateLimit-Request-Cost": str(cost)}
    return Response(body, media_type="application/json", headers=headers)


def _json_list(rows: list[bytes]) -> Response:
    return _json(b"[" + b",".join(rows) + b"]", len(rows))


def _error(status: int, message: str) -> Response:
    headers = {"X-RateLimit-Request-Cost": "1"}
    body = encode(RestErrorBody(error=message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _int_param(raw: str | None, name: str, *, default: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not 1 <= value <= high:
        raise BadRequest(f"{name} must be between 1 and {high}, got {value}")
    return value


def _parse_time(raw: str, name: str) -> tuple[datetime, str]:
    """A UTC datetime and the CoinAPI-format string to compare stored times with."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, got {raw[:40]!r}") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment, raw if _RAW_TIME.match(raw) else format_time(moment)


def _window(start_raw: str | None, end_raw: str | None, date: str | None) -> tuple[str, str]:
    """Validate a history window: ``[start, end)`` strings within one UTC day."""
    if start_raw is None:
        if date is None:
            raise BadRequest("time_start (or date) is required")
        start_raw = f"{date}T00:00:00"
    start, start_s = _parse_time(start_raw, "time_start")
    midnight = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
    if end_raw is None:
        return start_s, format_time(midnight)
    end, end_s = _parse_time(end_raw, "time_end")
    if end < start:
        raise BadRequest("time_end must not be before time_start")
    if end > midnight:
        raise BadRequest("time_start and time_end must lie within the same UTC day")
    return start_s, end_s
