"""JSON log lines carry their context as fields, so log pipelines can filter on them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator

import pytest
import trio
from loguru import logger

from coinfeed.config import Settings
from coinfeed.logs import setup_logging
from coinfeed.service import Service
from tests.fakes import FakeTransport, FakeWebSocket
from tests.helpers import MemorySink, wait_for


@pytest.fixture
def json_logs() -> Iterator[None]:
    setup_logging("json", "DEBUG", secrets=["sekrit-key-4711"])
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(lambda message: sys.stderr.write(message))


@pytest.mark.usefixtures("json_logs")
async def test_invalid_frames_and_drops_are_logged_with_context_fields(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = FakeWebSocket()
    service = Service.build(
        make_settings(queue_capacity=2),
        transport=FakeTransport([ws]),
        sinks=[MemorySink()],
        handle_signals=False,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        ws.feed("not json")
        ws.feed(*['{"type":"hearbeat"}'] * 5)  # at least 3 of 5 do not fit a queue of 2
        await wait_for(
            lambda: (
                service.processor.counters.invalid.get("not_json", 0) == 1
                and service.queue.dropped_total >= 3
            ),
            5,
            "the bad frame skipped and the drops counted",
        )
        service.status.request_shutdown("test over")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    by_message = {record["message"]: record for record in records}
    invalid = by_message["invalid frame skipped"]
    assert invalid["level"] == "WARNING" and invalid["reason"] == "not_json"
    assert invalid["size"] == len("not json")
    dropped = next(r for r in records if r["message"].startswith("raw queue full"))
    assert dropped["dropped"] == service.queue.dropped_total >= 3
    assert dropped["capacity"] == 2
    assert all({"time", "level", "message", "logger"} <= record.keys() for record in records)
