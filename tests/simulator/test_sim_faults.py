"""Every fault is observable the way the issue describes it (one-shot triggers and profiles)."""

from __future__ import annotations

import itertools

import attrs
import httpx
import pytest
import trio
from simclient import (
    BTC,
    ETH,
    LocalBook,
    closed_reason,
    collect,
    connect,
    drain,
    receive,
    scope,
    sequences,
)
from trio_websocket import open_websocket_url

from coinfeed.core.decoding import FrameDecoder, InvalidFrame
from coinfeed.core.protocol import BookUpdate, Error, Reconnect, Trade, parse_time
from coinfeed.core.rest_protocol import rest_trades_decoder
from coinfeed.simulator import (
    BUFFER_OVERFLOW_MESSAGE,
    PROFILES,
    FaultProfile,
    SimulatorConfig,
    open_simulator,
)

FAST = SimulatorConfig(rate=20_000, snapshot_every=0)


def _gaps(seqs: list[int]) -> int:
    return sum(b - a - 1 for a, b in itertools.pairwise(seqs) if b > a + 1)


async def test_skip_next_trade_leaves_a_gap_whose_trades_are_in_rest_history() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [f"{BTC}$"])) as ws:
        before = await collect(ws, count=20)
        sim.pause_market()
        before += await drain(ws, idle=0.1)
        sim.faults.skip_next("trade", BTC, 3)
        sim.resume_market()
        after = await collect(ws, count=20)
        trades = [m for m in before + after if isinstance(m, Trade)]
        seqs = [t.sequence for t in trades]
        assert _gaps(seqs) == 3
        i = next(k for k in range(1, len(seqs)) if seqs[k] != seqs[k - 1] + 1)
        last, first = trades[i - 1], trades[i]
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            r = await rest.get(
                f"/v1/trades/{BTC}/history",
                params={"time_start": last.time_exchange, "time_end": first.time_exchange},
            )
        rows = rest_trades_decoder.decode(r.content)
        assert rows[0].uuid == last.uuid.lower()
        missing = [row.uuid for row in rows[1:]]
        assert len(missing) == 3
        assert not {t.uuid.lower() for t in trades} & set(missing)
        assert sim.truth.connections[1].skipped_of("trade") == 3


async def test_a_skipped_book_delta_really_changed_the_true_book() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["book"], [f"{BTC}$"])) as ws:
        sim.pause_market()
        book = LocalBook()
        for m in await drain(ws, idle=0.1):
            assert isinstance(m, BookUpdate)
            book.apply(m)
        truth = sim.truth.book(BTC)
        assert truth is not None and book.levels() == (truth.asks, truth.bids)
        sim.faults.skip_next("book", BTC, 1)
        while sim.truth.connections[1].skipped_of("book") == 0:
            sim.step_market(1)
        assert await drain(ws, idle=0.1) == []
        truth = sim.truth.book(BTC)
        assert truth is not None and book.levels() != (truth.asks, truth.bids)
        sim.step_market(200)
        later = [m for m in await drain(ws, idle=0.1) if isinstance(m, BookUpdate)]
        assert later and later[0].sequence == 3  # 1 was the snapshot, 2 was skipped


async def test_gaps_profile_skips_sequence_numbers_and_counts_them() -> None:
    config = attrs.evolve(FAST, faults=attrs.evolve(PROFILES["gaps"], skip_probability=0.05))
    async with open_simulator(config) as sim, connect(sim, scope(["trade", "quote"], [BTC])) as ws:
        msgs = await collect(ws, count=1_000)
        sim.pause_market()
        msgs += await drain(ws, idle=0.1)
        counters = sim.truth.connections[1]
        seqs = sequences(msgs)
        missing = sum(_gaps(v) for v in seqs.values())
        assert missing > 10
        assert missing <= counters.skipped_of("trade") + counters.skipped_of("quote")
        assert sum(len(v) for v in seqs.values()) == counters.sent_of("trade") + counters.sent_of(
            "quote"
        )


