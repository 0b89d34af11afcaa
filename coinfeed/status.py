"""Shared live status of one service run, and the control items that travel with frames.

The connection, the processor and the HTTP API read and write :class:`ServiceStatus`; all of
them run in one trio thread, so plain attributes need no locking. Control items are ordered
with the frames in the :class:`~coinfeed.framequeue.FrameQueue`, so the processor sees a
connection change or a resubscribe exactly between the frames before and after it.
"""

from __future__ import annotations

from datetime import datetime

import attrs
import trio
from loguru import logger

from coinfeed.logs import RateLimitedLog
from coinfeed.protocol import InvalidFrame


@attrs.frozen
class ConnectionOpened:
    """Connected and subscribed (hello sent) at wall time ``at``; sequences start afresh."""

    connection_id: int
    at: datetime


@attrs.frozen
class ConnectionLost:
    """The connection ended for ``reason`` (the next one resets every stream)."""

    connection_id: int
    reason: str


@attrs.frozen
class Resubscribed:
    """``symbols`` were unsubscribed at wall time ``at`` and are being subscribed again."""

    connection_id: int
    symbols: frozenset[str]
    at: datetime


@attrs.frozen
class Fatal:
    """Why the service must stop with a non-zero exit code."""

    exit_code: int
    message: str


@attrs.define(slots=True, eq=False)
class ServiceStatus:
    """What /ready, /api/debug and the stats line report, and how tasks ask for shutdown."""

    connected: bool = False
    subscribed: bool = False
    connection_id: int = 0
    connected_at: float | None = None
    last_frame_at: float | None = None
    frames_received: int = 0
    reconnect_announced_for: int = -1
    last_server_error: str | None = None
    fatal: Fatal | None = None
    sink_failures: dict[str, str] = attrs.field(factory=dict)
    shutdown: trio.Event = attrs.field(factory=trio.Event)
    shutdown_reason: str | None = None
    _invalid_log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(interval=10.0))

    def request_shutdown(self, reason: str, fatal: Fatal | None = None) -> None:
        """Begin the ordered shutdown; the first fatal reason decides the exit code."""
        if fatal is not None and self.fatal is None:
            self.fatal = fatal
        if not self.shutdown.is_set():
            self.shutdown_reason = reason
            self.shutdown.set()

    def server_error(self, connection_id: int, message: str) -> None:
        """CoinAPI sent an ``error`` frame (the connection decides whether it is terminal)."""
        self.last_server_error = message
        logger.bind(connection_id=connection_id, error=message).error("CoinAPI error frame")

    def log_invalid(self, frame: InvalidFrame) -> None:
        self._invalid_log.warning(
            f"invalid:{frame.reason}",
            "invalid frame skipped",
            reason=frame.reason,
            detail=frame.detail[:120],
            size=frame.size,
        )

    def freshness(self, now: float) -> float | None:
        """Seconds since the last frame, or None before the first one."""
        return None if self.last_frame_at is None else now - self.last_frame_at
