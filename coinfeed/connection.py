"""The connection task: connect, subscribe, read, watch liveness, reconnect with backoff.

How this works:
- Each attempt opens its own nursery (the WebSocket's reader lives in it). Connecting, the
  handshake and sending ``hello`` run under one ``trio.fail_after(connect_timeout)``: the
  library's own timeout does not bound a handshake that stalls after TCP connects.
- The reader hands every received batch to the :class:`FrameQueue` with ``put_frames_nowait``
  and never waits on the rest of the pipeline, so it keeps answering pings and CoinAPI's
  server-side buffer never fills because of us.
- A watchdog closes the connection when no frame of any kind (heartbeats included) arrived for
  ``stale_after`` seconds.
- Reconnects use capped exponential backoff with full jitter; the first retry is immediate, and
  the failure count resets only after a connection stayed healthy for ``healthy_after``
  seconds, so a server that accepts and then drops us cannot make us spin.
- An ``error`` frame is terminal (exit 3) unless it is the buffer-overflow error; HTTP 401/403
  on the upgrade is terminal too. A ``reconnect`` frame makes the close that follows free.
- Book resyncs are scope changes: unsubscribe + subscribe for a batch of symbols, within
  CoinAPI's 10 scope messages per 10 seconds (hellos count too).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import msgspec
import trio
from loguru import logger

from coinfeed.core.backoff import full_jitter
from coinfeed.core.controls import ConnectionLost, ConnectionOpened, Resubscribed
from coinfeed.core.decoding import FrameDecoder, peek_frame
from coinfeed.core.protocol import (
    SYMBOL_SCOPED_TYPES,
    ScopeMessage,
    encode,
    exrate_subscription,
    scope_message,
)
from coinfeed.core.protocol import Error as ErrorFrame
from coinfeed.framequeue import FrameQueue
from coinfeed.logs import RateLimitedLog
from coinfeed.status import Fatal, ServiceStatus
from coinfeed.transport import Transport, TransportClosed, TransportError, WebSocket

BUFFER_OVERFLOW_HINT = "buffered messages"
EXIT_REJECTED = 3


class TerminalError(Exception):
    """CoinAPI rejected the key or the subscription: retrying would fail the same way."""


@attrs.define(slots=True, eq=False)
class ScopeRequests:
    """Symbols waiting for a resubscribe; the connection sends them in batches."""

    _pending: set[str] = attrs.field(factory=set)
    _event: trio.Event = attrs.field(factory=trio.Event)

    def request(self, symbol_id: str) -> None:
        self._pending.add(symbol_id)
        self._event.set()

    def clear(self) -> None:
        """A new connection subscribes everything anyway."""
        self._pending.clear()

    async def wait_batch(self) -> frozenset[str]:
        while not self._pending:
            self._event = trio.Event()
            await self._event.wait()
        batch = frozenset(self._pending)
        self._pending.clear()
        return batch


@attrs.define(slots=True)
class ScopeRateLimit:
    """At most ``limit`` scope messages (hello/subscribe/unsubscribe) per ``window`` seconds."""

    limit: int = 10
    window: float = 10.0
    _sent: deque[float] = attrs.field(factory=deque, init=False)

    def record(self, now: float, n: int = 1) -> None:
        """Count ``n`` scope messages sent at ``now`` (forgetting those out of the window)."""
        self._prune(now)
        self._sent.extend([now] * n)

    def _prune(self, now: float) -> None:
        # One expression decides expiry and the wake-up time in wait_for_room: computed two
        # ways (t <= now - w vs. waking at t + w), rounding could wake us to nothing, forever.
        while self._sent and self._sent[0] + self.window <= now:
            self._sent.popleft()

    async def wait_for_room(self, n: int) -> None:
        n = min(n, self.limit)
        while True:
            self._prune(trio.current_time())
            if len(self._sent) + n <= self.limit:
                return
            await trio.sleep_until(self._sent[0] + self.window)


@attrs.define(slots=True)
class ConnectionCounters:
    """Reconnects by reason, read by metrics."""

    reconnects: dict[str, int] = attrs.field(factory=dict)
    attempts: int = 0


@attrs.define(slots=True)
class _SessionEnd:
    reason: str
    healthy: bool
    terminal: str | None = None


@attrs.define(slots=True, eq=False)
class Connection:
    """Holds the CoinAPI WebSocket for the life of the service (see module docstring)."""

    transport: Transport
    queue: FrameQueue
    status: ServiceStatus
    url: str
    symbols: tuple[str, ...]
    types: tuple[str, ...]
    api_key: str | None
    scope_requests: ScopeRequests = attrs.field(factory=ScopeRequests)
    connect_timeout: float = 30.0
    stale_after: float = 10.0
    backoff_max: float = 30.0
    backoff_base: float = 0.5
    healthy_after: float = 30.0
    queue_full_wait: float = 0.0
    """Seconds the reader may wait for the processor to take a full queue before it reads on
    and the queue drops (once per full queue: see :meth:`_read`); 0 never waits."""
    apikey_in_hello: bool = False
    ohlcv_periods: tuple[str, ...] = ()
    exrate_pairs: tuple[str, ...] = ()
    """Asset pairs for ``exrate`` (subscribed after the hello, by pair)."""
    scope_limit: ScopeRateLimit = attrs.field(factory=ScopeRateLimit)
    counters: ConnectionCounters = attrs.field(factory=ConnectionCounters)
    observe_reconnect: Callable[[float], None] = lambda _seconds: None
    on_sent: Callable[[str], None] = lambda _text: None
    """Told every message sent (the recording keeps them)."""
    rng: random.Random = attrs.field(factory=random.Random)
    _drop_log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(interval=5.0))
    _disconnected_at: float | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _soft_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _ws: WebSocket | None = attrs.field(default=None, init=False)

    def stop_nowait(self) -> None:
        """Stop reading and close the WebSocket gracefully; :meth:`run` then returns.

        Cancelling the caller's scope instead would also cancel the WebSocket library's reader,
        so the close handshake could not complete and every shutdown would wait it out.
        """
        self._stopping = True
        self._soft_scope.cancel()

    async def run(self) -> None:
        """Connect and reconnect until stopped; raise :class:`TerminalError` on rejection."""
        failures = 0
        while not self._stopping:
            self.counters.attempts += 1
            connection_id = self.status.connection_id + 1
            end = await self._session(connection_id)
            if self._stopping:
                return
            if end.terminal is not None:
                raise TerminalError(end.terminal)
            self.counters.reconnects[end.reason] = self.counters.reconnects.get(end.reason, 0) + 1
            if self._disconnected_at is None:
                self._disconnected_at = trio.current_time()
            if end.healthy or end.reason == "server_reconnect":
                failures = 0
            delay = self._backoff(failures)
            failures += 1
            logger.bind(
                reason=end.reason,
                connection_id=connection_id,
                retry_in=round(delay, 3),
                attempt=failures,
            ).warning("connection ended")
            if delay > 0:
                self._soft_scope = trio.CancelScope()
                with self._soft_scope:
                    await trio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        """0 for the first retry (no failure yet), then full jitter."""
        return full_jitter(failures, base=self.backoff_base, cap=self.backoff_max, rng=self.rng)

    def _headers(self) -> list[tuple[str, str]]:
        return [("X-CoinAPI-Key", self.api_key)] if self.api_key else []

    def _scope_messages(self) -> list[str]:
        """The hello, and the ``exrate`` subscription when asked for (see
        :func:`exrate_subscription`). With ``exrate`` alone, its subscription is the hello."""
        apikey = self.api_key if self.apikey_in_hello else None
        messages = []
        if SYMBOL_SCOPED_TYPES.intersection(self.types):
            hello = scope_message(
                "hello", self.types, self.symbols, apikey=apikey, periods=self.ohlcv_periods
            )
            messages.append(_text(hello))
        if "exrate" in self.types and self.exrate_pairs:
            exrate = exrate_subscription(self.exrate_pairs)
            if not messages:
                exrate = msgspec.structs.replace(exrate, type="hello", apikey=apikey)
            messages.append(_text(exrate))
        return messages

    async def _session(self, connection_id: int) -> _SessionEnd:
        self.status.connection_id = connection_id
        self._soft_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            try:
                with self._soft_scope:
                    end = await self._connect_and_serve(nursery, connection_id)
                    return end
                return _SessionEnd("stopped", healthy=True)
            finally:
                if self._ws is not None:
                    # The library's reader still runs in ``nursery``: the close handshake
                    # completes instead of timing out.
                    with trio.move_on_after(1.0, shield=True):
                        await self._ws.aclose()
                    self._ws = None
                nursery.cancel_scope.cancel()

    async def _connect_and_serve(self, nursery: trio.Nursery, connection_id: int) -> _SessionEnd:
        try:
            with trio.fail_after(self.connect_timeout):
                ws = self._ws = await self.transport.connect(
                    nursery, self.url, headers=self._headers()
                )
                for message in self._scope_messages():
                    self.scope_limit.record(trio.current_time())
                    await self._send(ws, message)
        except trio.TooSlowError:
            return _SessionEnd("connect_timeout", healthy=False)
        except TransportError as exc:
            if exc.status in (401, 403):
                return _SessionEnd("rejected", False, terminal=f"WebSocket upgrade: {exc}")
            logger.bind(connection_id=connection_id, error=str(exc)).warning("connect failed")
            return _SessionEnd("connect_error", healthy=False)
        except TransportClosed:
            return _SessionEnd("closed_during_subscribe", healthy=False)
        return await self._serve(nursery, ws, connection_id)

    async def _serve(self, nursery: trio.Nursery, ws: WebSocket, connection_id: int) -> _SessionEnd:
        status = self.status
        now = trio.current_time()
        status.connected, status.subscribed = True, True
        status.connected_at = status.last_frame_at = now
        self.scope_requests.clear()
        self.queue.put_control_nowait(ConnectionOpened(connection_id, datetime.now(UTC)))
        logger.bind(connection_id=connection_id, url=self.url).info("connected")
        try:
            with trio.CancelScope() as read_scope:
                nursery.start_soon(self._watchdog, read_scope)
                nursery.start_soon(self._scope_writer, ws, connection_id)
                reason = await self._read(ws, connection_id)
            if read_scope.cancelled_caught:
                reason = _SessionEnd("stale", healthy=False)
            healthy_for = trio.current_time() - now
            reason.healthy = reason.healthy or healthy_for >= self.healthy_after
            return reason
        finally:
            status.connected = status.subscribed = False
            self.queue.put_control_nowait(ConnectionLost(connection_id, "closed"))

    async def _read(self, ws: WebSocket, connection_id: int) -> _SessionEnd:
        status = self.status
        queue = self.queue
        last: str | bytes = b""
        waited = False
        while True:
            room = queue.room()
            if room:
                waited = False
            elif not waited and self.queue_full_wait > 0:
                # A processor busy for a moment (a sink hand-off, a large batch) takes the queue
                # soon: until then the burst waits in the socket's buffer instead of being read
                # to be dropped. Once per full queue: a processor that stays stalled must not
                # slow the reader down, or the server's send buffer fills and CoinAPI
                # disconnects; the queue drops instead, and recovery repairs. Off by default: a
                # processor that keeps up only just would set the pace of the whole feed.
                with trio.move_on_after(self.queue_full_wait):
                    await queue.wait_for_room()
                waited = True
                room = queue.room()
            try:
                batch = await ws.receive_batch(room)
            except TransportClosed as exc:
                return self._classify_close(exc, last, connection_id)
            now = trio.current_time()
            if self._disconnected_at is not None:
                self.observe_reconnect(now - self._disconnected_at)
                self._disconnected_at = None
            status.last_frame_at = now
            status.frames_received += len(batch)
            last = batch[-1]
            received = (time.time_ns(), now) if queue.keep_reads else None
            dropped = queue.put_frames_nowait(connection_id, batch, received)
            if dropped:
                self._drop_log.warning(
                    "frames",
                    "raw queue full: frames dropped (recovery will repair their streams)",
                    dropped=dropped,
                    capacity=queue.capacity,
                )

    def _classify_close(
        self, exc: TransportClosed, last: str | bytes, connection_id: int
    ) -> _SessionEnd:
        head = peek_frame(last) if last else None
        if head is not None and head.type == "error":
            message = FrameDecoder().decode(last)
            text = (message.message or "") if isinstance(message, ErrorFrame) else ""
            if BUFFER_OVERFLOW_HINT in text:
                return _SessionEnd("server_buffer_overflow", healthy=False)
            return _SessionEnd("rejected", False, terminal=f"CoinAPI error: {text}")
        if self.status.reconnect_announced_for == connection_id:
            return _SessionEnd("server_reconnect", healthy=False)
        return _SessionEnd(f"closed_{exc.code}" if exc.code else "closed", healthy=False)

    async def _watchdog(self, read_scope: trio.CancelScope) -> None:
        check = max(0.05, min(1.0, self.stale_after / 4))
        while True:
            await trio.sleep(check)
            last = self.status.last_frame_at
            if last is not None and trio.current_time() - last > self.stale_after:
                logger.bind(stale_after=self.stale_after).warning("no frame: reconnecting")
                read_scope.cancel()
                return

    async def _send(self, ws: WebSocket, text: str) -> None:
        await ws.send(text)
        self.on_sent(text)

    async def _scope_writer(self, ws: WebSocket, connection_id: int) -> None:
        wanted = frozenset(self.symbols)
        while True:
            batch = await self.scope_requests.wait_batch() & wanted
            if not batch:
                continue
            await self.scope_limit.wait_for_room(2)
            symbols = sorted(batch)
            logger.bind(symbols=",".join(symbols), connection_id=connection_id).info(
                "resubscribing"
            )
            try:
                await self._send(ws, _text(scope_message("unsubscribe", self.types, symbols)))
                # Marker before the subscribe: restarted sequences can only follow it.
                self.queue.put_control_nowait(
                    Resubscribed(connection_id, frozenset(symbols), datetime.now(UTC))
                )
                subscribe = scope_message(
                    "subscribe", self.types, symbols, periods=self.ohlcv_periods
                )
                await self._send(ws, _text(subscribe))
            except TransportClosed:
                return
            self.scope_limit.record(trio.current_time(), 2)


def _text(message: ScopeMessage) -> str:
    """A scope message as ``str``, so every transport sends it as a text frame (CoinAPI's
    messages are JSON text; a binary frame is not what its docs describe)."""
    return encode(message).decode()


def fatal_for(exc: TerminalError) -> Fatal:
    return Fatal(EXIT_REJECTED, str(exc))