async def test_disconnect_all_closes_tcp_without_a_websocket_close() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        await collect(ws, count=5)
        await sim.disconnect_all()
        _, code = await closed_reason(ws)
        assert code == 1006  # abnormal closure: no close frame
        assert sim.stats.ws_connections_open == 0


async def test_reconnect_frame_is_followed_by_a_close_within_the_announced_time() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        await collect(ws, count=5)
        sim.send_reconnect_all(within_seconds=1)
        start = trio.current_time()
        msgs = await collect(ws, until=lambda m: isinstance(m, Reconnect))
        notice = msgs[-1]
        assert isinstance(notice, Reconnect) and notice.within_seconds == 1
        assert notice.before_time is not None and parse_time(notice.before_time)
        seen, code = await closed_reason(ws, within=4)
        assert 0.8 <= trio.current_time() - start <= 2.5
        assert code == 1001 and len(seen) > 0  # data kept flowing until the close


async def test_error_frame_then_close() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        await collect(ws, count=5)
        sim.send_error_all()
        seen, _ = await closed_reason(ws)
        error = FrameDecoder().decode(seen[-1])
        assert isinstance(error, Error) and error.message == BUFFER_OVERFLOW_MESSAGE


async def test_stall_sends_nothing_not_even_heartbeats_while_tcp_stays_open() -> None:
    hello = scope(["trade"], [f"{BTC}$"], heartbeat=True)
    async with open_simulator(FAST) as sim, connect(sim, hello) as ws:
        before = await collect(ws, count=20)
        sim.stall(1.2)
        await drain(ws, idle=0.05)  # what was already on the wire
        start = trio.current_time()
        nxt = await receive(ws, within=3)
        assert trio.current_time() - start >= 1.0
        assert isinstance(nxt, Trade)  # the connection survived, data resumes...
        after = await collect(ws, count=5)
        seqs = [m.sequence for m in [*before, nxt, *after] if isinstance(m, Trade)]
        assert _gaps(seqs) > 0  # ...with a gap: frames of the stall were never sent
        assert sim.truth.connections[1].skipped_of("trade") > 0


async def test_blackhole_accepts_tcp_but_never_answers_the_upgrade() -> None:
    async with open_simulator(FAST) as sim:
        host, port = sim.blackhole_url.split("//")[1].split("/")[0].split(":")
        stream = await trio.open_tcp_stream(host, int(port))  # TCP is accepted
        await stream.aclose()
        with trio.move_on_after(0.5) as timeout:
            async with open_websocket_url(sim.blackhole_url):
                pytest.fail("the upgrade must never complete")
        assert timeout.cancelled_caught


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("not_json", "not_json"),
        ("wrong_price", "invalid_schema"),
        ("sequence_string", "invalid_schema"),
        ("unknown_type", "unknown_type"),
        ("oversized", "too_large"),
    ],
)
async def test_malformed_wrongly_typed_unknown_and_oversized_frames(kind: str, reason: str) -> None:
    decoder = FrameDecoder(max_frame_bytes=100_000)
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [f"{ETH}$"])) as ws:
        await collect(ws, count=3)
        if kind == "oversized":
            sim.inject_oversized_all(200_000)  # 2x the client's limit
        else:
            sim.inject_malformed_all(kind)
        with trio.fail_after(5):
            while not isinstance(bad := decoder.decode(await ws.get_message()), InvalidFrame):
                pass
        assert bad.reason == reason
        assert isinstance(decoder.decode(await ws.get_message()), Trade)  # stream goes on
    if kind == "unknown_type":
        assert '"type":"symbol"' in (await _raw_unknown())


async def _raw_unknown() -> str:
    from coinfeed.simulator.faults import malformed_frame

    return malformed_frame("unknown_type", ETH).decode()


