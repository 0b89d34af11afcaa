"""Fault injection: named profiles (probabilistic) and one-shot triggers for tests.

How this works: a :class:`FaultProfile` is a frozen set of probabilities and rates; the
WebSocket side (:class:`WsFaults`) and the REST side (:class:`RestFaults`) each hold the current
profile plus queues of one-shot triggers, and are asked for a decision at the point where the
fault applies (routing a frame, answering a request). Fault decisions use their own random
generator, so switching faults on never changes the market itself.
"""

from __future__ import annotations

import random
from collections import deque

import attrs

from coinfeed.core.decoding import DEFAULT_MAX_FRAME_BYTES

BUFFER_OVERFLOW_MESSAGE = "Reached maximum allowed buffered messages for this connection."
"""CoinAPI's text when a slow client lets the server send queue fill."""


@attrs.frozen(kw_only=True)
class FaultProfile:
    """Probabilities (per frame or request) and rates (per connection per second) of faults."""

    name: str = "custom"
    # WebSocket, per routed frame
    skip_probability: float = 0.0
    """The frame is never sent but its sequence number is used (the data stays in REST)."""
    duplicate_probability: float = 0.0
    reorder_probability: float = 0.0
    """The frame is held back and sent after the next frame of the same stream."""
    malformed_probability: float = 0.0
    """An extra bad frame (not JSON, wrong field type, unknown type) is inserted."""
    # WebSocket, per connection per second
    oversized_per_second: float = 0.0
    oversize_bytes: int = 2 * DEFAULT_MAX_FRAME_BYTES
    disconnect_per_second: float = 0.0
    reconnect_per_second: float = 0.0
    reconnect_within_seconds: int = 1
    error_per_second: float = 0.0
    stall_per_second: float = 0.0
    stall_seconds: float = 12.0
    # REST, per request
    rest_delay_probability: float = 0.0
    rest_delay_seconds: tuple[float, float] = (0.2, 1.0)
    rest_429_probability: float = 0.0
    """Probability that a request starts a burst of ``rest_429_burst`` 429 answers."""
    rest_429_burst: int = 3
    rest_retry_after: int = 1
    rest_5xx_probability: float = 0.0

    @property
    def ws_frame_faults(self) -> bool:
        """True if any per-frame WebSocket fault can fire (routing takes the slow path)."""
        return (
            self.skip_probability
            + self.duplicate_probability
            + self.reorder_probability
            + self.malformed_probability
        ) > 0


PROFILES: dict[str, FaultProfile] = {
    p.name: p
    for p in (
        FaultProfile(name="none"),
        FaultProfile(name="gaps", skip_probability=0.01),
        FaultProfile(
            name="disconnects",
            disconnect_per_second=0.1,
            reconnect_per_second=0.05,
            reconnect_within_seconds=2,
        ),
        FaultProfile(
            name="chaos",
            skip_probability=0.002,
            duplicate_probability=0.0005,
            reorder_probability=0.0005,
            malformed_probability=0.0002,
            oversized_per_second=0.01,
            disconnect_per_second=0.02,
            reconnect_per_second=0.01,
            error_per_second=0.005,
            stall_per_second=0.005,
            stall_seconds=3.0,
            rest_delay_probability=0.1,
            rest_delay_seconds=(0.1, 0.5),
            rest_429_probability=0.05,
            rest_5xx_probability=0.05,
        ),
        FaultProfile(name="slow-rest", rest_delay_probability=1.0, rest_delay_seconds=(0.5, 1.5)),
        FaultProfile(name="rest-429", rest_429_probability=0.2, rest_429_burst=3),
        FaultProfile(name="rest-5xx", rest_5xx_probability=0.3),
        FaultProfile(name="stall", stall_per_second=0.05, stall_seconds=12.0),
        FaultProfile(name="malformed", malformed_probability=0.005, oversized_per_second=0.05),
    )
}
"""Named profiles for ``--faults``. ``stall`` stalls longer than coinfeed's 10 s watchdog."""

MALFORMED_KINDS = ("not_json", "wrong_price", "sequence_string", "unknown_type")


def malformed_frame(kind: str, symbol_id: str) -> bytes:
    """A bad frame of ``kind`` (see :data:`MALFORMED_KINDS`) that looks like ``symbol_id``'s."""
    sym = symbol_id.encode()
    if kind == "not_json":
        return b'{"type":"trade","symbol_id":"' + sym + b'","sequence":'
    if kind == "wrong_price":
        return (
            b'{"type":"trade","symbol_id":"' + sym + b'","sequence":1,'
            b'"time_exchange":"2024-01-01T00:00:00.0000000Z",'
            b'"time_coinapi":"2024-01-01T00:00:00.0000000Z",'
            b'"uuid":"00000000-0000-4000-8000-000000000000",'
            b'"price":"abc","size":1.0,"taker_side":"BUY"}'
        )
    if kind == "sequence_string":
        return (
            b'{"type":"quote","symbol_id":"' + sym + b'","sequence":"17",'
            b'"time_exchange":"2024-01-01T00:00:00.0000000Z",'
            b'"time_coinapi":"2024-01-01T00:00:00.0000000Z",'
            b'"ask_price":1.0,"ask_size":1.0,"bid_price":0.9,"bid_size":1.0}'
        )
    if kind == "unknown_type":
        return (
            b'{"type":"symbol","symbol_id":"' + sym + b'","exchange_id":"SIM",'
            b'"symbol_type":"SPOT","price_precision":0.01,"size_precision":1e-8}'
        )
    raise ValueError(f"malformed kind {kind!r}; expected one of {', '.join(MALFORMED_KINDS)}")


