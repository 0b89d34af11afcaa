"""One client connection's server-side state: its send queue, sequences and pending controls.

How this works: the market task routes each batch of encoded frames into every session
(:meth:`ClientSession.deliver`): a list lookup per frame says whether the stream is in scope and
holds its last ``sequence``; the frame is the pre-encoded body with the number spliced in. OHLCV
bars take the same way (the hub passes a session only the periods it subscribed; every period of
a symbol shares its one stream); exchange rates, which have no sequence, are queued as they are
(:meth:`ClientSession.deliver_unsequenced`). The session's writer task (``ws.py``) drains the
queue. Nothing here awaits except the ``wait_*`` methods, so routing a batch is atomic with
respect to scope changes.

When the queue holds more than ``capacity`` messages the session fails like CoinAPI: what was
buffered is dropped, the buffer-overflow ``error`` is sent, the connection closes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import attrs
import trio

from coinfeed.core.protocol import Error, encode
from coinfeed.simulator.faults import (
    BUFFER_OVERFLOW_MESSAGE,
    MALFORMED_KINDS,
    FaultProfile,
    malformed_frame,
)
from coinfeed.simulator.ohlcv import BarKey
from coinfeed.simulator.scope import Scope
from coinfeed.simulator.truth import SessionCounters

SKIP, DUPLICATE, REORDER = 1, 2, 4
"""One-shot fault flags a :class:`WireItem` may carry."""


class WireItem(NamedTuple):
    """One market frame ready to route: body = prefix + sequence + suffix."""

    stream: int
    type_index: int
    symbol_id: str
    prefix: bytes
    suffix: bytes
    flags: int = 0


@attrs.define(eq=False)
class ClientSession:
    """Server-side state of one WebSocket client."""

    connection_id: int
    remote_ip: str
    counters: SessionCounters
    capacity: int
    flush_timeout: float
    """How long an ``error`` frame may take to go out before the TCP connection is cut."""
    routes: list[int]
    """Per stream index: -1 when out of scope, else the last sequence number used."""
    rnd: Callable[[], float]
    """Random source for probabilistic faults (the faults' generator, not the market's)."""
    abort_transport: Callable[[], None] = lambda: None
    scope: Scope = attrs.field(factory=Scope)
    wanted: set[int] = attrs.field(factory=set)
    periods: frozenset[str] = frozenset()
    """OHLCV periods in scope."""
    bar_keys: frozenset[BarKey] = frozenset()
    """(symbol index, period) of every OHLCV bar in scope."""
    pairs: frozenset[int] = frozenset()
    """Asset pair indexes whose exchange rates are in scope."""
    queue: deque[bytes] = attrs.field(factory=deque)
    held: dict[int, bytes] = attrs.field(factory=dict)
    heartbeat: bool = False
    authorized: bool = False
    stall_until: float = -math.inf
    error_message: str | None = None
    close_code: int | None = None
    """Set when the server closes gracefully (after a ``reconnect`` frame)."""
    close_at: float = math.inf
    abort_at: float = math.inf
    aborted: bool = False
    _pending_close_code: int = 1001
    _malformed_turn: int = 0
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _control: trio.Event = attrs.field(factory=trio.Event)

    @property
    def closing(self) -> bool:
        """True once the session is on its way out; it then takes no more frames."""
        return self.error_message is not None or self.aborted or self.close_code is not None

    # -- routing (market task) ----------------------------------------------------------------

    def deliver(
        self, items: list[WireItem], now: float, profile: FaultProfile, flags: bool
    ) -> None:
        """Route one batch into the queue; ``flags`` tells whether any item carries one-shots."""
        if self.closing or not self.wanted:
            return
        routes, q, sent = self.routes, self.queue, self.counters.sent
        if now < self.stall_until:
            self._skip_all(items)
        elif flags or profile.ws_frame_faults:
            self._deliver_with_faults(items, profile)
        else:
            for sid, tix, _, prefix, suffix, _ in items:
                seq = routes[sid]
                if seq >= 0:
                    seq += 1
                    routes[sid] = seq
                    q.append(b"%b%d%b" % (prefix, seq, suffix))
                    sent[tix] += 1
        self._queued(now)

    def deliver_unsequenced(self, frame: bytes, type_index: int, now: float) -> None:
        """Queue a frame that has no sequence (``exrate``); while stalled it is just not sent."""
        if self.closing or now < self.stall_until:
            return
        self.queue.append(frame)
        self.counters.sent[type_index] += 1
        self._queued(now)

    def _queued(self, now: float) -> None:
        if len(self.queue) > self.capacity:
            self.fail(BUFFER_OVERFLOW_MESSAGE, now=now)
        elif self.queue:
            self.wake()

    def _skip_all(self, items: list[WireItem]) -> None:
        routes, skipped = self.routes, self.counters.skipped
        for item in items:
            if routes[item.stream] >= 0:
                routes[item.stream] += 1
                skipped[item.type_index] += 1

    def _deliver_with_faults(self, items: list[WireItem], p: FaultProfile) -> None:
        routes, q, c, rnd = self.routes, self.queue, self.counters, self.rnd
        for sid, tix, symbol_id, prefix, suffix, flags in items:
            seq = routes[sid]
            if seq < 0:
                continue
            seq += 1
            routes[sid] = seq
            if flags & SKIP or (p.skip_probability and rnd() < p.skip_probability):
                c.skipped[tix] += 1
                continue
            frame = b"%b%d%b" % (prefix, seq, suffix)
            c.sent[tix] += 1
            if sid not in self.held and (
                flags & REORDER or (p.reorder_probability and rnd() < p.reorder_probability)
            ):
                self.held[sid] = frame
                continue
            q.append(frame)
            if sid in self.held:
                q.append(self.held.pop(sid))
            if flags & DUPLICATE or (p.duplicate_probability and rnd() < p.duplicate_probability):
                q.append(frame)
                c.injected += 1
            if p.malformed_probability and rnd() < p.malformed_probability:
                kind = MALFORMED_KINDS[self._malformed_turn % len(MALFORMED_KINDS)]
                self._malformed_turn += 1
                q.append(malformed_frame(kind, symbol_id))
                c.injected += 1

    # -- controls (any task) ------------------------------------------------------------------

    def push(self, frame: bytes, *, front: bool = False, injected: bool = True) -> None:
        """Queue one frame outside the market flow (snapshot, control, injection)."""
        if self.closing:
            return
        if front:
            self.queue.appendleft(frame)
        else:
            self.queue.append(frame)
        if injected:
            self.counters.injected += 1
        self.wake()

    def fail(self, message: str, *, now: float) -> None:
        """Drop what is buffered, send an ``error`` frame, then close (cut TCP if it hangs)."""
        if self.closing:
            return
        self.error_message = message
        self._discard_buffered()
        self.abort_at = now + self.flush_timeout
        self._changed()

    def close_after(self, seconds: float, *, now: float, code: int = 1001) -> None:
        """Close gracefully at ``now + seconds`` (after a ``reconnect`` frame)."""
        self.close_at = min(self.close_at, now + seconds)
        self._pending_close_code = code
        self._changed()

    def begin_close(self, *, now: float) -> None:
        """The graceful close is due: take no more frames, flush what is queued, then close."""
        self.close_at = math.inf
        if not self.closing:
            self.close_code = self._pending_close_code
            self.abort_at = now + self.flush_timeout
            self._changed()

    def abort(self) -> None:
        """Cut the TCP connection now, without a WebSocket close."""
        if self.aborted:
            return
        self.aborted = True
        self._discard_buffered()
        self.abort_transport()
        self._changed()

    def stall(self, until: float) -> None:
        """Send nothing (not even heartbeats) until ``until``; market frames are skipped."""
        self.stall_until = max(self.stall_until, until)
        self._changed()

    def error_frame(self) -> bytes:
        """The ``error`` frame for :attr:`error_message`."""
        return encode(Error(self.error_message or ""))

    def wake(self) -> None:
        """Make the writer re-check its state (e.g. heartbeats were just switched on)."""
        self._wake.set()
        self._wake = trio.Event()

    def _discard_buffered(self) -> None:
        self.counters.discarded += len(self.queue) + len(self.held)
        self.queue.clear()
        self.held.clear()

    def _changed(self) -> None:
        self._control.set()
        self._control = trio.Event()  # set-and-replace: every current waiter wakes up
        self.wake()

    # -- waiting (writer and deadline tasks) --------------------------------------------------

    async def wait_work(self) -> None:
        """Wait until there is something to send or a control changed."""
        if self.queue or self.closing:
            return
        await self._wake.wait()

    async def wait_control(self) -> None:
        """Wait until a control (error, close, abort, stall) changes next."""
        await self._control.wait()
