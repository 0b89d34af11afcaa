"""Readiness: why the service is not ready to serve, as ``/ready`` and ``coinfeed_ready`` say.

Ready means connected, subscribed and fresh (a frame within ``stale_after``), every subscribed
incremental book in sync (a book may be out of sync for ``BOOK_GRACE_FACTOR * stale_after``
while it resyncs), every sink writing (none failing, none holding events without finishing a
write for ``sink_stall_after``), no gap waiting for recovery longer than
``recovery_stale_after``, and no shutdown under way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

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

    def observe(self, unsynced: dict[str, BookState], now: float) -> Mapping[str, float]:
        """Record the books out of sync at ``now`` (symbol_id -> state; every other book is in
        sync); return out-of-sync since, by book. The cost is that of the books out of sync,
        not of all of them: /metrics calls this at every scrape."""
        since = self._since
        for symbol_id in unsynced:
            if symbol_id not in since:
                since[symbol_id] = now
        if len(since) > len(unsynced):
            for symbol_id in since.keys() - unsynced.keys():
                del since[symbol_id]
        return since


@attrs.define(slots=True, eq=False)
class Readiness:
    """Answers "ready, and if not, why" from the service's status and its books."""

    status: ServiceStatus
    stale_after: float
    unsynced_books: Callable[[], dict[str, BookState]]
    """The state of every subscribed incremental book not in sync (none when ``book`` is not
    subscribed)."""
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
        self.watch.observe(self.unsynced_books(), trio.current_time())

    def problems(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        return [redact(problem, self.secrets) for problem in self._problems()]

    def is_ready(self) -> bool:
        """Whether :meth:`problems` is empty, without writing out every problem (the gauge
        asks at every scrape)."""
        return next(self._problems(), None) is None

    def _problems(self) -> Iterator[str]:
        status = self.status
        now = trio.current_time()
        # Observed before the first answer: the watch's "since" must not wait for a caller
        # that reads all of them.
        states = self.unsynced_books()
        out_of_sync = self.watch.observe(states, now)
        if status.shutdown.is_set():
            yield "shutting down"
        if not status.connected:
            yield "not connected to CoinAPI"
        elif not status.subscribed:
            yield "not subscribed"
        elif status.connected_at is not None and status.last_frame_at == status.connected_at:
            # The connection sets both clocks when it opens: no frame has arrived since.
            yield f"subscribed {now - status.connected_at:.1f}s ago, no frame yet"
        else:
            age = status.freshness(now)
            if age is not None and age > self.stale_after:
                yield f"no frame for {age:.1f}s (stale_after={self.stale_after:g})"
        grace = BOOK_GRACE_FACTOR * self.stale_after
        if status.connected:
            late = sorted(
                (symbol_id, now - since)
                for symbol_id, since in out_of_sync.items()
                if now - since > grace
            )
            for symbol_id, seconds in late:
                yield (
                    f"book {symbol_id} {states[symbol_id].value} for {seconds:.1f}s "
                    f"(grace {grace:g}s)"
                )
        for name, error in status.sink_failures.items():
            yield f"sink {name} failing: {error}"
        for name, held, seconds in self.stalled_sinks(now):
            yield (
                f"sink {name} stalled: {held} events held, no write finished for {seconds:.1f}s "
                f"(sink_stall_after={self.sink_stall_after:g})"
            )
        age = self.oldest_recovery()
        if age is not None and age > self.recovery_stale_after:
            yield (
                f"oldest pending recovery {age:.1f}s old "
                f"(recovery_stale_after={self.recovery_stale_after:g})"
            )

    def ready_gauge(self) -> bool | None:
        """Whether /ready would answer 200; None while nothing answers it."""
        return self.is_ready() if self.listeners else None
