"""scripts/bench_core.py with small settings: every figure is measured, the parsers agree."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.scripts.scriptrun import load_script, run_script

pytestmark = pytest.mark.slow  # runs a script end to end


def test_bench_core_reports_the_core_and_the_three_websocket_parsers() -> None:
    done = run_script(
        "bench_core.py", "--frames", "3000", "--rounds", "1", "--amounts-compare", "--json"
    )
    report = json.loads(done.stdout)
    assert report["frames"] == 3000
    assert report["decode_only_frames_per_s"] > 0
    assert report["full_core_frames_per_s"] > 0
    # Each parser must find every frame of the mix, or the script fails instead of reporting.
    assert set(report["ws_framing_frames_per_s"]) == {"coinfeed", "websockets", "wsproto"}
    assert all(rate > 0 for rate in report["ws_framing_frames_per_s"].values())
    # The hot path with Decimal amounts and with raw JSON text; both wrote the same lines.
    amounts = report["hot_path_us_per_frame_by_amounts"]
    assert set(amounts) == {"decimal", "raw_text"} and all(us > 0 for us in amounts.values())


def test_raw_text_levels_are_keyed_and_tested_for_zero_as_decimals_are() -> None:
    bench = load_script("bench_core.py", "bench_core_amounts")
    raw = msgspec.Raw
    assert len({bench._raw_key(raw(t)) for t in (b"1.50", b"1.5", b"15E-1", b"1.5e0")}) == 1
    assert len({bench._raw_key(raw(t)) for t in (b"100", b"100.0", b"1E2", b"1e+2")}) == 1
    assert bench._raw_key(raw(b"10")) != bench._raw_key(raw(b"1"))
    for text in (b"0", b"0.000", b"0E5", b"0e-3"):
        assert bench._raw_is_zero(raw(text)), text
    for text in (b"0.5", b"10", b"1e-8", b"0.0001"):
        assert not bench._raw_is_zero(raw(text)), text
    for text in (b"-1", b"-0", b'"1.5"', b"null"):
        assert not bench._raw_is_amount(raw(text)), text
    assert bench._raw_is_amount(raw(b"0")) and bench._raw_is_amount(raw(b"1e5"))


def test_amounts_compare_refuses_to_time_pipelines_that_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = load_script("bench_core.py", "bench_core_disagree")
    frames, _ = bench.build_frames(2000, seed=1)
    assert set(bench.amounts_compare(frames, 1)) == {"decimal", "raw_text"}
    # A raw pipeline that never deletes a level keeps other books than the Decimal one.
    monkeypatch.setattr(bench, "_raw_is_zero", lambda _raw: False)
    with pytest.raises(SystemExit, match="disagree"):
        bench.amounts_compare(frames, 1)
