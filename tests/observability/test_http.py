"""The HTTP endpoints over real loopback HTTP, with a fake WebSocket behind the service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import ListenAddress, Settings
from coinfeed.service import Service
from tests.fakes import FakeTransport, FakeWebSocket
from tests.helpers import MemorySink, wait_for

SYM = "BITSTAMP_SPOT_BTC_USD"
SNAPSHOT = (
    f'{{"type":"book","symbol_id":"{SYM}","sequence":1,"time_exchange":"2026-11-28T10:00:00.0000000Z",'
    '"time_coinapi":"2026-11-28T10:00:00.0000000Z","is_snapshot":true,'
    '"asks":[{"price":101.50,"size":2},{"price":101.25,"size":1}],"bids":[{"price":99.0,"size":3}]}'
)


@pytest.fixture
async def running(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Service, FakeWebSocket, str]]:
    ws = FakeWebSocket()
    settings = make_settings(http=ListenAddress("127.0.0.1", 0), stale_after=0.5)
    service = Service.build(
        settings, transport=FakeTransport([ws]), sinks=[MemorySink()], handle_signals=False
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.http_url is not None
        yield service, ws, service.http_url
        service.status.request_shutdown("test over")


async def test_health_ready_and_books(running: tuple[Service, FakeWebSocket, str]) -> None:
    service, ws, url = running
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).status_code == 200
        ws.feed('{"type":"hearbeat"}', SNAPSHOT)
        await wait_for(lambda: service.processor.counters.frames == 2, 5, "the snapshot")
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        book = (await client.get(f"/api/books/{SYM}?depth=1")).json()
        assert book["state"] == "synced"
        assert book["asks"] == [[101.25, 1]] and book["bids"] == [[99.0, 3]]
        assert (await client.get("/api/books/NOPE")).status_code == 404
        assert (await client.get(f"/api/books/{SYM}?depth=x")).status_code == 400
        # No frame for longer than stale_after: not ready, with the reason.
        await trio.sleep(0.3)
        ws.feed('{"type":"hearbeat"}')
        await trio.sleep(0.7)
        stale = await client.get("/ready")
        assert stale.status_code == 503
        assert any("no frame" in r or "not connected" in r for r in stale.json()["reasons"])


async def test_metrics_and_memory_debug(running: tuple[Service, FakeWebSocket, str]) -> None:
    service, ws, url = running
    other_symbol = SNAPSHOT.replace(SYM, "KRAKEN_SPOT_BTC_USD")  # a prefix filter's extra
    replayed_update = SNAPSHOT.replace('"is_snapshot":true', '"is_snapshot":false')
    ws.feed('{"type":"hearbeat"}', SNAPSHOT, "not json", other_symbol, replayed_update)
    await wait_for(lambda: service.processor.counters.frames == 5, 5, "the frames")
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}

        def by(label: str, family: str) -> dict[str, float]:
            return {
                s.labels[label]: s.value
                for s in families[family].samples
                if s.name.endswith("_total")
            }

        assert by("type", "coinfeed_messages_received") == {"book": 3, "hearbeat": 1}
        assert by("reason", "coinfeed_messages_invalid")["not_json"] == 1
        assert by("reason", "coinfeed_messages_skipped") == {
            "unrequested": 1,
            "stale_sequence": 1,
            "duplicate_trade": 0,
            "book_unsynced": 0,
        }
        for name in (
            "coinfeed_queue_capacity",
            "coinfeed_frames_dropped",
            "coinfeed_connected",
            "coinfeed_recovery_seconds",
            "coinfeed_reconnect_seconds",
            "coinfeed_message_processing_seconds",
            "process_resident_memory_bytes",
        ):
            assert name in families, name
        memory = (await client.get("/api/debug/memory")).json()
        assert memory["queues"]["raw"]["capacity"] == 500
        assert memory["queues"]["raw"]["peak"] >= 3
        assert memory["rss_bytes"] > 0 and memory["tasks"] > 5
