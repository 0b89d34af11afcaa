"""/ready over real HTTP: stale streams, reconnects and books out of sync past their grace."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio

from coinfeed.config import ListenAddress, Settings
from coinfeed.simulator import SimulatorConfig
from tests.fakes import FakeWebSocket
from tests.helpers import running, samples, serving_fake_feed, wait_for

SYM = "BITSTAMP_SPOT_BTC_USD"
OTHER = "COINBASE_SPOT_ETH_USD"
T = "2026-11-28T10:00:00.0000000Z"


def book_frame(symbol: str, sequence: int, *, snapshot: bool) -> str:
    return (
        f'{{"type":"book","symbol_id":"{symbol}","sequence":{sequence},"time_exchange":"{T}",'
        f'"time_coinapi":"{T}","is_snapshot":{str(snapshot).lower()},'
        '"asks":[{"price":101.5,"size":2}],"bids":[{"price":99.0,"size":3}]}'
    )


async def test_ready_fails_while_the_simulator_stalls_and_recovers_after(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(
        make_settings,
        SimulatorConfig(rate=1000, seed=11),
        stale_after=1.5,
        http=ListenAddress("127.0.0.1", 0),
    ) as (sim, service, _sink):
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url, timeout=5) as client:

            async def ready() -> httpx.Response:
                return await client.get("/ready")

            with trio.fail_after(5):
                while (await ready()).status_code != 200:
                    await trio.sleep(0.1)
            sim.stall(4)
            reasons: list[str] = []
            with trio.fail_after(4):
                while (answer := await ready()).status_code == 200:
                    await trio.sleep(0.1)
                reasons = answer.json()["reasons"]
            assert any("no frame" in r or "not connected" in r for r in reasons), reasons
            with trio.fail_after(10):
                while (await ready()).status_code != 200:
                    await trio.sleep(0.1)
            assert service.connection.counters.reconnects.get("stale", 0) >= 1


async def test_a_reconnect_that_brings_no_frame_is_not_ready(
    make_settings: Callable[..., Settings],
) -> None:
    quiet = FakeWebSocket()
    async with serving_fake_feed(make_settings, quiet, stale_after=5.0, types=("trade",)) as (
        service,
        client,
    ):
        await wait_for(lambda: service.status.connected, 5, "connected")
        answer = await client.get("/ready")
        assert answer.status_code == 503
        assert any("no frame yet" in r for r in answer.json()["reasons"])
        quiet.feed('{"type":"hearbeat"}')
        await wait_for(
            lambda: service.processor.counters.received.get("hearbeat", 0) == 1,
            5,
            "the heartbeat",
        )
        assert (await client.get("/ready")).status_code == 200


async def test_one_book_out_of_sync_past_its_grace_makes_ready_fail_naming_it(
    make_settings: Callable[..., Settings],
) -> None:
    ws = FakeWebSocket()
    async with serving_fake_feed(
        make_settings,
        ws,
        symbols=(SYM, OTHER),
        types=("book",),
        stale_after=0.5,  # book grace: 2 x stale_after = 1 s
        recovery_max_attempts=50,
    ) as (_service, client):

        async def ready_after(seconds: float) -> httpx.Response:
            # Heartbeats keep the connection fresh while time passes.
            for _ in range(int(seconds / 0.1)):
                ws.feed('{"type":"hearbeat"}')
                await trio.sleep(0.1)
            return await client.get("/ready")

        ws.feed(book_frame(SYM, 1, snapshot=True))
        early = await ready_after(0.3)
        assert early.status_code == 200, early.text  # OTHER is still within its grace
        # OTHER never gets a snapshot: past the grace it is named, SYM is not.
        late = await ready_after(1.2)
        assert late.status_code == 503
        (reason,) = late.json()["reasons"]
        assert reason.startswith(f"book {OTHER} no_snapshot for "), reason
        ws.feed(book_frame(OTHER, 1, snapshot=True))
        assert (await ready_after(0.2)).status_code == 200
        # Connected well past the grace, a book that only now goes out of sync (a sequence
        # gap; its resubscribe is never answered here) gets its own grace before /ready fails.
        ws.feed(book_frame(SYM, 5, snapshot=False))
        assert (await ready_after(0.3)).status_code == 200
        stale = await ready_after(1.2)
        assert stale.status_code == 503
        (reason,) = stale.json()["reasons"]
        assert reason.startswith(f"book {SYM} stale for "), reason


async def test_a_gap_waiting_too_long_for_recovery_makes_the_service_not_ready(
    make_settings: Callable[..., Settings],
) -> None:
    ws = FakeWebSocket()
    async with serving_fake_feed(
        make_settings, ws, recovery_stale_after=1.0, recovery_pause=0.0
    ) as (service, client):
        await wait_for(lambda: service.status.connected, 5, "connected")
        ws.feed('{"type":"hearbeat"}')
        await wait_for(
            lambda: service.processor.counters.received.get("hearbeat", 0) == 1, 5, "a frame"
        )
        assert (await client.get("/ready")).status_code == 200
        # REST is unreachable (rest_url points at a closed port): the gap waits.
        ws.feed(trade_frame(1), trade_frame(5))
        await wait_for(
            lambda: (service.recovery.oldest_pending_age() or 0) > 1.2, 10, "the gap to age"
        )
        ws.feed('{"type":"hearbeat"}')
        answer = await client.get("/ready")
        assert answer.status_code == 503
        assert any(
            r.startswith("oldest pending recovery") and "recovery_stale_after=1" in r
            for r in answer.json()["reasons"]
        ), answer.text
        metrics = samples((await client.get("/metrics")).text)
        assert metrics[("coinfeed_recovery_oldest_pending_seconds", ())] > 1.2


def trade_frame(sequence: int) -> str:
    return (
        f'{{"type":"trade","symbol_id":"BITSTAMP_SPOT_BTC_USD","sequence":{sequence},'
        f'"time_exchange":"2026-11-28T10:00:0{sequence}.0000000Z",'
        f'"time_coinapi":"2026-11-28T10:00:00.0Z","uuid":"u-{sequence}","price":1,"size":1,'
        '"taker_side":"BUY"}'
    )
