"""JSON Lines files stay whole through a full disk, a failed write and a crash mid-write."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from coinfeed.core.events import Event, decode_event, encode_event, encode_lines
from coinfeed.sinks.jsonl import JsonlSink
from coinfeed.sinks.writer import EventChannel, SinkCounters, SinkWriter
from coinfeed.status import ServiceStatus
from tests.helpers import trade
from tests.sinks.kinds import one_of_each


def lines_of(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"the file ends in a torn line: {raw[-80:]!r}"
    return [json.loads(line) for line in raw.splitlines()]


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at ``where`` (CI runs as root); an ordinary directory where mounting is
    not allowed, in which case the tests below inject ENOSPC instead."""
    where.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield where
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> int:
    """Fill the filesystem of ``path`` with one file; return the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                written += filler.write(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


async def test_a_full_disk_leaves_whole_lines_and_nothing_twice_once_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_filesystem(tmp_path / "small") as disk:
        path = disk / "events.jsonl"
        sink = JsonlSink.open(str(path))
        status = ServiceStatus()
        writer = SinkWriter(sink, EventChannel(10_000), status, SinkCounters(), max_batch=500)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.channel.send([trade(n) for n in range(500)], 1)
            with trio.fail_after(5):
                while writer.written_number < 1:
                    await trio.sleep(0.01)
            if fill(disk / "filler") == 0:  # not a small filesystem: inject the full disk
                real_write = os.write

                def full_after_some(fd: int, data: bytes | memoryview) -> int:
                    if fd == sink._fd:
                        if len(data) > 1000:
                            return real_write(fd, data[:1000])  # a part of the batch lands ...
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then full
                    return real_write(fd, data)

                monkeypatch.setattr(os, "write", full_after_some)
            await writer.channel.send([trade(n) for n in range(500, 1000)], 2)
            with trio.fail_after(5):
                while sink.name not in status.sink_failures:
                    await trio.sleep(0.01)
            # While the disk is full the file holds the first batch only, whole.
            assert [e["sequence"] for e in lines_of(path)] == list(range(500))
            monkeypatch.undo()
            (disk / "filler").unlink(missing_ok=True)  # space comes back
            with trio.fail_after(10):
                while writer.written_number < 2:
                    await trio.sleep(0.05)
            writer.channel.close()
        assert [e["sequence"] for e in lines_of(path)] == list(range(1000))


async def test_a_write_whose_cut_back_fails_is_cut_before_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink.open(str(path))
    sink.write_batch([trade(1)])
    real_write, real_truncate = os.write, os.ftruncate

    def half(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, data[:10])
        raise OSError(errno.EIO, "I/O error")

    def read_only(fd: int, length: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "write", half)
    monkeypatch.setattr(os, "ftruncate", read_only)
    with pytest.raises(OSError):
        sink.write_batch([trade(2)])
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "ftruncate", real_truncate)
    sink.write_batch([trade(2)])
    sink.close()
    assert [e["sequence"] for e in lines_of(path)] == [1, 2]


def test_a_file_left_with_a_torn_line_by_a_crash_is_cut_back_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    whole = JsonlSink.open(str(path))
    whole.write_batch([trade(1), trade(2)])
    whole.close()
    with open(path, "ab") as file:
        file.write(b'{"kind":"trade","symbol_id":"BITS')  # what a SIGKILL mid-write leaves
    sink = JsonlSink.open(str(path))
    sink.write_batch([trade(3)])
    sink.close()
    assert [e["sequence"] for e in lines_of(path)] == [1, 2, 3]


def test_fsync_batch_syncs_every_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    never = JsonlSink.open(str(tmp_path / "never.jsonl"))
    never.write_batch([trade(1)])
    assert synced == []
    batch = JsonlSink.open(str(tmp_path / "batch.jsonl"), fsync="batch")
    batch.write_batch([trade(1)])
    batch.write_batch([trade(2)])
    assert synced == [batch._fd, batch._fd]
    never.close()
    batch.close()


def test_a_file_cut_by_someone_else_is_not_padded_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink.open(str(path))
    sink.write_batch([trade(1), trade(2)])
    with open(path, "r+b") as other:  # logrotate's copytruncate
        other.truncate(0)
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        sink.write_batch([trade(3)])
    monkeypatch.setattr(os, "write", real_write)
    sink.write_batch([trade(3)])
    sink.close()
    assert b"\0" not in path.read_bytes()
    assert [e["sequence"] for e in lines_of(path)] == [3]


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.__struct_config__.tag)
def test_each_newer_kind_round_trips_with_its_digits(tmp_path: Path, event: Event) -> None:
    line = encode_event(event)
    decoded = decode_event(line)
    assert decoded == event
    # == compares Decimals by value (770.0 == 770.000000000): the bytes compare the digits.
    assert encode_event(decoded) == line
    path = tmp_path / "events.jsonl"
    sink = JsonlSink.open(str(path))
    sink.write_batch([decoded, decoded])
    sink.close()
    assert path.read_bytes() == line + b"\n" + line + b"\n"


def test_the_numbers_of_the_newer_kinds_are_json_numbers_with_the_digits_sent() -> None:
    text = encode_lines(one_of_each()).decode()
    for written in ('"close":770.000000000,', '"low":5.0E-7,', '"high":1E+3,',
                    '"volume":123456789012345678901234567890.5,', '"rate":65013.000000000,',
                    '"price_close":5.0E-7,', '"price_close":null,', '"volume_traded":0E-8,',
                    '"asks":[[101.50,2],[101.25,1E-9]]', '"depth":2,',
                    '"symbol_id":"BTC/USD"'):  # fmt: skip
        assert written in text, written
