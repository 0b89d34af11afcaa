"""What the process itself looks like from inside: memory, file descriptors, tasks, allocator.

- :func:`rss_bytes`, :func:`open_fd_count`, :func:`live_task_count`: figures for the stats line
  and ``/api/debug/memory``.
- :func:`memory_limit_bytes`: the cgroup memory limit (v2 or v1). ``/proc/self/cgroup`` names the
  process's cgroup in each hierarchy; the limit that applies is the smallest one set on it or any
  ancestor up to the mount root. v2's ``max`` and v1's near-2**63 "unlimited" are no limit; v2
  wins when present.
- :func:`pin_mmap_threshold`: glibc raises its mmap threshold each time a large mapped block is
  freed (up to 32 MiB), after which blocks of that size come from the heap and stay resident
  when freed. The trade de-dup set rebuilds an 8 MiB table now and then, so a weeks-long run
  would keep freed tables. Pinning the threshold turns the adjustment off: blocks from
  :data:`MMAP_THRESHOLD` up are always unmapped when freed. Only glibc has this knob; a
  ``MALLOC_MMAP_THRESHOLD_`` in the environment wins (``docs/performance.md`` has the soaks).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Final

import trio


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


def open_fd_count() -> int | None:
    """File descriptors open in this process (None where ``/proc`` is unavailable)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def live_task_count() -> int:
    """Tasks alive in this trio run (trio's own system tasks included: compare to a baseline)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


# -- the cgroup memory limit ------------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
V1_UNLIMITED = 1 << 60
"""v1 reports "no limit" as a page-rounded 2**63 - 1; anything from 1 EiB up is treated so."""


def own_cgroup_paths(proc_cgroup: Path = PROC_SELF_CGROUP) -> dict[str, str]:
    """This process's cgroup path by hierarchy: ``"v2"`` for the unified one, ``"memory"`` (v1)."""
    paths: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return paths
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["memory"] = path
    return paths


def _limit_from_file(path: Path) -> tuple[bool, int | None]:
    """(file found, limit); a file that says ``max``, or an unlimited v1 figure, has no limit."""
    try:
        text = path.read_text().strip()
    except OSError:
        return False, None
    if text == "max":
        return True, None
    try:
        value = int(text)
    except ValueError:
        return False, None
    return True, (value if 0 < value < V1_UNLIMITED else None)


def _smallest_limit(mount: Path, own: str | None, filename: str) -> tuple[bool, int | None]:
    """The smallest limit from the cgroup ``own`` up to ``mount`` (found any file, limit)."""
    relative = PurePosixPath(own or "/").relative_to("/")
    directories = [mount / relative, *(mount / p for p in relative.parents)]
    found_any = False
    limits: list[int] = []
    for directory in dict.fromkeys(directories):
        found, limit = _limit_from_file(directory / filename)
        found_any = found_any or found
        if limit is not None:
            limits.append(limit)
    return found_any, (min(limits) if limits else None)


def memory_limit_bytes(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> int | None:
    """The memory limit that applies to this process in bytes, or None when there is none."""
    own = own_cgroup_paths(proc_cgroup)
    if ".." in own.get("v2", "") or ".." in own.get("memory", ""):
        return None  # never read outside the mount
    found, limit = _smallest_limit(root, own.get("v2"), "memory.max")
    if found:
        return limit
    return _smallest_limit(root / "memory", own.get("memory"), "memory.limit_in_bytes")[1]


# -- the allocator ---------------------------------------------------------------------------

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
