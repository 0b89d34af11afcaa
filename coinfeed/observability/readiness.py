"""Readiness: why the service is not ready to serve, as ``/ready`` and ``coinfeed_ready`` say.

Ready means connected, subscribed and fresh (a frame within ``stale_after``), every subscribed
incremental book in sync (a book may be out of sync for ``BOOK_GRACE_FACTOR * stale_after``
while it resyncs), every sink writing (none failing, none holding events without finishing a
write for ``sink_stall_after``), no gap waiting for recovery longer than
``recovery_stale_after``, and no shutdown under way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import trio

from coinfeed.core.book import BookState
from coinfeed.logs import redact
from coinfeed.status import ServiceStatus

BOOK_GRACE_FACTOR = 2.0
"""A book may be out of sync for ``BOOK_GRACE_FACTOR * stale_after`` before /ready says so."""


@attrs.define(slots=True, eq=False)
class BookSyncWatch:
    """Since when each expected book has been out of sync, from states sampled over time.

    ``observe`` is called by a sampler while the HTTP side serves and on every /ready request; a
    book that was synced at the previous sample and is not now counts from this sample.
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


@attrs.define(slots=True, eq=False)
class Readiness:
    """Answers "ready, and if not, why" from the service's status and its books."""

    status: ServiceStatus
    stale_after: float
    book_states: Callable[[], dict[str, BookState]]
    """The state of every subscribed incremental book (none when ``book`` is not subscribed)."""
    secrets: Sequence[str] = ()
    """Values no answer may carry (the key, the debug token)."""
    oldest_recovery: Callable[[], float | None] = lambda: None
    """Age in seconds of the oldest gap still waiting for recovery, None when none waits."""
    recovery_stale_after: float = float("inf")
    stalled_sinks: Callable[[float], list[tuple[str, int, float]]] = lambda _now: []
    """``(name, events held, seconds)`` of every sink stalled past ``sink_stall_after`` now."""
    sink_stall_after: float = float("inf")
    watch: BookSyncWatch = attrs.field(factory=BookSyncWatch)
    listeners: int = 0
    """HTTP listeners answering /ready now; ``coinfeed_ready`` is exported only while one is."""

    def sample(self) -> None:
        """Note the books' states now (a sampler calls this between /ready requests)."""
        self.watch.observe(self.book_states(), trio.current_time())

    def problems(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        status = self.status
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
            if age is not None and age > self.stale_after:
                problems.append(f"no frame for {age:.1f}s (stale_after={self.stale_after:g})")
        states = self.book_states()
        grace = BOOK_GRACE_FACTOR * self.stale_after
        for symbol_id, since in sorted(self.watch.observe(states, now).items()):
            if status.connected and now - since > grace:
                problems.append(
                    f"book {symbol_id} {states[symbol_id].value} for {now - since:.1f}s "
                    f"(grace {grace:g}s)"
                )
        problems.extend(
            f"sink {name} failing: {error}" for name, error in status.sink_failures.items()
        )
        problems.extend(
            f"sink {name} stalled: {held} events held, no write finished for {seconds:.1f}s "
            f"(sink_stall_after={self.sink_stall_after:g})"
            for name, held, seconds in self.stalled_sinks(now)
        )
        age = self.oldest_recovery()
        if age is not None and age > self.recovery_stale_after:
            problems.append(
                f"oldest pending recovery {age:.1f}s old "
                f"(recovery_stale_after={self.recovery_stale_after:g})"
            )
        return [redact(problem, self.secrets) for problem in problems]

    def ready_gauge(self) -> bool | None:
        """Whether /ready would answer 200; None while nothing answers it."""
        return not self.problems() if self.listeners else None
