"""The WebSocket endpoint behaves like CoinAPI's: scope, sequences, books, heartbeats, keys."""

from __future__ import annotations

import pytest
import trio
from simclient import (
    BTC,
    BTC_T,
    DECODER,
    ETH,
    LocalBook,
    closed_reason,
    collect,
    connect,
    drain,
    receive,
    scope,
    sequences,
    wait_until,
)

from coinfeed.core.protocol import Book5, BookUpdate, Error, Heartbeat, Quote, Trade, encode
from coinfeed.simulator import BUFFER_OVERFLOW_MESSAGE, SimulatorConfig, open_simulator


async def test_sequences_start_at_one_and_step_by_one_per_type_and_symbol() -> None:
    async with open_simulator(SimulatorConfig(rate=20_000, snapshot_every=0)) as sim:
        hello = scope(["trade", "quote", "book", "book5"], [f"{BTC}$", f"{ETH}$"])
        async with connect(sim, hello) as ws:
            msgs = await collect(ws, count=1_500)
    seqs = sequences(msgs)
    assert {t for t, _ in seqs} == {"trade", "quote", "book", "book5"}
    assert {s for _, s in seqs} == {BTC, ETH}
    for key, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), key
    books = [m for m in msgs if isinstance(m, BookUpdate)]
    for symbol in (BTC, ETH):
        mine = [b for b in books if b.symbol_id == symbol]
        assert mine[0].is_snapshot and mine[0].sequence == 1
        assert len(mine[0].asks) >= 10 and len(mine[0].bids) >= 10
        assert not any(b.is_snapshot for b in mine[1:])
    assert all(len(b.asks) <= 5 and len(b.bids) <= 5 for b in msgs if isinstance(b, Book5))
    trades = [m for m in msgs if isinstance(m, Trade)]
    assert all(t.uuid == t.uuid.upper() and len(t.time_exchange) == 28 for t in trades)


@pytest.mark.parametrize("snapshot_every", [0, 7])
async def test_book_snapshot_plus_deltas_rebuild_the_true_book(snapshot_every: int) -> None:
    config = SimulatorConfig(rate=20_000, snapshot_every=snapshot_every)
    async with open_simulator(config) as sim, connect(sim, scope(["book"], [f"{BTC}$"])) as ws:
        msgs = await collect(ws, count=300)
        sim.pause_market()
        msgs += await drain(ws)
        book = LocalBook()
        for m in msgs:
            assert isinstance(m, BookUpdate)
            book.apply(m)
        truth = sim.truth.book(BTC)
        assert truth is not None
        assert book.levels() == (truth.asks, truth.bids)
    mid_stream = [m for m in msgs if isinstance(m, BookUpdate) and m.is_snapshot]
    assert (len(mid_stream) > 1) == (snapshot_every > 0)


async def test_symbol_filter_is_a_prefix_match_unless_it_ends_with_dollar() -> None:
    async with open_simulator(SimulatorConfig(rate=20_000)) as sim:
        async with connect(sim, scope(["trade"], [BTC])) as ws:
            prefix = {m.symbol_id for m in await collect(ws, count=300) if isinstance(m, Trade)}
        async with connect(sim, scope(["trade"], [f"{BTC}$"])) as ws:
            exact = {m.symbol_id for m in await collect(ws, count=300) if isinstance(m, Trade)}
    assert prefix == {BTC, BTC_T}
    assert exact == {BTC}


async def test_hello_replaces_subscribe_adds_unsubscribe_removes_and_readding_restarts() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=20_000)) as sim,
        connect(sim, scope(["trade", "quote"], [f"{BTC}$"])) as ws,
    ):
        seen: list[object] = []

        async def change(message: str) -> list[object]:
            """Apply a scope change while the market is paused; return what follows it."""
            sim.pause_market()
            applied = sim.stats.scope_messages
            seen.extend(await drain(ws, idle=0.1))
            await ws.send_message(message)
            await wait_until(lambda: sim.stats.scope_messages > applied)
            sim.resume_market()
            after = await collect(ws, count=400)
            seen.extend(after)
            return list(after)

        seen.extend(await collect(ws, count=200))
        assert {(type(m), m.symbol_id) for m in seen} == {(Trade, BTC), (Quote, BTC)}  # type: ignore[attr-defined]
        sim.pause_market()
        seen.extend(await drain(ws, idle=0.1))
        last_btc = sequences(seen)[("trade", BTC)][-1]

        added = await change(scope(["trade"], [f"{ETH}$"], kind="subscribe"))
        seqs = sequences(added)
        assert {s for _, s in seqs} == {BTC, ETH}
        assert {t for t, _ in seqs} == {"trade", "quote"}  # types cross every filter
        assert seqs[("trade", BTC)][0] == last_btc + 1  # BTC kept its numbering
        assert seqs[("trade", ETH)][0] == 1

        removed = await change(scope(["trade"], [f"{BTC}$"], kind="unsubscribe"))
        assert {s for _, s in sequences(removed)} == {ETH}  # every type of BTC stopped

        readded = await change(scope(["trade"], [f"{BTC}$"], kind="subscribe"))
        seqs = sequences(readded)
        assert seqs[("trade", BTC)][0] == 1 and seqs[("quote", BTC)][0] == 1

        replaced = await change(scope(["quote"], [f"{ETH}$"]))
        assert {(t, s) for t, s in sequences(replaced)} == {("quote", ETH)}


