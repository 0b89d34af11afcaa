"""Segment files: rotation, retention, a crash's torn tail, a failing disk, one writer."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coinfeed.config.values import Retention
from coinfeed.recording import segments as segments_module
from coinfeed.recording.format import FORMAT_NAME, Batch, RecordingError, encode_batch
from coinfeed.recording.segments import (
    SegmentTail,
    SegmentWriter,
    list_segments,
    read_segment,
)

HEADER = {"format": FORMAT_NAME, "format_version": 1, "run_id": "0badcafe"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_765_000_000.0

    def __call__(self) -> float:
        return self.now


def writer(directory: Path, clock: Clock, **options: object) -> SegmentWriter:
    values: dict[str, object] = {
        "segment_seconds": 3600.0,
        "segment_bytes": 1 << 30,
        "retention": None,
    }
    values.update(options)
    opened = SegmentWriter.open(str(directory), HEADER, **values)  # type: ignore[arg-type]
    opened.clock = clock
    return opened


def batch_bytes(n: int, clock: Clock, size: int = 100) -> bytes:
    frame = (f"{n:08d}" * (size // 8 + 1))[:size].encode()
    return b"".join(encode_batch([frame], [], {}, int(clock.now * 1e9), float(n)))


def batches_of(path: Path, tail: SegmentTail | None = None) -> list[int]:
    records = read_segment(path, tail)
    if next(records, None) is None:  # cut before the header was whole
        return []
    return [int(r.now) for r in records if isinstance(r, Batch)]


def all_batches(directory: Path) -> list[int]:
    return [n for path in list_segments(directory) for n in batches_of(path)]


def test_segments_rotate_by_age_and_are_named_after_their_first_record(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock, segment_seconds=60.0)
    for n in range(10):
        w.write_encoded(batch_bytes(n, clock))
        clock.now += 15.0  # a new segment every 4 writes
    w.close()
    paths = list_segments(tmp_path)
    assert len(paths) == 3
    assert [batches_of(p) for p in paths] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert paths[1].name.startswith("20251206T054740.000Z-0badcafe-000001")
    headers = [next(read_segment(p)) for p in paths]
    assert [h["segment"] for h in headers] == [0, 1, 2]


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock, segment_bytes=1 << 20)
    incompressible = os.urandom(300_000)
    for n in range(8):
        w.write_encoded(b"".join(encode_batch([incompressible], [], {}, 0, float(n))))
    w.close()
    paths = list_segments(tmp_path)
    assert len(paths) == 2  # 4 writes of 300 kB pass 1 MiB
    assert all(p.stat().st_size < (1 << 20) + 400_000 for p in paths)
    assert all_batches(tmp_path) == list(range(8))


def test_retention_by_size_deletes_the_oldest_segments_never_the_current(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock, segment_seconds=10.0, retention=Retention(max_bytes=3_000))
    incompressible = os.urandom(1_000)
    for n in range(12):
        w.write_encoded(b"".join(encode_batch([incompressible], [], {}, 0, float(n))))
        clock.now += 10.0  # one segment per write
    w.close()
    paths = list_segments(tmp_path)
    assert sum(p.stat().st_size for p in paths) <= 3_000 + 1_200
    assert all_batches(tmp_path)[-1] == 11  # the newest is kept
    assert w.segments_deleted == 12 - len(paths) > 0


def test_retention_by_age_applies_during_a_long_segment_too(tmp_path: Path) -> None:
    clock = Clock()
    for old in ("20200101T000000.000Z-0000000a-000000.cfrec",):
        (tmp_path / old).write_bytes(b"")
        os.utime(tmp_path / old, (clock.now - 8 * 86_400,) * 2)
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    w = writer(tmp_path, clock, retention=Retention(max_seconds=7 * 86_400.0))
    w.write_encoded(batch_bytes(0, clock))
    assert [p.name[:8] for p in list_segments(tmp_path)] == ["20251206"]
    assert unrelated.exists()  # only segment files are ever deleted
    w.close()


def test_every_cut_of_a_file_reads_up_to_its_last_complete_record(tmp_path: Path) -> None:
    """What kill -9 leaves: a file cut anywhere reads without error, every record before the
    cut comes back, and the rest is reported as a truncated tail."""
    clock = Clock()
    w = writer(tmp_path, clock)
    for n in range(6):
        w.write_encoded(batch_bytes(n, clock, size=3_000))
    w.close()
    [path] = list_segments(tmp_path)
    data = path.read_bytes()
    cut_path = tmp_path / "cut" / path.name
    cut_path.parent.mkdir()
    complete_before: list[int] = []
    for cut in [*range(0, len(data), 7), len(data)]:
        cut_path.write_bytes(data[:cut])
        tail = SegmentTail()
        got = batches_of(cut_path, tail)
        assert got == list(range(len(got)))
        assert len(got) >= len(complete_before)  # more file never means fewer records
        complete_before = got
        assert tail.error is None
        if cut == len(data):
            assert tail.truncated_bytes == 0
    assert complete_before == list(range(6))


def test_a_file_that_is_no_segment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "20251206T000000.000Z-0badcafe-000000.cfrec"
    path.write_bytes(b"not zstd at all")
    with pytest.raises(RecordingError, match="not a coinfeed recording segment"):
        list(read_segment(path))


def test_a_failed_write_is_cut_back_so_its_retry_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    w = writer(tmp_path, clock)
    w.write_encoded(batch_bytes(0, clock))
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments_module.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        w.write_encoded(batch_bytes(1, clock, size=5_000))
    monkeypatch.setattr(segments_module.os, "write", real_write)
    w.write_encoded(batch_bytes(1, clock, size=5_000))  # the writer's retry: the same bytes
    w.write_encoded(batch_bytes(2, clock))
    w.close()
    tail = SegmentTail()
    [path] = list_segments(tmp_path)
    assert batches_of(path, tail) == [0, 1, 2]
    assert tail.truncated_bytes == 0 and tail.error is None


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = writer(tmp_path, Clock())
    with pytest.raises(RecordingError, match="another coinfeed process"):
        writer(tmp_path, Clock())
    first.close()
    writer(tmp_path, Clock()).close()  # free again once the first is closed


def test_the_minimal_reader_in_the_docs_reads_a_segment(tmp_path: Path) -> None:
    """docs/recording.md's reader, run as written, prints every frame with its wall clock."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "recording.md").read_text()
    reader = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "reader.py"
    script.write_text(reader)
    clock = Clock()
    w = writer(tmp_path / "rec", clock)
    frames = [b'{"type":"trade","n":%d}' % n for n in range(5)]
    w.write_encoded(b"".join(encode_batch(frames[:2], [], {"answers": []}, 7, 1.0)))
    w.write_encoded(b"".join(encode_batch([*frames[2:], "text frame"], [], {}, 8, 2.0)))
    w.close()
    [path] = list_segments(tmp_path / "rec")
    done = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=True
    )
    expected = [f"7 {f.decode()}" for f in frames[:2]]
    expected += [f"8 {f.decode()}" for f in frames[2:]] + ["8 text frame"]
    assert done.stdout.splitlines() == expected
