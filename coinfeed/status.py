"""Shared live status of one service run, and how a task asks for shutdown.

The connection, the processor and the HTTP side read and write :class:`ServiceStatus`; all of
them run in one trio thread, so plain attributes need no locking.
"""

from __future__ import annotations

import attrs
import trio
from loguru import logger

from coinfeed.core.decoding import InvalidFrame
from coinfeed.logs import RateLimitedLog


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
