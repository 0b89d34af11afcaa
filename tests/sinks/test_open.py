"""Opening sinks: unusable specs are clear errors and leave nothing open."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from coinfeed.sinks import SinkSpecError, open_sinks


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("spec", ["jsonl:/nonexistent/dir/x.jsonl", "sqlite:/nonexistent/dir/x.db"])
def test_a_sink_that_cannot_be_opened_names_itself(spec: str) -> None:
    with pytest.raises(SinkSpecError, match="cannot be opened") as error:
        open_sinks([spec])
    assert spec in str(error.value)


def test_when_one_sink_fails_the_ones_already_opened_are_closed(tmp_path: Path) -> None:
    gc.collect()
    before = open_fds()
    specs = [f"jsonl:{tmp_path / 'a.jsonl'}", f"sqlite:{tmp_path / 'b.db'}", "jsonl:/nonexistent/c"]
    with pytest.raises(SinkSpecError):
        open_sinks(specs)
    assert open_fds() == before
