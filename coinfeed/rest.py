"""CoinAPI REST client for recovery: the only module that imports httpx.

Each method makes exactly one HTTP request and turns every outcome into a record or one of the
errors below; retry policy, concurrency caps and pacing belong to the recovery scheduler, so
there is one place that decides how hard coinfeed leans on CoinAPI. The key travels in the
``X-CoinAPI-Key`` header only, so no URL, log line or exception text contains it.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import attrs
import httpx
import msgspec

from coinfeed.core.protocol import format_time
from coinfeed.core.rest_protocol import (
    RestBook,
    RestTrade,
    rest_book_decoder,
    rest_error_decoder,
    rest_trades_decoder,
)
from coinfeed.logs import redact
from coinfeed.tls import client_context, describe_error

T = TypeVar("T")

NO_DATA_STATUS: Final = 550
"""CoinAPI's "no such single item right now"."""


class RestError(Exception):
    """A REST call failed; ``status`` is the HTTP status, or None for transport failures."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestAuthError(RestError):
    """401/403: the key is wrong or lacks privileges. Retrying will not help."""


class RestBadRequest(RestError):
    """400 and other 4xx: the request itself is wrong (e.g. a window across UTC midnight)."""


class RestRetryable(RestError):
    """429, 5xx, timeouts and connection errors: worth retrying, after ``retry_after`` if set."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def split_at_utc_midnight(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """CoinAPI history windows must lie within one UTC day: split ``[start, end]`` at midnights."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    windows: list[tuple[datetime, datetime]] = []
    while start < end:
        midnight = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
        stop = min(end, midnight - timedelta(microseconds=1))
        windows.append((start, stop))
        start = midnight
    if not windows:
        windows.append((start, end))
    return windows


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


@attrs.define(slots=True, eq=False)
class RestClient:
    """One ``httpx.AsyncClient`` for the process; construct with :func:`open_rest_client`."""

    _client: httpx.AsyncClient
    secrets: tuple[str, ...] = ()
    """Values an error message must not carry (the key), redacted before any cut."""
    requests_total: int = 0

    async def trades_history(
        self, symbol_id: str, time_start: datetime, time_end: datetime, *, limit: int
    ) -> list[RestTrade]:
        """Trades with ``time_start <= time_exchange <= time_end`` (one UTC day), oldest first."""
        params = {
            "time_start": format_time(time_start),
            "time_end": format_time(time_end),
            "limit": str(limit),
        }
        body = await self._get(f"/v1/trades/{symbol_id}/history", params)
        return self._decode(rest_trades_decoder, body) if body is not None else []

    async def trades_latest(self, symbol_id: str, *, limit: int) -> list[RestTrade]:
        """The most recent trades, newest first."""
        body = await self._get(f"/v1/trades/{symbol_id}/latest", {"limit": str(limit)})
        return self._decode(rest_trades_decoder, body) if body is not None else []

    async def current_book(self, symbol_id: str, *, limit_levels: int) -> RestBook | None:
        """The current L2 book (unsequenced), or None when CoinAPI has none (550)."""
        body = await self._get(
            f"/v1/orderbooks/{symbol_id}/current", {"limit_levels": str(limit_levels)}
        )
        return self._decode(rest_book_decoder, body) if body is not None else None

    async def aclose(self) -> None:
        await self._client.aclose()

    def _decode(self, decoder: msgspec.json.Decoder[T], body: bytes) -> T:
        try:
            return decoder.decode(body)
        except msgspec.MsgspecError as exc:
            raise RestRetryable(f"undecodable response: {exc}") from None

    async def _get(self, path: str, params: dict[str, str]) -> bytes | None:
        self.requests_total += 1
        try:
            response = await self._client.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise RestRetryable(f"timeout ({type(exc).__name__}) on {path}") from None
        except httpx.TransportError as exc:
            cause = describe_error(exc, self._client.base_url.host)
            raise RestRetryable(f"{cause} ({type(exc).__name__}) on {path}") from None
        headers = response.headers
        status = response.status_code
        if status == 200:
            return response.content
        if status == NO_DATA_STATUS:
            return None
        detail = _error_text(response.content, self.secrets)
        message = f"HTTP {status} on {path}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            raise RestAuthError(message, status=status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            raise RestRetryable(message, status=status, retry_after=retry_after)
        raise RestBadRequest(message, status=status)


def _error_text(body: bytes, secrets: tuple[str, ...]) -> str:
    # Redact, then cut: a cut first could leave a prefix of the key for nothing to recognise.
    try:
        return redact(rest_error_decoder.decode(body).text, secrets)[:200]
    except msgspec.MsgspecError:
        return ""


def open_rest_client(
    base_url: str,
    api_key: str | None,
    *,
    timeout: float = 10.0,
    max_connections: int = 4,
    ssl_context: ssl.SSLContext | None = None,
) -> RestClient:
    """Build the client; the caller must ``await client.aclose()`` (shielded on shutdown).
    ``ssl_context`` is the one the WebSocket uses too (:func:`coinfeed.tls.client_context`)."""
    headers = {"Accept": "application/json", "User-Agent": "coinfeed"}
    if api_key:
        headers["X-CoinAPI-Key"] = api_key
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=2),
        follow_redirects=False,
        verify=ssl_context if ssl_context is not None else client_context(),
    )
    return RestClient(client, secrets=(api_key,) if api_key else ())
