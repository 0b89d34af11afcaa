"""scripts/bench_growth.py (``bench.py --growth``): its streams are what they claim to be, and a
run measures the steady state of a real ``coinfeed run``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from coinfeed.core.decoding import FrameDecoder, InvalidFrame
from coinfeed.core.protocol import BookUpdate, Quote, Trade
from tests.scripts.scriptrun import load_script


def load_growth() -> ModuleType:
    return load_script("bench_growth.py", "bench_growth")


def decoded(path: Path) -> list[object]:
    decoder = FrameDecoder()
    return [decoder.decode(line) for line in path.read_bytes().splitlines()]


def test_a_growth_stream_has_its_symbols_depth_and_unbroken_sequences(tmp_path: Path) -> None:
    growth = load_growth()
    case = growth.Case("symbols", "test", symbols=100, depth=50, frames=3_000)
    stream = growth.generate(case, tmp_path / "stream.jsonl")
    messages = decoded(tmp_path / "stream.jsonl")
    assert not [m for m in messages if isinstance(m, InvalidFrame)]
    assert stream["frames"] == len(messages) == 3_100
    assert len(set(stream["symbols"])) == 100
    snapshots = [m for m in messages if isinstance(m, BookUpdate) and m.is_snapshot]
    assert len(snapshots) == stream["snapshot_frames"] == 100
    assert {(len(s.asks), len(s.bids)) for s in snapshots} == {(50, 50)}
    seen: Counter[tuple[str, str]] = Counter()
    for message in messages:
        assert isinstance(message, BookUpdate | Trade | Quote)
        key = (type(message).__name__, message.symbol_id)
        seen[key] += 1
        assert message.sequence == seen[key], "a gap would send coinfeed to REST recovery"
    kinds = Counter(type(m).__name__ for m in messages[100:])
    assert 0.5 < kinds["BookUpdate"] / 3_000 < 0.6 and 0.25 < kinds["Trade"] / 3_000 < 0.35


def test_the_frame_size_series_is_books_only_of_about_200_b_and_20_kb(tmp_path: Path) -> None:
    growth = load_growth()
    small, large = [c for c in growth.default_cases(0.01) if c.series == "frame size"]
    sizes = []
    for case in (small, large):
        stream = growth.generate(case, tmp_path / f"{case.label}.jsonl")
        updates = decoded(tmp_path / f"{case.label}.jsonl")[stream["snapshot_frames"] :]
        assert all(isinstance(m, BookUpdate) and not m.is_snapshot for m in updates)
        lines = (tmp_path / f"{case.label}.jsonl").read_bytes().splitlines()
        sizes.append(sum(map(len, lines[stream["snapshot_frames"] :])) / len(updates))
    assert 150 < sizes[0] < 260 and 15_000 < sizes[1] < 25_000


@pytest.mark.slow  # a coinfeed run and a stream server
def test_a_growth_run_times_the_steady_state_of_coinfeed_run(tmp_path: Path) -> None:
    growth = load_growth()
    case = growth.Case("symbols", "test", symbols=1_000, frames=40_000)
    stream = growth.generate(case, tmp_path / "stream.jsonl")
    run = growth.run_case(stream, tmp_path)
    assert run["frames_per_s"] > 0 and run["seconds"] > 0
    assert run["us_per_frame"] == pytest.approx(1e6 / run["frames_per_s"])
    assert run["rss_bytes"] > 20 * 2**20  # a Python process holding 1,000 books
    # The generated config file named every symbol (too many for one argument).
    assert json.loads((tmp_path / "growth.toml").read_text().split("=", 1)[1]) == stream["symbols"]
