"""Record a run, replay it: the same events, byte for byte, through the same processor."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import zstandard

from coinfeed.config import ListenAddress, Secret, Settings
from coinfeed.core.events import BarEvent, Event, GapEvent, TradeEvent, encode_lines
from coinfeed.core.protocol import parse_time
from coinfeed.recording.format import Batch, End, Sent
from coinfeed.recording.listing import summarize
from coinfeed.recording.segments import list_segments, read_segment
from coinfeed.service import Service
from coinfeed.simulator import SimulatorConfig
from tests.coinfeed_process import child_environment
from tests.helpers import SYMBOLS, MemorySink, running, samples, service_settings, wait_for


async def replay(
    directory: Path, settings: Settings | None = None, **options: object
) -> list[object]:
    """Every event a replay of ``directory`` emits (it stops by itself at the end)."""
    sink = MemorySink()
    service = Service.build_replay(
        settings or service_settings(), str(directory), sinks=[sink], handle_signals=False,
        **options,
    )  # fmt: skip
    with trio.fail_after(60):
        assert await service.run() == 0
    return list(sink.events)


async def record_run(
    record: Path, config: SimulatorConfig, seconds: float, **settings: Any
) -> list[Event]:
    """The events of a run of ``seconds`` against the simulator, recorded into ``record``."""
    async with running(service_settings, config, record=str(record), **settings) as (_, _, live):
        await trio.sleep(seconds)
    return live.events


@pytest.mark.parametrize(
    ("faults", "rest_faults", "reconnect"),
    [
        ("gaps", None, False),
        ("gaps", None, True),  # reconnect backfills, book resyncs after a reconnect
        ("gaps", "rest-5xx", False),  # retried and failed backfills
        ("gaps", "slow-rest", False),  # windows still being fetched at the stop
        ("chaos", None, False),
    ],
)
async def test_replay_emits_the_recorded_runs_events_exactly(
    tmp_path: Path, faults: str, rest_faults: str | None, reconnect: bool
) -> None:
    record = tmp_path / "recording"
    async with running(
        service_settings,
        SimulatorConfig(rate=2000, seed=11, faults=faults),
        record=str(record),
        recovery_max_attempts=3,
    ) as (sim, _service, live):
        if rest_faults is not None:
            sim.rest_faults.set_profile(rest_faults)
        await trio.sleep(2)
        if reconnect:  # the server drops the connection: a reconnect backfill, book resyncs
            sim.send_error_all()
            await wait_for(lambda: sim.stats.ws_connections_total >= 2, 10, "a reconnect")
        await trio.sleep(2)
        gaps = [e for e in live.events if isinstance(e, GapEvent)]
    assert gaps, "the fault profile made no gap: the replay would prove little"
    answers = [
        answer
        for path in list_segments(record)
        for r in read_segment(path)
        if isinstance(r, Batch | End)
        for answer in r.answers
    ]
    if rest_faults == "slow-rest":  # the shutdown reported windows still being fetched
        assert any(a["call"] == "unfinished" and a["value"] for a in answers)
    else:
        assert any(a["call"] == "resync" for a in answers)
    replayed = await replay(record)
    assert encode_lines(replayed) == encode_lines(live.events)  # type: ignore[arg-type]


def test_the_cli_round_trip_of_a_chaos_demo_is_identical_with_cmp(tmp_path: Path) -> None:
    """The issue's own commands: demo --record, then replay --speed max, then compare."""
    live, replayed, record = tmp_path / "live.jsonl", tmp_path / "replayed.jsonl", tmp_path / "rec"
    env = child_environment()
    command = [sys.executable, "-m", "coinfeed"]
    demo = subprocess.run(
        [*command, "demo", "--faults", "chaos", "--record", str(record), "--sink",
         f"jsonl:{live}", "--duration", "5", "--http", "off", "--log-level", "WARNING"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr.decode()
    run = subprocess.run(
        [*command, "replay", str(record), "--speed", "max", "--sink", f"jsonl:{replayed}",
         "--http", "off", "--log-level", "WARNING"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    assert live.stat().st_size > 100_000
    assert subprocess.run(["cmp", str(live), str(replayed)], check=False).returncode == 0


async def test_two_runs_in_one_directory_replay_as_two_runs(tmp_path: Path) -> None:
    """A process restarted on the same directory: each run is replayed with a fresh
    processor, as it ran, and the two runs' events follow each other."""
    record = tmp_path / "recording"
    live: list[Event] = []
    for seed in (3, 4):
        config = SimulatorConfig(rate=800, seed=seed, faults="gaps")
        live += await record_run(record, config, 1.5)
    runs = {read_segment_header(path)["run_id"] for path in list_segments(record)}
    assert len(runs) == 2
    replayed = await replay(record)
    assert encode_lines(replayed) == encode_lines(live)  # type: ignore[arg-type]


def read_segment_header(path: Path) -> dict[str, object]:
    header: dict[str, object] = next(read_segment(path))
    return header


async def test_from_and_to_replay_the_events_of_that_window(tmp_path: Path) -> None:
    record = tmp_path / "recording"
    live = await record_run(record, SimulatorConfig(rate=1000, seed=5, faults="gaps"), 3)
    stamps = sorted({event.received_at for event in live})
    start, stop = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    replayed = await replay(record, start=parse_time(start), stop=parse_time(stop))
    expected = [e for e in live if start <= e.received_at <= stop]
    assert len(expected) > 100
    assert encode_lines(replayed) == encode_lines(expected)  # type: ignore[arg-type]


async def test_the_recording_keeps_what_was_sent_and_never_the_key(tmp_path: Path) -> None:
    record = tmp_path / "recording"
    key = "f00dfeed-0000-4000-8000-123456789abc"
    async with running(
        service_settings, SimulatorConfig(rate=500, seed=2), record=str(record),
        api_key=Secret(key), apikey_in_hello=True,
    ) as (_sim, _service, live):  # fmt: skip
        await wait_for(lambda: len(live.events) > 50, 10, "events")
    segments = list_segments(record)
    sent = [r for path in segments for r in read_segment(path) if isinstance(r, Sent)]
    assert sent and '"type":"hello"' in sent[0].text.replace(" ", "")
    assert all(key not in r.text for r in sent)
    for path in segments:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(path.read_bytes()), read_across_frames=True
        )
        raw = reader.read()
        assert b'"type":"hello"' in raw.replace(b" ", b"")
        assert key.encode() not in raw


async def test_books_and_metrics_answer_during_a_paced_replay(tmp_path: Path) -> None:
    record = tmp_path / "recording"
    live = await record_run(record, SimulatorConfig(rate=1000, seed=9), 2)
    sink = MemorySink()
    service = Service.build_replay(
        service_settings(http=ListenAddress("127.0.0.1", 0)), str(record), speed=1.0,
        sinks=[sink], handle_signals=False,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            with trio.fail_after(10):
                while not sink.events:  # paced: the replay takes about as long as the run
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            book = (await client.get(f"/api/books/{SYMBOLS[0]}")).json()
            metrics = samples((await client.get("/metrics")).text)
            assert not service.status.shutdown.is_set(), "the replay is still going"
    assert book["state"] == "synced" and book["asks"]
    assert metrics[("coinfeed_messages_received_total", (("type", "book"),))] > 0
    assert encode_lines(sink.events) == encode_lines(live)  # type: ignore[arg-type]


async def test_a_run_whose_first_segments_are_gone_still_lists_and_replays(
    tmp_path: Path,
) -> None:
    """Retention deletes a run's first segments: the processor then starts part way, knows
    less than the live one did and asks recovery other questions; the listing and the replay
    still go through every segment left."""
    record = tmp_path / "recording"
    live = await record_run(
        record, SimulatorConfig(rate=2000, seed=13, faults="gaps"), 5,
        record_segment_seconds=0.5, record_flush_interval=0.2,
    )  # fmt: skip
    segments = list_segments(record)
    assert len(segments) >= 6
    resyncs = [
        sum(a["call"] == "resync" for r in read_segment(p) if isinstance(r, Batch)
            for a in r.answers)
        for p in segments
    ]  # fmt: skip
    assert sum(resyncs[1:]) > 0, "no book resync after the first segment: nothing to prove"
    for first in range(1, len(segments)):
        trimmed = tmp_path / f"from-{first}"
        trimmed.mkdir()
        for path in segments[first:]:
            (trimmed / path.name).write_bytes(path.read_bytes())
        summaries = await summarize(str(trimmed))
        assert [s.error for s in summaries] == [None] * (len(segments) - first)
        events = await replay(trimmed)
        assert events
        assert {e.received_at for e in events} <= {e.received_at for e in live}


async def test_every_frame_is_recorded_with_the_time_its_socket_read_returned(
    tmp_path: Path,
) -> None:
    record = tmp_path / "recording"
    await record_run(record, SimulatorConfig(rate=2000, seed=4, faults="gaps"), 1.5)
    batches = [r for p in list_segments(record) for r in read_segment(p) if isinstance(r, Batch)]
    frames = 0
    for batch in batches:
        starts = [index for index, _, _ in batch.reads]
        assert starts == sorted(set(starts))
        for index, read_ns, read_now in batch.reads:
            assert isinstance(batch.items[index], str | bytes)  # a read starts with a frame
            # Read first, handled after: the batch's clocks are never earlier than its reads.
            assert read_ns <= batch.wall_ns + 1_000 and read_now <= batch.now
        for position, item in enumerate(batch.items):
            if isinstance(item, str | bytes):
                frames += 1
                assert any(start <= position for start in starts), "a frame with no read"
    assert frames > 1000


async def test_a_replay_derives_the_same_bars_and_book_snapshots(tmp_path: Path) -> None:
    """Bars and snapshots fall due by the clock: the recording keeps the batches the clock
    woke the processor for, so the replay emits them in the same places."""
    record = tmp_path / "recording"
    live = await record_run(
        record, SimulatorConfig(rate=1500, seed=5, faults="gaps"), 3,
        bars=("1SEC", "1MIN"), bar_grace=0.2, book_snapshots=("5@250ms",),
    )  # fmt: skip
    kinds = {type(e).__name__ for e in live}
    assert {"BarEvent", "BookTopEvent"} <= kinds
    replayed = await replay(record)
    assert encode_lines(replayed) == encode_lines(live)  # type: ignore[arg-type]


async def test_a_replay_can_derive_bars_the_run_did_not(tmp_path: Path) -> None:
    record = tmp_path / "recording"
    live = await record_run(record, SimulatorConfig(rate=1500, seed=6), 2.5)
    assert not any(isinstance(e, BarEvent) for e in live)
    replayed = await replay(record, service_settings(bars=("1SEC",)))
    bars = [e for e in replayed if isinstance(e, BarEvent)]
    trades = [e for e in live if isinstance(e, TradeEvent) and e.size]
    assert sum(b.trades_count for b in bars if b.revision == 0) <= len(trades)
    final = {(b.symbol_id, b.time_period_start): b for b in bars}
    assert sum(b.trades_count for b in final.values()) == len(trades)