def oversized_frame(size: int, symbol_id: str) -> bytes:
    """A valid JSON object of exactly ``size`` bytes (at least 64), typed like a trade."""
    head = b'{"type":"trade","symbol_id":"' + symbol_id.encode() + b'","padding":"'
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


@attrs.define
class WsFaults:
    """WebSocket faults: the active profile plus one-shot triggers keyed by (type, symbol_id).

    One-shot triggers act on the next market frames of that stream that some connection would
    receive, and act on every connection alike (the same frame is missing for everyone).
    """

    profile: FaultProfile
    rng: random.Random
    _skip: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _duplicate: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _reorder: dict[tuple[str, str], int] = attrs.field(factory=dict)

    def skip_next(self, data_type: str, symbol_id: str, count: int = 1) -> None:
        """Never send the next ``count`` frames of this stream; their sequence numbers are used."""
        _add(self._skip, (data_type, symbol_id), count)

    def duplicate_next(self, data_type: str, symbol_id: str, count: int = 1) -> None:
        """Send each of the next ``count`` frames of this stream twice (same sequence)."""
        _add(self._duplicate, (data_type, symbol_id), count)

    def reorder_next(self, data_type: str, symbol_id: str, count: int = 1) -> None:
        """Hold each of the next ``count`` frames back until after the stream's following one."""
        _add(self._reorder, (data_type, symbol_id), count)

    def set_profile(self, profile: FaultProfile | str) -> None:
        """Switch the probabilistic faults (a :class:`FaultProfile` or a profile name)."""
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile

    @property
    def has_one_shots(self) -> bool:
        """True while any one-shot trigger is pending."""
        return bool(self._skip or self._duplicate or self._reorder)

    def take(self, data_type: str, symbol_id: str) -> tuple[bool, bool, bool]:
        """Consume the one-shot triggers for one frame: (skip, duplicate, reorder)."""
        key = (data_type, symbol_id)
        return _take(self._skip, key), _take(self._duplicate, key), _take(self._reorder, key)


@attrs.frozen
class RestFaultDecision:
    """What to do to one REST request: wait ``delay`` seconds, then maybe fail with ``status``."""

    delay: float = 0.0
    status: int | None = None
    retry_after: int | None = None


@attrs.define
class RestFaults:
    """REST faults: the active profile plus one-shot failures and delays, in request order."""

    profile: FaultProfile
    rng: random.Random
    _fail: deque[tuple[int, int | None]] = attrs.field(factory=deque)
    _delay: deque[float] = attrs.field(factory=deque)
    _burst_left: int = 0

    def fail_next(self, n: int = 1, *, status: int = 429, retry_after: int | None = 1) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` if given)."""
        self._fail.extend([(status, retry_after)] * n)

    def delay_next(self, n: int = 1, *, seconds: float = 1.0) -> None:
        """Delay the next ``n`` requests by ``seconds`` before answering."""
        self._delay.extend([seconds] * n)

    def set_profile(self, profile: FaultProfile | str) -> None:
        """Switch the probabilistic faults (a :class:`FaultProfile` or a profile name)."""
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile

    def decide(self) -> RestFaultDecision:
        """Draw the fault (if any) for the next request."""
        p, rnd = self.profile, self.rng.random
        delay = self._delay.popleft() if self._delay else 0.0
        if not delay and p.rest_delay_probability and rnd() < p.rest_delay_probability:
            delay = self.rng.uniform(*p.rest_delay_seconds)
        if self._fail:
            status, retry_after = self._fail.popleft()
            return RestFaultDecision(delay, status, retry_after)
        if self._burst_left or (p.rest_429_probability and rnd() < p.rest_429_probability):
            self._burst_left = (self._burst_left or p.rest_429_burst) - 1
            return RestFaultDecision(delay, 429, p.rest_retry_after)
        if p.rest_5xx_probability and rnd() < p.rest_5xx_probability:
            status = self.rng.choice((500, 502, 503, 504))
            return RestFaultDecision(delay, status, p.rest_retry_after if status == 503 else None)
        return RestFaultDecision(delay)


def _add(pending: dict[tuple[str, str], int], key: tuple[str, str], count: int) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    pending[key] = pending.get(key, 0) + count


def _take(pending: dict[tuple[str, str], int], key: tuple[str, str]) -> bool:
    left = pending.get(key)
    if not left:
        return False
    if left == 1:
        del pending[key]
    else:
        pending[key] = left - 1
    return True
