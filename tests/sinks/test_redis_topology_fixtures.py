"""The Redis Cluster and Sentinel fixtures do what the sink's failover tests rely on: a write
a replica acknowledged survives the loss of its primary, and the promoted replica takes writes.
"""

from __future__ import annotations

import redis

from tests.sinks.redistopology import RedisClusterNodes, SentinelGroup

KEY = "coinfeed:trade:COINBASE_SPOT_BTC_USD"


def test_the_cluster_promotes_a_replica_that_kept_the_acknowledged_writes(
    redis_cluster: RedisClusterNodes,
) -> None:
    keys = [KEY, *(f"before:{i}" for i in range(20))]
    seeds = redis_cluster.url.removeprefix("redis+cluster://").split(",")
    assert seeds == [f"127.0.0.1:{p}" for p in redis_cluster.primaries_at_start]
    assert len(seeds) == 3
    with redis_cluster.client() as client:
        for key in keys:
            client.set(key, f"value of {key}")
        # WAIT counts the replicas that have this connection's writes, so it must go to the
        # node that took them (untargeted, redis-py sends it to its default node).
        for primary in client.get_primaries():
            assert client.execute_command("WAIT", 1, 1000, target_nodes=primary) == 1
    old, new = redis_cluster.kill_primary_of(KEY)
    assert new != old
    assert redis_cluster.primary_port_for(KEY) == new
    with redis_cluster.client() as client:
        assert client.mget_nonatomic(keys) == [f"value of {key}".encode() for key in keys]
        assert client.get_node_from_key(KEY).port == new
        client.set(KEY, "after")
    with redis.Redis(host="127.0.0.1", port=new, socket_timeout=5) as node:
        assert node.get(KEY) == b"after"


def test_the_sentinels_promote_the_replica_that_kept_the_acknowledged_writes(
    redis_sentinel: SentinelGroup,
) -> None:
    assert (
        redis_sentinel.url
        == "redis+sentinel://"
        + ",".join(f"127.0.0.1:{p}" for p in redis_sentinel.sentinel_ports)
        + "/coinfeedmaster/0"
    )
    assert redis_sentinel.current_primary_port() == redis_sentinel.primary_port
    with redis_sentinel.client() as client:
        client.set(KEY, "before")
        assert client.wait(1, 1000) == 1
    new = redis_sentinel.fail_over()
    assert new == redis_sentinel.replica_port
    assert redis_sentinel.current_primary_port() == new
    with redis_sentinel.client() as client:
        assert client.get(KEY) == b"before"
        client.set(KEY, "after")
    with redis.Redis(host="127.0.0.1", port=new, socket_timeout=5) as node:
        assert node.get(KEY) == b"after"
