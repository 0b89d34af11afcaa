"""Fixtures for the sink tests: a real redis-server, a Redis Cluster, a Sentinel group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sinks.redisserver import RedisServer
from tests.sinks.redistopology import RedisClusterNodes, SentinelGroup


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """3 primaries with a replica each, joined and in sync."""
    cluster = RedisClusterNodes(tmp_path)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, its replica in sync, and 3 sentinels that know them and each other."""
    group = SentinelGroup(tmp_path)
    group.start()
    try:
        yield group
    finally:
        group.stop()
