"""The restart checkpoint file and when a view of the ledger may be written to it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from loguru import logger

from coinfeed.checkpoint import Checkpointer, CheckpointFile
from coinfeed.config import ConfigError, Settings
from coinfeed.service import Service

SYM = "BITSTAMP_SPOT_BTC_USD"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_a_checkpoint_round_trips_to_the_microsecond(tmp_path: Path) -> None:
    file = CheckpointFile.open(str(tmp_path / "state"))
    try:
        assert file.load() == {}
        file.write({SYM: T0 + timedelta(microseconds=7)})
        assert file.load() == {SYM: T0 + timedelta(microseconds=7)}
        assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
            "checkpoint.json",
            "checkpoint.lock",
        ]
    finally:
        file.close()


def test_a_second_process_on_the_same_state_dir_is_refused(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    first = CheckpointFile.open(str(tmp_path))
    try:
        with pytest.raises(ConfigError) as refused:
            Service.build(make_settings(state_dir=str(tmp_path)), handle_signals=False)
        assert refused.value.setting == "state_dir"
        assert "in use by another coinfeed process" in str(refused.value)
    finally:
        first.close()
    CheckpointFile.open(str(tmp_path)).close()  # free again once the first one is gone


def test_a_state_dir_that_cannot_be_created_names_the_setting(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as refused:
        Service.build(make_settings(state_dir=str(tmp_path / "file" / "state")))
    assert refused.value.setting == "state_dir" and "cannot use" in str(refused.value)


def test_an_unreadable_checkpoint_is_reported_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_text('{"format": 1, "symbols": {"X": "yesterday"')
    logged: list[str] = []
    handler = logger.add(logged.append, format="{level} {message}")
    file = CheckpointFile.open(str(tmp_path))
    try:
        assert file.load() == {}
    finally:
        file.close()
        logger.remove(handler)
    assert [line for line in logged if line.startswith("ERROR checkpoint unreadable")]


async def test_a_view_is_written_only_once_every_sink_wrote_its_batch(tmp_path: Path) -> None:
    file = CheckpointFile.open(str(tmp_path))
    views = iter([{SYM: T0}, {SYM: T0 + timedelta(seconds=1)}, {SYM: T0 + timedelta(seconds=2)}])
    batches = {"sent": 0, "written": 0}
    checkpointer = Checkpointer(
        file,
        complete_through=lambda: next(views),
        sent_batches=lambda: batches["sent"],
        written_batches=lambda: batches["written"],
    )
    batches["sent"] = 3  # the view after batch 3 ...
    checkpointer.note()
    await checkpointer._write_durable()
    assert file.load() == {}  # ... is not written while a sink has written only up to 2
    batches["sent"], batches["written"] = 5, 3
    checkpointer.note()
    await checkpointer._write_durable()
    assert file.load() == {SYM: T0}
    batches["written"] = 5
    await checkpointer.finish(processor_clean=True)  # the newest view, written everywhere
    reopened = CheckpointFile.open(str(tmp_path))
    try:
        assert reopened.load() == {SYM: T0 + timedelta(seconds=2)}
    finally:
        reopened.close()
    assert checkpointer.writes == 2
    await trio.lowlevel.checkpoint()


async def test_after_a_processor_failure_the_last_view_is_not_trusted(tmp_path: Path) -> None:
    file = CheckpointFile.open(str(tmp_path))
    checkpointer = Checkpointer(
        file,
        complete_through=lambda: {SYM: T0 + timedelta(hours=1)},  # counts unsent events
        sent_batches=lambda: 1,
        written_batches=lambda: 1,
    )
    await checkpointer.finish(processor_clean=False)
    reopened = CheckpointFile.open(str(tmp_path))
    try:
        assert reopened.load() == {}
    finally:
        reopened.close()


async def test_symbols_this_run_does_not_subscribe_keep_their_checkpoint(tmp_path: Path) -> None:
    other = "COINBASE_SPOT_ETH_USD"
    file = CheckpointFile.open(str(tmp_path))
    checkpointer = Checkpointer(
        file,
        complete_through=lambda: {SYM: T0},
        sent_batches=lambda: 0,
        written_batches=lambda: 0,
        carry={other: T0 - timedelta(days=1)},
    )
    await checkpointer.finish(processor_clean=True)
    reopened = CheckpointFile.open(str(tmp_path))
    try:
        assert reopened.load() == {SYM: T0, other: T0 - timedelta(days=1)}
    finally:
        reopened.close()


def test_a_failed_write_keeps_the_last_checkpoint_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = CheckpointFile.open(str(tmp_path))
    try:
        file.write({SYM: T0})
        real_fsync = os.fsync

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(OSError):
            file.write({SYM: T0 + timedelta(seconds=1)})
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert file.load() == {SYM: T0}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.lock"]
    finally:
        file.close()
