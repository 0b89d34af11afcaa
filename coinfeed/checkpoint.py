"""The restart checkpoint: per symbol, the time up to which every sink has written every trade.

How this works: once a second the :class:`Checkpointer` takes the gap ledger's view of what is
complete (:meth:`~coinfeed.gaps.GapLedger.complete_through`) and tags it with the number of the
last event batch handed to the sinks. The view becomes durable when every sink writer has written
that batch; the newest durable view is written to ``state_dir`` atomically (a temporary file,
fsync, rename, fsync of the directory), and only when it changed. A process started on that
directory backfills each symbol from its checkpoint (see ``gaps.py``), so a SIGKILL, an OOM kill
or a rollout costs at most the trades of about the last second twice, never any trade lost.

One process owns a checkpoint file: it is locked (``flock``) for the process's lifetime, and a
second process on the same file is refused at start. Shards keep one file each.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import attrs
import msgspec
import trio
from loguru import logger

from coinfeed.dirlock import LockError, lock_in

CHECKPOINT_FORMAT: Final = 1
MAX_CANDIDATES: Final = 8
"""Views waiting for the sinks to write their batch; a stalled sink keeps the oldest few (the
next to become durable) and the newest."""


class CheckpointError(Exception):
    """The state directory cannot hold a checkpoint (the message says why)."""


class Checkpoint(msgspec.Struct, kw_only=True):
    format: int
    written_at: datetime
    symbols: dict[str, datetime]
    """Per symbol: every trade with ``time_exchange`` up to this was written by every sink."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Checkpoint).decode


@attrs.define(slots=True, eq=False)
class CheckpointFile:
    """One locked checkpoint file in the state directory."""

    path: Path
    _lock: int
    _writes: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    @classmethod
    def open(cls, state_dir: str, name: str = "checkpoint") -> CheckpointFile:
        """Create ``state_dir`` if needed and lock ``NAME.json`` in it for this process."""
        directory = Path(state_dir)
        try:
            lock = lock_in(directory, f"{name}.lock")
        except LockError as exc:
            if not exc.in_use:
                raise CheckpointError(str(exc)) from None
            raise CheckpointError(
                f"{directory / name!s}.json is in use by another coinfeed process; give each "
                "process its own state_dir"
            ) from None
        probe = directory / f"{name}.probe"
        try:  # found now, not at the first checkpoint a second later
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            os.close(lock)
            raise CheckpointError(f"cannot write in {str(directory)!r}: {exc.strerror}") from None
        return cls(directory / f"{name}.json", lock)

    def load(self) -> dict[str, datetime]:
        """The checkpointed times; empty when there is none. An unreadable file is reported
        (a restart backfill is then impossible) and treated as none."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            logger.bind(path=str(self.path), error=exc.strerror).error(
                "checkpoint unreadable: trades missed while coinfeed was down are not backfilled"
            )
            return {}
        try:
            checkpoint = _decode(raw)
        except msgspec.DecodeError as exc:
            logger.bind(path=str(self.path), error=str(exc)).error(
                "checkpoint unreadable: trades missed while coinfeed was down are not backfilled"
            )
            return {}
        return {s: t.astimezone(UTC) for s, t in checkpoint.symbols.items() if t.tzinfo}

    def write(self, symbols: dict[str, datetime]) -> None:
        """Replace the checkpoint atomically: a reader sees the old one or the new one whole."""
        data = _encode(Checkpoint(format=CHECKPOINT_FORMAT, written_at=_now(), symbols=symbols))
        # A name of its own per write: a write abandoned on a hung disk may still be running.
        temporary = self.path.with_suffix(f".{os.getpid()}-{next(self._writes)}.tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk must not fill up with these
                temporary.unlink()
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock)


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.define(slots=True, eq=False)
class Checkpointer:
    """Writes the checkpoint once the sinks have written what it claims (module docstring)."""

    file: CheckpointFile
    complete_through: Callable[[], dict[str, datetime]]
    """The ledger's view now (covers every batch handed to the sinks so far)."""
    sent_batches: Callable[[], int]
    """How many event batches have been handed to the sinks."""
    written_batches: Callable[[], int]
    """How many of them every sink has written."""
    interval: float = 1.0
    carry: dict[str, datetime] = attrs.field(factory=dict)
    """Checkpointed symbols this process does not subscribe: kept as they are, so a run with
    fewer symbols on the same state_dir does not erase the others' checkpoints."""
    writes: int = 0
    _candidates: deque[tuple[int, dict[str, datetime]]] = attrs.field(factory=deque, init=False)
    _written: dict[str, datetime] | None = attrs.field(default=None, init=False)

    async def run(self) -> None:
        """Every ``interval`` seconds: note the current view, write the newest durable one."""
        while True:
            await trio.sleep(self.interval)
            self.note()
            await self._write_durable()

    def note(self) -> None:
        view = {**self.carry, **self.complete_through()}
        if self._candidates and self._candidates[-1][1] == view:
            return
        if len(self._candidates) >= MAX_CANDIDATES:
            self._candidates.pop()
        self._candidates.append((self.sent_batches(), view))

    def durable(self) -> dict[str, datetime] | None:
        """The newest noted view whose batches every sink has written (None: none new)."""
        written = self.written_batches()
        view = None
        while self._candidates and self._candidates[0][0] <= written:
            view = self._candidates.popleft()[1]
        return view

    async def _write_durable(self) -> None:
        view = self.durable()
        if view is None or view == self._written:
            return
        try:
            # Abandoned on cancel: a hung disk must not hold up the shutdown.
            await trio.to_thread.run_sync(self.file.write, view, abandon_on_cancel=True)
        except OSError as exc:
            # The previous checkpoint stays: a restart backfills a longer window, loses nothing.
            logger.bind(path=str(self.file.path), error=exc.strerror).error(
                "checkpoint write failed"
            )
            return
        self._written = view
        self.writes += 1

    async def finish(self, *, processor_clean: bool) -> None:
        """At shutdown, after the sinks closed: write what they wrote, then release the file.
        The ledger's view now is noted only if the processor ended cleanly: after a failure in
        the middle of a batch it may count trades whose events were never handed over."""
        try:
            if processor_clean:
                self.note()
            await self._write_durable()
        finally:
            self.file.close()
