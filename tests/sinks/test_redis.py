"""The Redis Streams sink against a real redis-server on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
import redis
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.core.events import decode_event, encode_event
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.sinks import open_sink
from coinfeed.sinks.redis_streams import RedisStreamSink, ReplicasBehind
from tests.helpers import SYM, book, gap, quote, trade, wait_for
from tests.sinks.kinds import PAIR, one_of_each
from tests.sinks.redisserver import RedisServer, stream

OTHER = "COINBASE_SPOT_ETH_USD"


def stream_keys(client: redis.Redis) -> list[str]:
    """The stream keys, sorted (the de-dup sets next to them end in ``:seen``)."""
    return sorted(k.decode() for k in client.scan_iter("coinfeed:*", _type="STREAM"))


def test_events_land_in_one_stream_per_kind_and_symbol(redis_server: RedisServer) -> None:
    events = [
        trade(1),
        trade(2, symbol=OTHER, price="0.00000050"),
        quote(3),
        book(4, snapshot=True),
        gap(),
    ]
    sink = open_sink(redis_server.url)
    sink.write_batch(events)
    sink.close()
    with redis_server.client() as client:
        keys = stream_keys(client)
        assert keys == sorted([stream("book", SYM), stream("gap", SYM),
                               stream("quote", SYM), stream("trade", OTHER),
                               stream("trade", SYM)])  # fmt: skip
        [(_, fields)] = client.xrange(stream("trade", OTHER))
        assert list(fields) == [b"json"]
        assert b'"price":5.0E-7' in fields[b"json"]
        assert decode_event(fields[b"json"]) == events[1]
        assert [decode_event(f[b"json"]) for _, f in client.xrange(stream("gap", SYM))] == [
            events[4]
        ]


def test_the_newer_kinds_land_in_their_streams_with_the_exact_digits(
    redis_server: RedisServer,
) -> None:
    events = one_of_each()
    sink = open_sink(redis_server.url)
    sink.write_batch(events)
    sink.close()
    with redis_server.client() as client:
        keys = stream_keys(client)
        assert keys == [stream("bar", SYM), stream("book_top", SYM),
                        stream("exrate", PAIR), stream("ohlcv", SYM)]  # fmt: skip
        stored = [fields[b"json"] for key in keys for _, fields in client.xrange(key)]
    # The jsonl sink's line, byte for byte (the digits too), in order within each stream.
    assert sorted(stored) == sorted(encode_event(e) for e in events)
    assert [decode_event(data) for data in stored] == [events[0], events[1], events[4],
                                                      events[2], events[3]]  # fmt: skip


def test_streams_are_trimmed_to_about_redis_maxlen(redis_server: RedisServer) -> None:
    sink = RedisStreamSink.open(redis_server.url, maxlen=200)
    for start in range(0, 3000, 500):
        sink.write_batch([trade(n) for n in range(start, start + 500)])
    sink.close()
    with redis_server.client() as client:
        length = client.xlen(stream("trade", SYM))
        info = client.xinfo_stream(stream("trade", SYM))
    # MAXLEN ~ trims whole macro-nodes (100 entries by default): at least 200, never far above.
    assert 200 <= length <= 200 + 100, length
    assert info["entries-added"] == 3000


def test_a_retried_batch_writes_nothing_twice(redis_server: RedisServer) -> None:
    sink = RedisStreamSink.open(redis_server.url, maxlen=10_000)
    batch: list[Any] = [trade(n) for n in range(100)] + [quote(1), book(2, snapshot=True)]
    sink.write_batch(batch)
    # The writer retries with the same list object after a failure it could not see through
    # (e.g. the reply was lost after Redis applied the pipeline): the retry adds nothing.
    sink.write_batch(batch)
    assert sink.already_written == len(batch)
    sink.write_batch([trade(100), quote(2)])  # a new batch after that is written normally
    sink.close()
    with redis_server.client() as client:
        assert client.xlen(stream("trade", SYM)) == 101
        assert client.xlen(stream("quote", SYM)) == 2
        assert client.xlen(stream("book", SYM)) == 1


def test_a_redis_that_is_down_fails_the_batch_and_the_retry_succeeds_later(
    redis_server: RedisServer,
) -> None:
    sink = RedisStreamSink.open(redis_server.url, maxlen=1000, timeout=1.0)
    sink.write_batch([trade(1)])
    redis_server.stop()
    batch: list[Any] = [trade(2), trade(3)]
    with pytest.raises(redis.ConnectionError):
        sink.write_batch(batch)
    redis_server.start()
    sink.write_batch(batch)  # the writer's retry, on a fresh connection
    sink.close()
    with redis_server.client() as client:  # no persistence: only what came after the restart
        assert [decode_event(f[b"json"]).uuid for _, f in client.xrange(stream("trade", SYM))] == [  # type: ignore[union-attr]
            trade(2).uuid,
            trade(3).uuid,
        ]


def test_a_hung_redis_fails_the_batch_within_seconds_and_the_retry_writes_it_once(
    redis_server: RedisServer,
) -> None:
    sink = open_sink(redis_server.url)  # the default timeouts
    sink.write_batch([trade(1)])
    batch: list[Any] = [trade(2), trade(3)]
    with redis_server.paused():  # SIGSTOP: the socket stays open, no reply ever comes
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            sink.write_batch(batch)
        took = time.monotonic() - started
        # Well inside sink_stall_after (5 s by default), so /ready reports a failing sink.
        assert took < 3.0, took
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            sink.write_batch(batch)  # the writer's retry, on a new connection: as fast
        assert time.monotonic() - started < 3.0
    sink.write_batch(batch)  # resumed: Redis ran the first attempt late, nothing is doubled
    sink.close()
    with redis_server.client() as client:
        entries = client.xrange(stream("trade", SYM))
    assert [decode_event(f[b"json"]).uuid for _, f in entries] == [  # type: ignore[union-attr]
        trade(n).uuid for n in (1, 2, 3)
    ]


async def test_a_redis_outage_is_reported_bounded_and_recovered(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    symbols = ("BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_ETH_USD")
    async with open_simulator(SimulatorConfig(rate=3000, seed=21, symbols=symbols)) as sim:
        settings = make_settings(
            ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=symbols,
            sinks=(redis_server.url,), http=ListenAddress("127.0.0.1", 0),
            queue_capacity=50, sink_queue_capacity=200, sink_batch_size=100,
            sink_flush_interval=0.2, stale_after=2.0, recovery_pause=0.02,
        )  # fmt: skip
        service = Service.build(settings, handle_signals=False)
        [writer] = service.hub.writers
        name = writer.sink.name
        counters = writer.counters
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert service.http_url is not None
            async with httpx.AsyncClient(base_url=service.http_url) as http:
                await wait_for(lambda: counters.events.get(name, 0) > 200, 5, "events in Redis")
                assert (await http.get("/ready")).status_code == 200
                await trio.to_thread.run_sync(redis_server.stop)
                await wait_for(lambda: counters.errors.get(name, 0) >= 3, 10, "counted errors")
                ready = await http.get("/ready")
                assert ready.status_code == 503
                assert any(f"sink {name} failing" in r for r in ready.json()["reasons"])
                metrics = (await http.get("/metrics")).text
                assert f'coinfeed_sink_errors_total{{sink="{name}"}}' in metrics
                await trio.sleep(1.0)
                # The processor is blocked on the full channel, the raw queue drops (and
                # recovery will repair): memory stays bounded by the two capacities.
                assert writer.channel.statistics().peak <= 200
                assert service.queue.statistics().peak <= 50
                assert service.queue.statistics().dropped > 0
                written = counters.events.get(name, 0)
                await trio.to_thread.run_sync(redis_server.start)
                await wait_for(lambda: name not in service.status.sink_failures, 10, "recovery")
                await wait_for(lambda: counters.events.get(name, 0) > written + 500, 10, "resume")
                await wait_for(lambda: service.status.connected, 5, "connected")
                assert (await http.get("/ready")).status_code == 200
                with redis_server.client() as client:
                    assert client.xlen(stream("trade", symbols[0])) > 0
            service.status.request_shutdown("test over")


def test_trades_a_restart_emits_again_are_not_appended_twice(redis_server: RedisServer) -> None:
    # Before a crash: a batch landed, but coinfeed died before its checkpoint said so.
    before_crash = RedisStreamSink.open(redis_server.url, maxlen=10_000)
    before_crash.write_batch([trade(n) for n in range(50)])
    before_crash.close()
    # After the restart the backfill emits the same trades again (another received_at), from a
    # new process that has nothing in memory of what was written.
    after_restart = RedisStreamSink.open(redis_server.url, maxlen=10_000)
    later = "2026-11-28T10:05:00.000001Z"
    after_restart.write_batch(
        [msgspec.structs.replace(trade(n), source="rest", received_at=later) for n in range(40, 60)]
    )
    after_restart.close()
    with redis_server.client() as client:
        entries = client.xrange(stream("trade", SYM))
    assert [decode_event(f[b"json"]).uuid for _, f in entries] == [  # type: ignore[union-attr]
        trade(n).uuid for n in range(60)
    ]


def test_two_writers_of_one_stream_neither_fail_nor_double(redis_server: RedisServer) -> None:
    # Two sinks on one stream (e.g. two consumers fanning a feed into one Redis): each entry once.
    first = RedisStreamSink.open(redis_server.url, maxlen=10_000)
    second = RedisStreamSink.open(redis_server.url, maxlen=10_000)
    first.write_batch([trade(n) for n in range(0, 30)])
    second.write_batch([trade(n) for n in range(20, 40)])
    first.write_batch([trade(n) for n in range(35, 50)])
    first.close()
    second.close()
    with redis_server.client() as client:
        entries = client.xrange(stream("trade", SYM))
    assert [decode_event(f[b"json"]).uuid for _, f in entries] == [  # type: ignore[union-attr]
        trade(n).uuid for n in range(50)
    ]


def test_the_de_dup_set_holds_the_keys_of_about_the_last_maxlen_entries(
    redis_server: RedisServer,
) -> None:
    sink = RedisStreamSink.open(redis_server.url, maxlen=200)
    for start in range(0, 1000, 250):
        sink.write_batch([trade(n) for n in range(start, start + 250)])
    sink.close()
    with redis_server.client() as client:
        seen = [m.decode() for m in client.zrange(stream("trade", SYM) + ":seen", 0, -1)]
    assert seen == [trade(n).uuid for n in range(800, 1000)]  # oldest first, bounded


def test_a_batch_fewer_replicas_confirm_than_asked_fails_and_is_retried_once_whole(
    redis_server: RedisServer,
) -> None:
    # A server with no replica cannot confirm: the batch fails (the writer retries it), and
    # the retry appends nothing twice.
    sink = RedisStreamSink.open(redis_server.url, maxlen=1000, wait_replicas=1)
    batch: list[Any] = [trade(1), trade(2)]
    for _ in range(2):
        with pytest.raises(ReplicasBehind, match="0 of 1 replicas confirmed"):
            sink.write_batch(batch)
    sink.close()
    with redis_server.client() as client:
        assert client.xlen(stream("trade", SYM)) == 2
