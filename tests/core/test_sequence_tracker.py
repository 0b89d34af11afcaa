"""SequenceTracker: per (type, symbol) verdicts, resets, and agreement with a plain reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coinfeed.core.sequence import (
    OBSERVED_BEHIND,
    OBSERVED_FIRST,
    OBSERVED_NEXT,
    Observation,
    SequenceTracker,
    TrackerStatistics,
    Verdict,
)


def test_first_next_and_gap_with_missing_count() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("trade", "A", 10).verdict is Verdict.FIRST
    assert tracker.observe("trade", "A", 11).verdict is Verdict.NEXT
    gap = tracker.observe("trade", "A", 15)
    assert gap == Observation(Verdict.GAP, missing=3)
    assert tracker.observe("trade", "A", 16).verdict is Verdict.NEXT
    assert tracker.last("trade", "A") == 16


def test_duplicate_and_older_numbers_are_stale_and_do_not_move_the_tracker_back() -> None:
    tracker = SequenceTracker()
    tracker.observe("book", "A", 5)
    assert tracker.observe("book", "A", 5).verdict is Verdict.BEHIND
    assert tracker.observe("book", "A", 2).verdict is Verdict.BEHIND
    assert tracker.last("book", "A") == 5
    assert tracker.observe("book", "A", 6).verdict is Verdict.NEXT


def test_streams_are_independent_per_type_and_symbol() -> None:
    tracker = SequenceTracker()
    tracker.observe("trade", "A", 1)
    assert tracker.observe("quote", "A", 100).verdict is Verdict.FIRST
    assert tracker.observe("trade", "B", 100).verdict is Verdict.FIRST
    assert tracker.observe("trade", "A", 2).verdict is Verdict.NEXT


def test_common_verdicts_are_shared_constants() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("trade", "A", 1) is OBSERVED_FIRST
    assert tracker.observe("trade", "A", 2) is OBSERVED_NEXT
    assert tracker.observe("trade", "A", 2) is OBSERVED_BEHIND


def test_reset_forgets_every_stream_for_a_new_connection() -> None:
    tracker = SequenceTracker()
    tracker.observe("trade", "A", 500)
    tracker.observe("book", "B", 700)
    tracker.reset()
    assert tracker.last("trade", "A") is None
    assert tracker.observe("trade", "A", 1).verdict is Verdict.FIRST
    assert tracker.observe("book", "B", 1).verdict is Verdict.FIRST


def test_forget_symbol_restarts_every_type_of_that_symbol_only() -> None:
    tracker = SequenceTracker()
    for data_type in ("trade", "quote", "book"):
        tracker.observe(data_type, "A", 50)
        tracker.observe(data_type, "B", 50)
    tracker.forget_symbol("A")
    for data_type in ("trade", "quote", "book"):
        assert tracker.observe(data_type, "A", 1).verdict is Verdict.FIRST  # not BEHIND
        assert tracker.observe(data_type, "B", 51).verdict is Verdict.NEXT


def test_restart_stream_accepts_a_lower_number_as_the_new_base() -> None:
    tracker = SequenceTracker()
    tracker.observe("book", "A", 90)
    tracker.restart_stream("book", "A", 3)
    assert tracker.observe("book", "A", 4).verdict is Verdict.NEXT


def test_statistics_count_streams_gaps_missing_and_stale() -> None:
    tracker = SequenceTracker()
    tracker.observe("trade", "A", 1)
    tracker.observe("trade", "A", 5)  # 3 missing
    tracker.observe("trade", "A", 9)  # 3 missing
    tracker.observe("trade", "A", 9)  # stale
    tracker.observe("quote", "A", 1)
    assert tracker.statistics() == TrackerStatistics(streams=2, gaps=2, missing_total=6, behind=1)
    tracker.reset()
    assert tracker.statistics() == TrackerStatistics(streams=0, gaps=2, missing_total=6, behind=1)


TYPES = ["trade", "quote", "book"]
SYMBOLS = ["A", "B", "C"]
# (operation, data_type, symbol_id, step): step is added to the stream's last number, so most
# observations are +1 with some gaps (2..5) and repeats or older numbers (-3..0).
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("observe"), st.sampled_from(TYPES), st.sampled_from(SYMBOLS), st.integers(-3, 5)
        ),
        st.tuples(st.just("reset"), st.just(""), st.just(""), st.just(0)),
        st.tuples(st.just("forget"), st.just(""), st.sampled_from(SYMBOLS), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(0, 1000))
def test_tracker_agrees_with_a_plain_dict_reference(
    ops: list[tuple[str, str, str, int]], start: int
) -> None:
    tracker = SequenceTracker()
    last: dict[tuple[str, str], int] = {}
    gaps = missing_total = stale = 0
    for operation, data_type, symbol_id, step in ops:
        if operation == "reset":
            tracker.reset()
            last.clear()
        elif operation == "forget":
            tracker.forget_symbol(symbol_id)
            last = {key: value for key, value in last.items() if key[1] != symbol_id}
        else:
            key = (data_type, symbol_id)
            previous = last.get(key)
            sequence = start if previous is None else previous + step
            observation = tracker.observe(data_type, symbol_id, sequence)
            if previous is None:
                assert observation.verdict is Verdict.FIRST
                last[key] = sequence
            elif sequence == previous + 1:
                assert observation.verdict is Verdict.NEXT
                last[key] = sequence
            elif sequence <= previous:
                assert observation.verdict is Verdict.BEHIND
                stale += 1
            else:
                assert observation == Observation(Verdict.GAP, sequence - previous - 1)
                gaps += 1
                missing_total += sequence - previous - 1
                last[key] = sequence
        for data_type_ in TYPES:
            for symbol_id_ in SYMBOLS:
                assert tracker.last(data_type_, symbol_id_) == last.get((data_type_, symbol_id_))
    assert tracker.statistics() == TrackerStatistics(len(last), gaps, missing_total, stale)
