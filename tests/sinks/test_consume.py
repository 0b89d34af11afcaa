"""``coinfeed consume``: a consumer group over coinfeed's streams, against a real redis-server.

What a user of the reader relies on: every entry reaches the sinks, each to one consumer of the
group, acknowledged only after the sinks have it; a dead consumer's entries are claimed by
another; a restarted consumer delivers what it left pending first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
import trio

from coinfeed.consume import StreamConsumer, consume
from coinfeed.core.events import Event, TradeEvent, encode_event
from coinfeed.sinks import open_sink
from coinfeed.sinks.redis_streams import RedisStreamSink
from tests.helpers import SYM, MemorySink, quote, trade, wait_for
from tests.sinks.redisserver import RedisServer, stream

OTHER = "COINBASE_SPOT_ETH_USD"


def produce(server: RedisServer, events: list[Event]) -> None:
    sink = RedisStreamSink.open(server.url, maxlen=100_000)
    sink.write_batch(events)
    sink.close()


def consumer(server: RedisServer, name: str, **options: object) -> StreamConsumer:
    return StreamConsumer(server.client(), "group", name, **options)  # type: ignore[arg-type]


def pending(server: RedisServer, key: str) -> int | None:
    """Entries of ``key`` read but not acknowledged in the group (None: no group yet)."""
    with server.client() as client:
        try:
            return int(client.xpending(key, "group")["pending"])
        except redis.ResponseError:
            return None


def hold(server: RedisServer, consumer: str, count: int) -> list[bytes]:
    """``consumer`` of the group reads ``count`` trades of SYM and never acknowledges them (it
    died, or crashed before its restart); returns their entry ids."""
    key = stream("trade", SYM)
    with server.client() as client:
        client.xgroup_create(key, "group", id="0")
        [(_, entries)] = client.xreadgroup("group", consumer, {key: ">"}, count=count)
    return [entry_id for entry_id, _ in entries]


def uuids(events: list[Event]) -> list[str]:
    return [e.uuid for e in events if isinstance(e, TradeEvent)]


async def test_every_entry_reaches_the_sink_in_stream_order_and_is_acknowledged(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(300)] + [quote(1), trade(1, symbol=OTHER)])
    sink = MemorySink()
    reader = consumer(redis_server, "one", count=50)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 302, 10, "every entry delivered")
        # A stream that appears later is found (discovery runs every few seconds).
        produce(redis_server, [quote(1, symbol=OTHER)])
        await wait_for(lambda: len(sink.events) == 303, 10, "the new stream's entry")
        nursery.cancel_scope.cancel()
    mine = [e for e in sink.events if isinstance(e, TradeEvent) and e.symbol_id == SYM]
    assert uuids(mine) == [trade(n).uuid for n in range(300)]  # in order, once each
    assert pending(redis_server, stream("trade", SYM)) == 0
    assert reader.stats.delivered == 303


async def test_kinds_and_symbols_narrow_the_streams_read(redis_server: RedisServer) -> None:
    produce(redis_server, [trade(1), quote(2), trade(3, symbol=OTHER), quote(4, symbol=OTHER)])
    sink = MemorySink()
    reader = consumer(redis_server, "one", kinds=("trade",), symbols=(OTHER,))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) >= 1, 10, "the trade")
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert sink.events == [trade(3, symbol=OTHER)]
    assert reader.streams == [stream("trade", OTHER)]


async def test_two_consumers_of_a_group_each_get_a_share_and_nothing_twice(
    redis_server: RedisServer,
) -> None:
    sinks = [MemorySink("a"), MemorySink("b")]
    readers = [consumer(redis_server, "a", count=20), consumer(redis_server, "b", count=20)]
    async with trio.open_nursery() as nursery:
        for reader, sink in zip(readers, sinks, strict=True):
            nursery.start_soon(consume, reader, [sink])
        for start in range(0, 2000, 100):  # entries keep coming while both read
            produce(redis_server, [trade(n) for n in range(start, start + 100)])
            await trio.sleep(0.01)
        await wait_for(lambda: sum(len(s.events) for s in sinks) >= 2000, 15, "all delivered")
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    a, b = (uuids(sink.events) for sink in sinks)
    assert a and b, (len(a), len(b))
    assert sorted(a + b) == sorted(trade(n).uuid for n in range(2000))  # each exactly once


async def test_a_dead_consumers_pending_entries_are_claimed_by_another(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(100)])
    key = stream("trade", SYM)
    hold(redis_server, "dead", 60)
    sink = MemorySink()
    reader = consumer(redis_server, "alive", claim_idle=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 100, 10, "the claimed entries too")
        nursery.cancel_scope.cancel()
    assert sorted(uuids(sink.events)) == sorted(trade(n).uuid for n in range(100))
    assert reader.stats.claimed == 60
    assert pending(redis_server, key) == 0


async def test_a_restarted_consumer_delivers_what_it_left_pending_first(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(10)])
    hold(redis_server, "worker", 4)  # the run that crashed
    sink = MemorySink()
    reader = consumer(redis_server, "worker", claim_idle=3600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 10, 10, "all ten")
        nursery.cancel_scope.cancel()
    assert uuids(sink.events) == [trade(n).uuid for n in range(10)]
    assert reader.stats.claimed == 0


async def test_nothing_is_acknowledged_while_the_sink_fails_and_nothing_is_lost(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(5)])
    sink = MemorySink(fail=True)
    reader = consumer(redis_server, "one")
    key = stream("trade", SYM)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: pending(redis_server, key) == 5, 10, "entries read")
        await trio.sleep(0.5)
        assert pending(redis_server, key) == 5  # held, not acknowledged
        sink.fail = False
        await wait_for(lambda: len(sink.events) == 5, 10, "the retry")
        await wait_for(lambda: pending(redis_server, key) == 0, 10, "acknowledged")
        nursery.cancel_scope.cancel()


async def test_an_entry_that_is_not_an_event_is_counted_and_skipped(
    redis_server: RedisServer,
) -> None:
    key = stream("trade", SYM)
    with redis_server.client() as client:
        client.xadd(key, {"json": b"{not json"})
        client.xadd(key, {"other": b"1"})
        client.xadd(key, {"json": encode_event(trade(1))})
    sink = MemorySink()
    reader = consumer(redis_server, "one")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 1, 10, "the good entry")
        await wait_for(lambda: pending(redis_server, key) == 0, 10, "all acknowledged")
        nursery.cancel_scope.cancel()
    assert sink.events == [trade(1)]
    assert reader.stats.malformed == 2


def test_the_command_writes_the_jsonl_lines_coinfeed_wrote_and_stops_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    events: list[Event] = [trade(n) for n in range(50)] + [quote(7)]
    produce(redis_server, events)
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINFEED_", "COINAPI_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "coinfeed", "consume", redis_server.url, "--group", "g",
         "--consumer", "c1", "--sink", f"jsonl:{out}", "--log-format", "json"],
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not out.exists() or out.read_bytes().count(b"\n") < len(events)
        ):
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    lines = out.read_bytes().splitlines()
    assert sorted(lines) == sorted(encode_event(e) for e in events)  # byte for byte
    [stopped] = [r for r in map(json.loads, err.splitlines()) if r["message"] == "stopped"]
    assert stopped["delivered"] == len(events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://127.0.0.1:1/0", "--group", "g"], "not a Redis URL"),
        (["redis://127.0.0.1:1/0", "--group", " "], "the group needs a name"),
        (["redis://127.0.0.1:1/0", "--group", "g", "--kinds", "trades"], "expected event kinds"),
        (["redis://127.0.0.1:1/0"], "--group"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coinfeed", "consume", *args], capture_output=True, timeout=30
    )
    assert done.returncode == 2
    assert message in done.stderr.decode()


async def test_a_stream_deleted_and_written_again_is_joined_again(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(3)])
    sink = MemorySink()
    reader = consumer(redis_server, "one")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 3, 10, "the first entries")
        with redis_server.client() as client:
            client.delete(stream("trade", SYM), stream("trade", SYM) + ":seen")  # group gone
        produce(redis_server, [trade(n) for n in range(3, 6)])
        await wait_for(lambda: len(sink.events) == 6, 10, "the entries after the delete")
        nursery.cancel_scope.cancel()
    assert uuids(sink.events) == [trade(n).uuid for n in range(6)]


async def test_a_parquet_sink_gets_its_files_when_the_consumer_stops(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    produce(redis_server, [trade(n) for n in range(40)])
    sink = open_sink(f"parquet:{tmp_path / 'history'}")
    reader = consumer(redis_server, "one")
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(consume, reader, [sink], stopping=stopping))
        await wait_for(lambda: pending(redis_server, stream("trade", SYM)) == 0, 10, "acked")
        await wait_for(lambda: reader.stats.delivered == 40, 10, "all delivered")
        stopping.set()  # the round in hand finishes, then the spool is converted whole
    sink.close()
    files = list((tmp_path / "history").rglob("*.parquet"))
    rows = pq.read_table(files[0]).column("uuid").to_pylist() if len(files) == 1 else files
    assert rows == [trade(n).uuid for n in range(40)]


async def test_a_dead_consumers_many_entries_are_claimed_without_waiting_between_rounds(
    redis_server: RedisServer,
) -> None:
    produce(redis_server, [trade(n) for n in range(1000)])
    key = stream("trade", SYM)
    held = hold(redis_server, "dead", 1000)
    with redis_server.client() as client:  # held for a minute already (XCLAIM … IDLE)
        client.xclaim(key, "group", "dead", 0, held, idle=60_000)
    sink = MemorySink()
    # 50 per claim, and claim passes 5 s apart when there was nothing to claim: the 20 claims
    # fit in seconds only if they follow each other while entries remain.
    reader = consumer(redis_server, "alive", count=50, claim_idle=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, reader, [sink])
        await wait_for(lambda: len(sink.events) == 1000, 3, "every claimed entry")
        nursery.cancel_scope.cancel()
    assert reader.stats.claimed == 1000
