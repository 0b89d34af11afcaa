"""The replay driver: pacing by the recorded clock, and a divergent recording stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from coinfeed.core.decoding import FrameDecoder
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.events import Event
from coinfeed.framequeue import FrameQueue
from coinfeed.processor import Processor
from coinfeed.recording import replay as replay_module
from coinfeed.recording.format import FORMAT_NAME, encode_batch, wall_ns
from coinfeed.recording.replay import (
    RecordedClock,
    ReplayDiverged,
    ReplayDriver,
    ReplayRecovery,
    check_recording,
)
from coinfeed.recording.segments import SegmentWriter
from coinfeed.status import ServiceStatus

SYMBOL = "BITSTAMP_SPOT_BTC_USD"
START = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
HEADER = {
    "format": FORMAT_NAME, "format_version": 1, "run_id": "0badcafe", "symbols": [SYMBOL],
    "types": ["trade", "book"],
    "processing": {"dedup_capacity": 1000, "max_frame_bytes": 1 << 20, "skew_margin": 2.0,
                   "restart_backfill_max": 86400.0, "resync_timeout": 10.0},
}  # fmt: skip


def trade(sequence: int) -> bytes:
    return (
        f'{{"type":"trade","symbol_id":"{SYMBOL}","sequence":{sequence},'
        f'"time_exchange":"2026-12-06T13:59:5{sequence}.0000000Z",'
        f'"time_coinapi":"2026-12-06T13:59:59.0Z","uuid":"u-{sequence}","price":1,"size":1,'
        '"taker_side":"BUY"}'
    ).encode()


def record(directory: Path, batches: list[tuple[float, list[Any], dict[str, Any]]]) -> None:
    writer = SegmentWriter.open(
        str(directory), HEADER, segment_seconds=3600, segment_bytes=1 << 30, retention=None
    )
    for now, items, extra in batches:
        wall = START + timedelta(seconds=now)
        writer.write_encoded(b"".join(encode_batch(items, [], extra, wall_ns(wall), now)))
    writer.close()


def driver(directory: Path, emit: Any, **options: Any) -> ReplayDriver:
    recovery, clock = ReplayRecovery(), RecordedClock()

    def new_processor(header: dict[str, Any]) -> Processor:
        async def unused(_events: list[Event]) -> None:
            raise AssertionError("the driver emits, not the processor")

        return Processor(
            queue=FrameQueue(1), recovery=recovery, emit=unused, status=ServiceStatus(),
            symbols=frozenset(header["symbols"]), types=frozenset(header["types"]),
            decoder=FrameDecoder(), dedup=TradeDedup(1000), wall_clock=clock.read,
            run_id=header["run_id"],
        )  # fmt: skip

    return ReplayDriver(directory, new_processor, emit, recovery, clock, **options)


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_speed_paces_batches_by_their_recorded_clock(
    tmp_path: Path, speed: float, autojump_clock: trio.testing.MockClock
) -> None:
    record(tmp_path, [(100.0 + t, [trade(n)], {}) for n, t in enumerate((0.0, 0.5, 2.0, 6.0))])
    emitted: list[tuple[float, str]] = []

    async def emit(events: list[Event]) -> None:
        emitted.extend((trio.current_time(), e.received_at) for e in events)

    started = trio.current_time()
    await driver(tmp_path, emit, speed=speed).run()
    offsets = [round(at - started, 6) for at, _ in emitted]
    assert offsets == [t / speed for t in (0.0, 0.5, 2.0, 6.0)]
    # Events carry the recorded wall clock, whatever the pace.
    assert emitted[-1][1] == "2026-12-06T14:01:46Z"


async def test_max_speed_does_not_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    record(tmp_path, [(t, [trade(n)], {}) for n, t in enumerate((0.0, 100.0, 5000.0))])
    emitted: list[float] = []

    async def emit(events: list[Event]) -> None:
        emitted.append(trio.current_time())

    started = trio.current_time()
    await driver(tmp_path, emit).run()
    assert emitted == [started] * 3


async def test_a_recording_the_processor_disagrees_with_is_stopped_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """Answers recorded for questions the processor does not ask (another coinfeed's
    decisions) are never silently skipped: the replay stops and says why."""
    book_gap = [  # a book update without a snapshot asks nothing; then a snapshot, then a gap
        b'{"type":"book","symbol_id":"%s","sequence":1,"time_exchange":"2026-12-06T14:00:00Z",'
        b'"time_coinapi":"2026-12-06T14:00:00Z","is_snapshot":true,"asks":[],"bids":[]}'
        % SYMBOL.encode(),
        b'{"type":"book","symbol_id":"%s","sequence":5,"time_exchange":"2026-12-06T14:00:00Z",'
        b'"time_coinapi":"2026-12-06T14:00:00Z","is_snapshot":false,"asks":[],"bids":[]}'
        % SYMBOL.encode(),
    ]
    record(tmp_path, [(0.0, book_gap, {"answers": [{"call": "retry", "value": True}]})])

    async def emit(events: list[Event]) -> None:
        pass

    with pytest.raises(ReplayDiverged, match="asked recovery for 'resync' where the recording"):
        await driver(tmp_path, emit).run()


async def test_an_answer_nobody_asked_for_stops_a_faithful_replay(tmp_path: Path) -> None:
    record(tmp_path, [(0.0, [trade(1)], {"answers": [{"call": "resync", "value": True}]})])

    async def emit(events: list[Event]) -> None:
        pass

    with pytest.raises(ReplayDiverged, match="answered 'resync' where the processor asked nothing"):
        await driver(tmp_path, emit).run()


async def test_a_segment_deleted_before_the_replay_reaches_it_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(tmp_path, [(0.0, [trade(1)], {})])
    emitted: list[Event] = []

    async def emit(events: list[Event]) -> None:
        emitted.extend(events)

    [path] = check_recording(tmp_path)
    gone = path.with_name(path.name.replace("-000000.", "-000001."))
    listed = [path, gone]  # as listed when the replay started; retention deleted one since
    monkeypatch.setattr(replay_module, "check_recording", lambda _directory: listed)
    await driver(tmp_path, emit).run()
    assert len(emitted) == 1


async def test_from_is_reached_without_pausing_and_paced_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    record(tmp_path, [(t, [trade(n)], {}) for n, t in enumerate((0.0, 50.0, 100.0, 102.0))])
    emitted: list[float] = []

    async def emit(events: list[Event]) -> None:
        emitted.append(trio.current_time())

    started = trio.current_time()
    start = wall_ns(START + timedelta(seconds=100))
    await driver(tmp_path, emit, speed=1.0, start_ns=start).run()
    assert [round(at - started, 6) for at in emitted] == [0.0, 2.0]
