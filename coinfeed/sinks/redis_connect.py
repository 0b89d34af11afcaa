"""Clients for the three Redis topologies, built the same way for the sink and the reader.

redis-py's synchronous clients (its asyncio client does not run on trio): ``redis.Redis`` for one
server, ``RedisCluster`` for a cluster (it follows MOVED/ASK and re-reads the slot map after a
failover), and ``Sentinel.master_for`` for a primary that Sentinels fail over (each new connection
asks the Sentinels where the primary is now). Timeouts are short (a hung server fails a command
within ``timeout`` seconds); a command on a connection the server closed is retried once, at once.
"""

from __future__ import annotations

from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from coinfeed.sinks.redis_url import RedisUrl

CONNECT_TIMEOUT: Final = 2.0

Client = redis.Redis | RedisCluster


def connect(url: RedisUrl, *, timeout: float, ca_file: str | None = None) -> Client:
    """A client for ``url``. One server or Sentinel: nothing is sent yet. A cluster is asked for
    its slot map here, so this raises ``redis.RedisError`` when no seed node answers."""
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, CONNECT_TIMEOUT),
        "username": url.user,
        "password": url.password,
        # One immediate retry for a pooled socket the server closed; a timeout is a hung
        # server, and retrying it would only double the time a command takes to fail.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }
    if url.topology == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],  # type: ignore[no-untyped-call]
            **common,
        )
    if url.topology == "sentinel":
        assert url.master is not None
        sentinels = Sentinel(
            list(url.nodes),
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": min(timeout, CONNECT_TIMEOUT),
            },
        )
        client: redis.Redis = sentinels.master_for(url.master, db=url.database, **common)
        return client
    tls: dict[str, Any] = {}
    if url.tls:
        tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": ca_file}
    return redis.Redis.from_url(url.unredacted, **common, **tls)
