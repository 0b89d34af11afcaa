"""An exclusive ``flock`` on a file in a directory, held for the life of the process: how the
restart checkpoint and a recording refuse a second coinfeed process on the same files."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class LockError(Exception):
    """The lock could not be taken; ``in_use`` when another process holds it."""

    def __init__(self, message: str, *, in_use: bool) -> None:
        super().__init__(message)
        self.in_use = in_use


def lock_in(directory: Path, name: str) -> int:
    """Create ``directory`` if needed, lock ``directory/name`` and return its descriptor
    (closing it releases the lock)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LockError(f"cannot use {str(directory)!r}: {exc.strerror}", in_use=False) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        in_use = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)  # else e.g. ENOLCK on NFS
        raise LockError(
            f"cannot lock {directory / name!s}: {exc.strerror}", in_use=in_use
        ) from None
    return fd
