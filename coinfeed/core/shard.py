"""Symbol sharding for scale-out: which replica (``--shard INDEX/COUNT``) takes which symbol.

The hash is blake2b of the UTF-8 symbol id, never Python's ``hash()`` (salted per process), so
every replica, on every machine and every restart, computes the same assignment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def shard_of(symbol_id: str, count: int) -> int:
    """The shard (0 <= shard < count) that takes ``symbol_id``; stable across processes."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.blake2b(symbol_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def assign(symbols: Iterable[str], count: int) -> list[list[str]]:
    """Split ``symbols`` into ``count`` shards, keeping their order within each shard."""
    shards: list[list[str]] = [[] for _ in range(count)]
    for symbol_id in symbols:
        shards[shard_of(symbol_id, count)].append(symbol_id)
    return shards


def symbols_of_shard(symbols: Iterable[str], index: int, count: int) -> tuple[str, ...]:
    """The symbols shard ``index`` of ``count`` takes, in their given order."""
    return tuple(s for s in symbols if shard_of(s, count) == index)
