"""A failover under the feed, on real servers: a Redis Cluster (3 primaries, each with a replica)
and a primary/replica pair with three Sentinels.

The issue's promise, end to end: a simulator run written into Redis while a primary is killed
and its replica promoted leaves every trade of the ground truth in the streams exactly once;
then two ``coinfeed consume`` processes of one group share the streams, the one that dies with
entries unacknowledged has them claimed by the other, and the sink they share (a Redis stream,
idempotent) holds every trade once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from redis.exceptions import RedisClusterException

from coinfeed.config import Settings
from coinfeed.core.events import Event
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.sinks.redis_streams import RedisStreamSink
from tests.helpers import SYM, SYMBOLS, trade, truth_uuids, wait_for
from tests.sinks.redisserver import RedisServer, stream
from tests.sinks.redistopology import RedisClusterNodes, SentinelGroup

Topology = RedisClusterNodes | SentinelGroup

pytestmark = pytest.mark.slow


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    found: Topology = request.getfixturevalue(f"redis_{request.param}")
    return found


def trade_uuids(client: Any) -> list[str]:
    """The uuid of every entry of the trade streams of :data:`SYMBOLS`, duplicates kept."""
    found = []
    for symbol in SYMBOLS:
        for _, fields in client.xrange(stream("trade", symbol)):
            found.append(json.loads(fields[b"json"])["uuid"])
    return found


def fail_over(topology: Topology) -> None:
    """Kill the primary that holds the first symbol's streams; once its replica took over, give
    it a replica again, so that ``WAIT 1`` can be met again: in the cluster the killed node
    restarts (it rejoins as its successor's replica), under Sentinel a new server joins."""
    if isinstance(topology, RedisClusterNodes):
        old, _ = topology.kill_primary_of(stream("trade", SYMBOLS[0]))
        topology.rejoin(old)
    else:
        topology.fail_over()
        topology.add_replica()


async def test_a_failover_loses_and_doubles_no_trade_and_two_consumers_share_the_streams(
    make_settings: Callable[..., Settings],
    topology: Topology,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    async with open_simulator(SimulatorConfig(rate=2000, seed=21)) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=SYMBOLS, sinks=(topology.url,),
            redis_wait_replicas=1, stale_after=2.0, recovery_pause=0.02,
            sink_batch_size=200, sink_flush_interval=0.2,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        [writer] = service.hub.writers
        name, counters = writer.sink.name, writer.counters
        sim.pause_market()  # trades made before the hello arrived were never owed to us
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: sim.stats.scope_messages >= 1, 5, "the hello to arrive")
            sim.resume_market()
            await wait_for(lambda: counters.events.get(name, 0) > 500, 10, "entries written")
            await trio.to_thread.run_sync(fail_over, topology)
            await trio.sleep(1.0)
            sim.pause_market()
            expected = truth_uuids(sim)
            with topology.client() as client:
                await wait_for(
                    lambda: (
                        set(trade_uuids(client)) >= expected
                        and service.recovery.pending_backfills == 0
                    ),
                    30,
                    "every trade in the streams",
                )
                stored = trade_uuids(client)
            # The failover showed as a failing sink, then a recovered one.
            assert counters.errors.get(name, 0) > 0
            assert name not in service.status.sink_failures
            service.status.request_shutdown("test over")
    assert len(stored) == len(set(stored)) and set(stored) == expected

    # The store the consumers fan the streams out into: a single redis-server.
    await consume_with_one_consumer_killed(topology, redis_server, tmp_path, expected)


async def consume_with_one_consumer_killed(
    topology: Topology, target: RedisServer, tmp_path: Path, expected: set[str]
) -> None:
    """Consumers ``a`` and ``b`` of one group share the streams, each writing to the shared
    target and to a file of its own. ``a``'s file is a pipe nobody reads while it runs: once its
    buffer (16 KiB, about four of its rounds) is full, ``a`` blocks holding entries it read; it
    is killed there, and ``b`` claims them."""
    fifo = tmp_path / "a.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: a's open succeeds
    fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 16384)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINFEED_", "COINAPI_"))}

    def start(consumer: str, out: Path, count: int) -> subprocess.Popen[bytes]:
        # claim-idle 3 s: longer than it takes to see that a is stuck, and then kill it.
        return subprocess.Popen(
            [sys.executable, "-m", "coinfeed", "consume", topology.url, "--group", "g",
             "--consumer", consumer, "--kinds", "trade", "--count", str(count),
             "--claim-idle", "3", "--sink", target.url, "--sink", f"jsonl:{out}",
             "--log-format", "json"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    processes = [start("a", fifo, 5)]
    a = processes[0]
    try:
        with topology.client() as client:
            # a goes first (so that it has its rounds before b takes the rest), then both read.
            await wait_for(lambda: held_by(client, "a") > 0, 20, "a reading")
            processes.append(start("b", tmp_path / "b.jsonl", 20))
            b = processes[1]
            held = await stuck_holding(client, "a")
            a.kill()
            a.wait(10)
            a_lines = drain(reader)
            # b reads the rest and claims what a held (idle for over a second).
            await wait_for(lambda: delivered_to(target) >= expected, 30, "every trade, via b")
            await wait_for(lambda: pending(client) == 0, 20, "a's entries claimed")
        b.send_signal(signal.SIGTERM)
        _, err = b.communicate(timeout=20)
        assert b.returncode == 0, err.decode()
    finally:
        os.close(reader)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    [stopped] = [r for r in map(json.loads, err.splitlines()) if r["message"] == "stopped"]
    assert 0 < stopped["claimed"] <= held
    from_a = [json.loads(line)["uuid"] for line in a_lines.splitlines() if line.endswith(b"}")]
    from_b = [json.loads(line)["uuid"] for line in (tmp_path / "b.jsonl").read_bytes().splitlines()]
    # Each entry went to one consumer; the only ones both wrote are some of those a held when
    # it died (written to its pipe, never acknowledged): at least once, as documented.
    assert len(from_a) == len(set(from_a)) and len(from_b) == len(set(from_b))
    assert from_a and from_b
    assert set(from_a) | set(from_b) == expected
    assert len(set(from_a) & set(from_b)) <= held
    # The sink both wrote to de-duplicates: every trade once, although a's last batch came twice.
    with target.client() as client:
        fanned_out = trade_uuids(client)
    assert len(fanned_out) == len(set(fanned_out)) and set(fanned_out) == expected


async def stuck_holding(client: Any, consumer: str) -> int:
    """Wait until ``consumer`` holds entries and has acknowledged none for half a second (a
    round takes milliseconds: it is blocked); returns how many it holds."""
    with trio.fail_after(20):
        while True:
            held = held_by(client, consumer)
            await trio.sleep(0.5)
            if held > 0 and held_by(client, consumer) == held:
                return held


def held_by(client: Any, consumer: str) -> int:
    """Entries of the trade streams ``consumer`` read and has not acknowledged."""
    total = 0
    for symbol in SYMBOLS:
        with contextlib.suppress(redis.ResponseError):  # no group on the stream yet
            for row in client.xpending(stream("trade", symbol), "g")["consumers"]:
                name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
                total += int(row["pending"]) if name == consumer else 0
    return total


def pending(client: Any) -> int:
    return sum(int(client.xpending(stream("trade", s), "g")["pending"]) for s in SYMBOLS)


def delivered_to(server: RedisServer) -> set[str]:
    with server.client() as client:
        return set(trade_uuids(client))


def drain(fd: int) -> bytes:
    """What is left in the pipe (its writer is gone)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_slot_moving_under_the_writes_loses_and_doubles_nothing(
    redis_cluster: RedisClusterNodes,
) -> None:
    # The writer's way: a failed batch is retried, the same batch, before the next one.
    sink = RedisStreamSink.open(redis_cluster.url, maxlen=100_000)
    key = stream("trade", SYM)
    failures: list[Exception] = []
    moved = threading.Event()

    def write() -> None:
        number = 0
        while not moved.is_set() or number < 40:
            batch: list[Event] = [trade(n) for n in range(number * 50, number * 50 + 50)]
            while True:
                try:
                    sink.write_batch(batch)
                    break
                except (redis.RedisError, RedisClusterException) as exc:
                    failures.append(exc)
                    time.sleep(0.01)
            number += 1
            time.sleep(0.005)
        written.append(number)

    written: list[int] = []
    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.1)
        source, target = redis_cluster.move_slot(key, pause=0.2)
    finally:
        moved.set()
        writer.join(30)
    sink.close()
    [batches] = written
    assert redis_cluster.primary_port_for(key) == target != source
    # Writes met the slot half-moved: the client followed ASK redirects to the new owner.
    with redis.Redis(port=target) as client:
        assert client.info("commandstats")["cmdstat_asking"]["calls"] > 0
    with redis_cluster.client() as client:
        entries = client.xrange(key)
    uuids = [json.loads(fields[b"json"])["uuid"] for _, fields in entries]
    assert uuids == [trade(n).uuid for n in range(batches * 50)]  # in order, each once
