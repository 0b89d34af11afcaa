"""The WebSocket seam: the interface the connection talks to, and its errors.

The service talks to :class:`Transport` / :class:`WebSocket`; tests may pass fakes. Three
implementations, chosen by the ``transport`` setting: coinfeed's own client (``direct``,
:mod:`coinfeed.transport.direct`: RFC 6455 framing on a trio stream, no library and no background
task; the default, measured fastest) and, in :mod:`coinfeed.transport.libraries` (the only
module that imports a WebSocket library), trio-websocket and websockets' native trio client.
:meth:`WebSocket.receive_batch` hands over every message that is already buffered in one call,
so one await (one task switch) is paid per socket read rather than per frame. None relies on a
library's own connect timeout: the caller's ``fail_after`` does.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

import attrs
import trio

ABNORMAL_CLOSURE = 1006
CLOSE_TIMEOUT = 1.0
"""Seconds a client waits for the server's side of the closing handshake."""


class TransportError(Exception):
    """Connecting failed (refused, reset, bad handshake). ``status`` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportClosed(Exception):
    """The connection is closed; ``code`` is the WebSocket close code (1006 = abnormal)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed code={code} reason={reason or ''}")
        self.code = code
        self.reason = reason


@attrs.frozen
class Target:
    """Where a ``ws://`` or ``wss://`` URL points, as every transport connects to it."""

    secure: bool
    host: str
    port: int
    host_header: str
    resource: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """The URL's parts, or :class:`TransportError` for one that is not a WebSocket URL."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # an unclosed IPv6 literal, a port out of range
            raise TransportError(f"bad URL {url!r}: {exc}") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise TransportError(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        default_port = 443 if secure else 80
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        port = port or default_port
        host_header = shown if port == default_port else f"{shown}:{port}"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(secure, host, port, host_header, resource)


class WebSocket(Protocol):
    """An open WebSocket connection."""

    async def receive_batch(self, room: int | None = None) -> list[str | bytes]:
        """Wait for at least one message; return it with every message already buffered.

        ``room`` (messages the caller can take now) is a hint: a transport that reads the
        socket itself sizes its reads by it; the library clients, whose readers run on their
        own, ignore it.
        """
        ...

    async def send(self, message: str | bytes) -> None: ...

    async def aclose(self) -> None:
        """Close with code 1000; must be called shielded when the caller is cancelled."""
        ...


class Transport(Protocol):
    """Opens WebSocket connections whose background tasks live in ``nursery``."""

    async def connect(
        self, nursery: trio.Nursery, url: str, *, headers: list[tuple[str, str]]
    ) -> WebSocket: ...
