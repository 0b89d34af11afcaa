"""TradeDedup: case-insensitive, bounded FIFO window; malformed ids never raise."""

from __future__ import annotations

import random
import string
import uuid
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfeed.core.dedup import TradeDedup

UPPER = "770C7A3B-7258-4441-8182-83740F3E2457"


def test_same_uuid_in_any_case_is_a_duplicate() -> None:
    dedup = TradeDedup(10)
    assert dedup.first_sighting(UPPER) is True
    assert dedup.first_sighting(UPPER.lower()) is False
    assert dedup.first_sighting("770c7A3B-7258-4441-8182-83740f3E2457") is False
    assert len(dedup) == 1


def test_oldest_uuid_is_forgotten_when_the_window_is_full() -> None:
    dedup = TradeDedup(3)
    ids = [str(uuid.UUID(int=i)) for i in range(5)]
    assert all(dedup.first_sighting(u) for u in ids)  # 0 and 1 were evicted
    assert len(dedup) == dedup.capacity == 3
    assert [dedup.first_sighting(u) for u in ids[2:]] == [False, False, False]
    assert dedup.first_sighting(ids[0]) is True  # forgotten, so new again


def test_seeing_a_uuid_again_does_not_extend_its_stay() -> None:
    dedup = TradeDedup(2)
    dedup.first_sighting("a")
    dedup.first_sighting("b")
    assert dedup.first_sighting("a") is False
    dedup.first_sighting("c")  # evicts "a", the oldest first sighting
    assert dedup.first_sighting("b") is False
    assert dedup.first_sighting("a") is True


def test_hyphens_do_not_matter_as_for_uuid_uuid() -> None:
    dedup = TradeDedup(10)
    assert dedup.first_sighting(UPPER) is True
    assert dedup.first_sighting(uuid.UUID(UPPER).hex) is False
    assert dedup.first_sighting("770C7A3B7258-4441-8182-83740F3E2457-") is False


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("0x000000-0000-0000-0000-00000000000f", "00000000-0000-0000-0000-00000000000f"),
        ("00000000-0000-0000-0000-0000000000_1", "00000000-0000-0000-0000-000000000001"),
        ("+0000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"),
        (" 0000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"),
        ("\u0661" + "0" * 31, "1" + "0" * 31),  # an Arabic-Indic digit: int() would take it
        ("770C7A3B-7258-4441-8182-83740F3E245Z", "not a uuid"),
        ("", " "),
    ],
)
def test_malformed_ids_never_raise_and_never_collide_with_others(first: str, second: str) -> None:
    dedup = TradeDedup(10)
    assert dedup.first_sighting(first) is True
    assert dedup.first_sighting(second) is True
    assert dedup.first_sighting(first.upper()) is False


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        TradeDedup(0)


def flip_case(text: str, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(c.swapcase() if c.isascii() and rng.random() < 0.5 else c for c in text)


def reference_key(text: str) -> int | str:
    """What makes two ids the same: their uuid.UUID value, else their lower-cased text."""
    digits = text.replace("-", "")
    if len(digits) == 32 and all(c in string.hexdigits for c in digits):
        return uuid.UUID(hex=digits).int
    return text.lower()


ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).replace("-", "")),
    st.uuids().map(lambda u: "-" + u.hex[:7] + "-" + u.hex[7:]),  # odd hyphens: same uuid
    st.text(max_size=40),
    st.text("0123456789abcdefx-_+ ", min_size=30, max_size=38),
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(ids, min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 19), st.integers(0, 2**32)), max_size=80),
)
def test_dedup_matches_a_fifo_window_of_reference_keys(
    capacity: int, pool: list[str], sightings: list[tuple[int, int]]
) -> None:
    dedup = TradeDedup(capacity)
    window: deque[int | str] = deque()
    for index, seed in sightings:
        text = flip_case(pool[index % len(pool)], seed)
        key = reference_key(text)
        expected_new = key not in window
        assert dedup.first_sighting(text) is expected_new
        if expected_new:
            window.append(key)
            if len(window) > capacity:
                window.popleft()
        assert len(dedup) == len(window) <= capacity
