"""The recorder in a running service: bounded, reported like a sink, complete after disk
trouble, at most about a flush interval behind when killed, usable from the command line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from coinfeed.config import ListenAddress
from coinfeed.core.events import encode_lines
from coinfeed.recording import segments as segments_module
from coinfeed.recording.format import FORMAT_NAME, Batch, encode_header
from coinfeed.recording.segments import list_segments, read_segment
from coinfeed.service import RECORD_CHANNEL_CAPACITY, Service
from coinfeed.simulator import SimulatorConfig
from tests.coinfeed_process import child_environment
from tests.helpers import MemorySink, running, samples, service_settings, wait_for


async def replayed_events(directory: Path) -> list[object]:
    sink = MemorySink()
    service = Service.build_replay(
        service_settings(), str(directory), sinks=[sink], handle_signals=False
    )
    with trio.fail_after(60):
        assert await service.run() == 0
    return list(sink.events)


async def test_a_failing_disk_is_reported_like_a_failing_sink_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "recording"
    real_write_all = segments_module._write_all
    disk = {"full": False}

    def write_all(fd: int, data: bytes) -> None:
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(segments_module, "_write_all", write_all)
    async with running(
        service_settings, SimulatorConfig(rate=1000, seed=8, faults="gaps"),
        record=str(record), http=ListenAddress("127.0.0.1", 0), record_flush_interval=0.2,
    ) as (_sim, service, live):  # fmt: skip
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            await trio.sleep(1)
            disk["full"] = True
            with trio.fail_after(10):
                while True:
                    ready = await client.get("/ready")
                    reasons = ready.json().get("reasons", [])
                    if any(r.startswith("sink record failing: OSError") for r in reasons):
                        break
                    await trio.sleep(0.1)
            assert ready.status_code == 503
            metrics = samples((await client.get("/metrics")).text)
            assert metrics[("coinfeed_sink_errors_total", (("sink", "record"),))] >= 1
            disk["full"] = False  # space again: the held batches are written, in order
            await wait_for(lambda: "record" not in service.status.sink_failures, 15, "recovery")
            await trio.sleep(1)
    assert encode_lines(await replayed_events(record)) == encode_lines(live.events)  # type: ignore[arg-type]


async def test_the_recorders_channel_is_bounded_and_shown_in_debug_memory(
    tmp_path: Path,
) -> None:
    async with running(
        service_settings, SimulatorConfig(rate=500, seed=1),
        record=str(tmp_path / "rec"), http=ListenAddress("127.0.0.1", 0),
    ) as (_sim, service, _live):  # fmt: skip
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as client:
            report = (await client.get("/api/debug/memory")).json()
    queue = report["queues"]["sink:record"]
    assert queue["capacity"] == RECORD_CHANNEL_CAPACITY
    assert 0 <= queue["peak"] <= RECORD_CHANNEL_CAPACITY


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coinfeed", *args],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_kill_9_loses_at_most_about_the_flush_interval_and_the_rest_replays(
    tmp_path: Path,
) -> None:
    record, replayed = tmp_path / "rec", tmp_path / "replayed.jsonl"
    command = [sys.executable, "-m", "coinfeed", "demo", "--record", str(record),
               "--record-flush-interval", "1", "--sink", "jsonl:/dev/null", "--http", "off",
               "--faults", "gaps", "--log-level", "WARNING"]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while not list_segments(record):
                await trio.sleep(0.1)
        await trio.sleep(3.3)
    finally:
        process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        await process.wait()
    listing = await trio.to_thread.run_sync(run_cli, "recordings", str(record), "--json")
    assert listing.returncode == 0, listing.stderr
    [segment] = json.loads(listing.stdout)
    assert segment["error"] is None and segment["frames"] > 1000
    last = max(r.wall_ns for r in read_segment(list_segments(record)[0]) if isinstance(r, Batch))
    # The demo's feed never pauses: what was recorded runs to within about a flush interval
    # (1 s) of the kill, plus the time a compressed write takes.
    assert killed_at - last / 1e9 < 1.0 + 1.0
    result = await trio.to_thread.run_sync(
        run_cli, "replay", str(record), "--sink", f"jsonl:{replayed}", "--http", "off"
    )
    assert result.returncode == 0, result.stderr
    assert replayed.stat().st_size > 0


def test_recordings_lists_each_segment_with_its_figures(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    # Segments of 0.5 s written every 0.2 s: several in 3.5 s however the writes fall.
    demo = run_cli("demo", "--record", str(record), "--record-segment-seconds", "0.5",
                   "--record-flush-interval", "0.2", "--duration", "3.5",
                   "--sink", "jsonl:/dev/null", "--http", "off",
                   "--faults", "gaps", "--log-level", "WARNING")  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    table = run_cli("recordings", str(record))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["segment", "from", "(UTC)"]
    assert len(lines) - 2 == len(list_segments(record)) >= 3
    assert all(line.rstrip().endswith("ok") for line in lines[1:-1])
    summaries = json.loads(run_cli("recordings", str(record), "--json").stdout)
    assert sum(s["connections"] for s in summaries) == 1
    assert sum(s["gaps"] for s in summaries) > 0  # the gaps profile drops frames
    assert all(s["compression_ratio"] > 2 for s in summaries)
    assert lines[-1].startswith(f"{len(summaries)} segments, {sum(s['frames'] for s in summaries)}")


def test_the_command_line_refuses_what_it_cannot_replay_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["replay", str(empty)], ["recordings", str(empty)]):
        result = run_cli(*command, "--http", "off") if command[0] == "replay" else run_cli(*command)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith("coinfeed: error: no recording")
    newer = tmp_path / "newer"
    newer.mkdir()
    import zstandard

    header = encode_header({"format": FORMAT_NAME, "format_version": 2, "written_by": "coinfeed 9"})
    (newer / "20261206T000000.000Z-00000000-000000.cfrec").write_bytes(
        zstandard.ZstdCompressor().compress(header)
    )
    result = run_cli("replay", str(newer), "--http", "off")
    assert result.returncode == 2
    assert "format version 2 is newer than this coinfeed reads (1)" in result.stderr
    result = run_cli("replay", str(newer), "--speed", "fast")
    assert result.returncode == 2 and "--speed: must be a number > 0 or max" in result.stderr
    result = run_cli("replay", str(newer), "--from", "yesterday")
    assert result.returncode == 2 and "--from: must be an ISO 8601 time" in result.stderr


def test_a_second_recorder_on_one_directory_exits_2_naming_record(tmp_path: Path) -> None:
    from coinfeed.dirlock import lock_in

    record = tmp_path / "rec"
    fd = lock_in(record, segments_module.LOCK_NAME)
    try:
        result = run_cli("demo", "--record", str(record), "--duration", "1", "--http", "off")
    finally:
        os.close(fd)
    assert result.returncode == 2
    assert "invalid setting 'record'" in result.stderr
    assert "another coinfeed process" in result.stderr