async def test_malformed_profile_inserts_bad_frames_without_using_sequence_numbers() -> None:
    profile = attrs.evolve(PROFILES["malformed"], malformed_probability=0.05)
    config = attrs.evolve(FAST, faults=profile)
    async with open_simulator(config) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        msgs = await collect(ws, count=600)
    bad = [m for m in msgs if isinstance(m, InvalidFrame)]
    assert len(bad) > 5 and len({b.reason for b in bad}) >= 2
    assert all(_gaps(v) == 0 for v in sequences(msgs).values())


async def test_duplicated_and_out_of_order_frames() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [f"{BTC}$"])) as ws:
        msgs = await collect(ws, count=5)
        for trigger in (sim.faults.duplicate_next, sim.faults.reorder_next):
            sim.pause_market()  # so that the trigger acts on the frames collected next
            msgs += await drain(ws, idle=0.1)
            trigger("trade", BTC, 1)
            sim.resume_market()
            msgs += await collect(ws, count=15)
    seqs = sequences(msgs)[("trade", BTC)]
    pairs = list(itertools.pairwise(seqs))
    assert any(a == b for a, b in pairs)  # a duplicate
    assert any(b == a - 1 for a, b in pairs)  # n+1 then n
    assert sorted(set(seqs)) == list(range(seqs[0], seqs[0] + len(set(seqs))))  # nothing lost


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ({"disconnect_per_second": 50.0}, 1006),
        ({"error_per_second": 50.0}, "error"),
        ({"reconnect_per_second": 50.0, "reconnect_within_seconds": 0}, "reconnect"),
    ],
)
async def test_probabilistic_connection_faults(fault: dict[str, float], expect: object) -> None:
    config = attrs.evolve(FAST, faults=FaultProfile(**fault))  # type: ignore[arg-type]
    async with open_simulator(config) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        seen, code = await closed_reason(ws, within=5)
    if expect == 1006:
        assert code == 1006
    else:
        assert any(f'"type":"{expect}"' in frame for frame in seen)


async def test_stall_profile_goes_quiet() -> None:
    profile = FaultProfile(stall_per_second=5.0, stall_seconds=0.5)
    async with (
        open_simulator(attrs.evolve(FAST, faults=profile)) as sim,
        connect(sim, scope(["trade"], [BTC], heartbeat=True)) as ws,
    ):
        gaps: list[float] = []
        last = trio.current_time()
        while not gaps or max(gaps) < 0.4:
            await receive(ws, within=3)
            now = trio.current_time()
            gaps.append(now - last)
            last = now
        assert sim.truth.connections[1].skipped_of("trade") > 0


def test_named_profiles_switch_on_what_their_name_says() -> None:
    p = PROFILES
    assert set(p) >= {"none", "gaps", "disconnects", "chaos", "slow-rest", "rest-429"}
    assert set(p) >= {"rest-5xx", "stall", "malformed"}
    assert p["none"] == FaultProfile(name="none")
    assert p["gaps"].skip_probability > 0
    assert p["disconnects"].disconnect_per_second > 0 and p["disconnects"].reconnect_per_second > 0
    assert p["slow-rest"].rest_delay_probability == 1.0
    assert p["rest-429"].rest_429_probability > 0
    assert p["rest-5xx"].rest_5xx_probability > 0
    assert p["stall"].stall_seconds > 10  # longer than coinfeed's 10 s watchdog
    assert p["malformed"].malformed_probability > 0 and p["malformed"].oversized_per_second > 0
    chaos = p["chaos"]
    assert chaos.skip_probability and chaos.disconnect_per_second and chaos.rest_5xx_probability


async def test_a_reconnect_during_a_stall_goes_out_when_the_stall_ends() -> None:
    async with open_simulator(FAST) as sim, connect(sim, scope(["trade"], [BTC])) as ws:
        await collect(ws, count=5)
        sim.stall(0.5)
        start = trio.current_time()
        sim.send_reconnect_all(within_seconds=0)
        seen, code = await closed_reason(ws, within=3)
        took = trio.current_time() - start
    assert code == 1001 and any('"type":"reconnect"' in f for f in seen)
    assert 0.45 <= took <= 1.5