async def test_heartbeats_are_spelled_hearbeat_and_come_after_each_second_of_silence() -> None:
    async with open_simulator(SimulatorConfig(rate=1_000)) as sim:
        silent = scope(["trade"], ["NO_SUCH_SYMBOL$"], heartbeat=True)
        async with connect(sim, silent) as ws, connect(sim, scope(["trade"], ["NOPE$"])) as quiet:
            start = trio.current_time()
            raw = []
            with trio.fail_after(3):
                raw.append(await ws.get_message())
                t1 = trio.current_time()
                raw.append(await ws.get_message())
                t2 = trio.current_time()
            assert raw == ['{"type":"hearbeat"}'] * 2
            assert 0.9 <= t1 - start <= 1.5 and 0.9 <= t2 - t1 <= 1.5
            assert isinstance(DECODER.decode(raw[0]), Heartbeat)
            assert await drain(quiet, idle=0.1) == []  # heartbeat not asked for: nothing


@pytest.mark.parametrize(
    ("how", "accepted"),
    [
        ("header", True),
        ("query", True),
        ("hello", True),
        ("bad-header", False),
        ("bad-hello", False),
        ("missing", False),
    ],
)
async def test_api_key_from_header_query_or_hello_and_a_bad_key_gets_error_then_close(
    how: str, accepted: bool
) -> None:
    async with open_simulator(SimulatorConfig(rate=5_000, keys={"good-key"})) as sim:
        url, headers, apikey = sim.ws_url, None, None
        if how == "header":
            headers = [(b"X-CoinAPI-Key", b"good-key")]
        elif how == "bad-header":
            headers = [(b"X-CoinAPI-Key", b"wrong")]
        elif how == "query":
            url = sim.ws_url + "?apikey=good-key"
        elif how in ("hello", "bad-hello"):
            apikey = "good-key" if how == "hello" else "wrong"
        async with connect(
            sim, scope(["trade"], [BTC], apikey=apikey), url=url, headers=headers
        ) as ws:
            if accepted:
                assert isinstance(await receive(ws), Trade)
            else:
                seen, _ = await closed_reason(ws)
                assert seen == [encode(Error("Invalid API key")).decode()]


async def test_any_key_or_none_is_accepted_when_no_keys_are_configured() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=5_000)) as sim,
        connect(sim, scope(["trade"], [BTC])) as ws,
    ):
        assert isinstance(await receive(ws), Trade)


@pytest.mark.parametrize(
    ("first", "text"),
    [
        ('{"type":"hello"', "Invalid message"),
        ('{"type":"ping"}', "Invalid message"),
        (scope(["trade"], [BTC], kind="unsubscribe"), "first message must be hello or subscribe"),
        (scope(["book"]), "require subscribe_filter_symbol_id"),
        (scope(["trades"], [BTC]), "Unknown data type"),
    ],
)
async def test_an_invalid_first_message_gets_an_error_frame_and_a_close(
    first: str, text: str
) -> None:
    async with open_simulator(SimulatorConfig(rate=5_000)) as sim, connect(sim, first) as ws:
        seen, _ = await closed_reason(ws)
    assert len(seen) == 1
    error = DECODER.decode(seen[0])
    assert isinstance(error, Error) and text in error.message


@pytest.mark.parametrize("action", ["count", "error"])
async def test_more_than_ten_hellos_in_ten_seconds_are_counted_or_refused(action: str) -> None:
    config = SimulatorConfig(rate=1_000, hello_rate_action=action)  # type: ignore[arg-type]
    async with open_simulator(config) as sim, connect(sim) as ws:
        for _ in range(12):
            await ws.send_message(scope(["quote"], [f"{BTC}$"]))
        if action == "error":
            seen, _ = await closed_reason(ws)
            assert "Too many hello/subscribe" in seen[-1]
        else:
            await wait_until(lambda: sim.stats.scope_messages == 12)
            assert isinstance(await receive(ws), Quote)
        assert sim.stats.hello_rate_violations == 2 if action == "count" else 1


async def test_a_client_that_stops_reading_overflows_the_send_queue_and_is_cut() -> None:
    config = SimulatorConfig(rate=60_000, send_queue_size=500)
    async with open_simulator(config) as sim:
        hello = scope(["trade", "quote", "book"], ["BITSTAMP", "COINBASE", "BINANCE", "KRAKEN"])
        # a message queue of 1: trio-websocket stops reading the socket while we do not read
        async with connect(sim, hello, queue=1) as ws:
            await wait_until(lambda: sim.stats.buffer_overflows == 1, within=15)
            seen, _ = await closed_reason(ws, within=10)
    assert seen[-1] == encode(Error(BUFFER_OVERFLOW_MESSAGE)).decode()
    assert sim.stats.frames_discarded >= 500
