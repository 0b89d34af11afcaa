"""C allocator settings for a process that runs for weeks.

Why: glibc's malloc serves blocks of ``M_MMAP_THRESHOLD`` bytes and more (128 KiB to start with)
with ``mmap``, so freeing them gives the memory back. But the threshold is *dynamic*: when such a
block is freed, glibc raises the threshold to its size (up to 32 MiB), and later blocks of that
size come from the heap, where a freed block stays part of the resident set. coinfeed's trade
de-dup set is the case in point: with 200,000 uuids its hash table is 8 MiB, and Python rebuilds
it every ~115,000 new trades (deleted slots pile up). The first rebuild frees an mmapped table,
the threshold rises past 8 MiB, and from then on the tables alternate in the heap: RSS steps up
by ~8 MB once and stays there (measured in the 20- and 30-minute soaks, and by
``tests/core/test_allocator.py`` in a child process).

Pinning the threshold turns the dynamic adjustment off: blocks from :data:`MMAP_THRESHOLD` up
are always mapped and unmapped, so what the service frees is returned to the system. Below it
(socket reads, encoded JSONL slices of ~300 KB) nothing changes. Only glibc has this knob; other
C libraries (musl, macOS) are left alone, and a ``MALLOC_MMAP_THRESHOLD_`` set in the
environment (glibc reads it at start-up) wins over this default.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Final

MMAP_THRESHOLD: Final = 1 << 20
"""1 MiB: the de-dup table (8 MiB) and REST pages (MBs) are mapped; hot-path buffers are not."""

M_MMAP_THRESHOLD: Final = -3
"""glibc's ``mallopt`` parameter number (``<malloc.h>``)."""

ENVIRONMENT_OVERRIDE: Final = "MALLOC_MMAP_THRESHOLD_"

_pinned: int | None = None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> int | None:
    """Fix glibc's mmap threshold at ``threshold`` bytes (dynamic adjustment off).

    Returns the threshold now in force because of this call, or None when nothing was changed:
    not glibc, or the environment already chose one. Safe to call more than once.
    """
    global _pinned
    if os.environ.get(ENVIRONMENT_OVERRIDE):
        return None
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return None
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return None
    _pinned = threshold
    return threshold


def pinned_mmap_threshold() -> int | None:
    """The threshold :func:`pin_mmap_threshold` set in this process, if it did."""
    return _pinned


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a stub  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    call: Callable[[int, int], int] = mallopt
    return call
