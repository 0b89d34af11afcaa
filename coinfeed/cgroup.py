"""The memory limit of this process's cgroup (v2 or v1), for RSS-as-a-share-of-the-limit figures.

How this works: ``/proc/self/cgroup`` names the process's cgroup in each hierarchy. The limit
that applies is the smallest one set on that cgroup or any ancestor up to the mount root, so
every ``memory.max`` (v2) or ``memory/memory.limit_in_bytes`` (v1) on the way is read. v2's
``max`` and v1's near-2**63 "unlimited" values are no limit. Inside a container with its own
cgroup namespace the named path is ``/`` and only the root file is read. v2 wins when present.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
