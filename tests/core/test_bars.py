"""BarBuilder: exact bars from trades, emitted on time, revised by late trades and gap outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coinfeed.core.bars import (
    RETAINED_PER_SERIES,
    REVISION_WINDOW,
    BarBuilder,
    parse_period,
)
from coinfeed.core.events import BarEvent, Event, GapEvent, GapStatus, TradeEvent
from coinfeed.core.protocol import TimestampReader

SYMBOL = "BITSTAMP_SPOT_BTC_USD"
T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC).timestamp()  # a whole minute


def at(offset: float) -> str:
    """CoinAPI text for T0 + offset seconds (7 fractional digits)."""
    moment = datetime.fromtimestamp(T0 + offset, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def trade(
    offset: float, price: str, size: str = "1", uuid: str = "", source: str = "ws"
) -> TradeEvent:
    return TradeEvent(
        symbol_id=SYMBOL, sequence=None, time_exchange=at(offset), time_coinapi=at(offset),
        uuid=uuid or f"u{offset}-{price}-{size}", price=Decimal(price), size=Decimal(size),
        taker_side="BUY", source="ws" if source == "ws" else "rest", received_at="r",
    )  # fmt: skip


def gap(gap_id: str, status: GapStatus, start: float, end: float) -> GapEvent:
    return GapEvent(
        data_type="trade", symbol_id=SYMBOL, reason="sequence", missing=1, recovery="backfill",
        status=status, received_at="r", id=gap_id, window_start=at(start), window_end=at(end),
    )  # fmt: skip


def builder(*periods: str, grace: float = 2.0) -> BarBuilder:
    bars = BarBuilder(tuple(parse_period(p) for p in periods), grace=grace)
    bars.went_live(datetime.fromtimestamp(T0 - 3600, UTC))
    return bars


def emitted(bars: BarBuilder, now_offset: float) -> list[BarEvent]:
    out: list[Event] = []
    bars.emit_due(T0 + now_offset, "r", out)
    return [event for event in out if isinstance(event, BarEvent)]


def test_a_bar_holds_the_exact_ohlcv_of_its_period_and_leaves_size_zero_markers_out() -> None:
    bars = builder("1MIN")
    bars.observe(
        [
            trade(1.5, "100.10", "0.5"),
            trade(20, "101.000000000", "0.25"),
            trade(30, "99.5", "0"),  # a marker, not a trade
            trade(40, "99.90", "1.125"),
            trade(59.999999, "100.00", "0.000000001"),
            trade(60, "200", "9"),  # the next period
        ]
    )
    (bar,) = emitted(bars, 62)
    assert (bar.open, bar.high, bar.low, bar.close) == (
        Decimal("100.10"), Decimal("101.000000000"), Decimal("99.90"), Decimal("100.00"),
    )  # fmt: skip
    assert bar.volume == Decimal("1.875000001") and str(bar.volume) == "1.875000001"
    assert bar.trades_count == 4
    assert (bar.time_period_start, bar.time_period_end) == (at(0), at(60))
    assert (bar.time_open, bar.time_close) == (at(1.5), at(59.999999))
    assert (bar.revision, bar.complete, bar.period_id) == (0, True, "1MIN")


def test_a_bar_is_emitted_once_its_period_ended_plus_the_grace() -> None:
    bars = builder("1SEC", grace=2.0)
    bars.observe([trade(0.5, "1")])
    assert bars.next_due == T0 + 3.0
    assert emitted(bars, 2.9) == []
    assert [b.time_period_start for b in emitted(bars, 3.0)] == [at(0)]
    assert emitted(bars, 10) == []  # once


def test_open_and_close_follow_exchange_time_not_arrival() -> None:
    bars = builder("1MIN")
    bars.observe([trade(30, "2"), trade(10, "1"), trade(50, "3"), trade(40, "9")])
    (bar,) = emitted(bars, 62)
    assert (bar.open, bar.close, bar.high) == (Decimal(1), Decimal(3), Decimal(9))


def test_a_late_trade_revises_the_bar_and_the_highest_revision_is_exact() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "5"), trade(20, "6")])
    (first,) = emitted(bars, 62)
    bars.observe([trade(5, "4", "2", source="rest")])  # a backfill, after the bar went out
    (second,) = emitted(bars, 63)
    assert (second.revision, second.open, second.low, second.volume, second.trades_count) == (
        1, Decimal(4), Decimal(4), Decimal(4), 3,
    )  # fmt: skip
    assert first.revision == 0 and first.trades_count == 2


def test_a_pending_gap_makes_the_bar_incomplete_until_it_is_recovered() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "5"), gap("g1", "pending", 10, 30), trade(30, "6")])
    (first,) = emitted(bars, 62)
    assert first.complete is False
    bars.observe([trade(20, "7", source="rest"), gap("g1", "recovered", 10, 30)])
    (second,) = emitted(bars, 63)
    assert (second.revision, second.complete, second.trades_count) == (1, True, 3)


def test_an_unrecovered_gap_found_after_the_bar_went_out_re_emits_it_incomplete() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "5"), trade(50, "6")])
    (first,) = emitted(bars, 62)
    assert first.complete is True
    bars.observe([gap("g2", "unrecovered", 50, 70)])
    (second,) = emitted(bars, 80)
    assert (second.revision, second.complete) == (1, False)
    bars.observe([trade(61, "1")])  # the next period overlaps the unrecovered window too
    assert [b.complete for b in emitted(bars, 130)] == [False]


def test_a_gap_outcome_that_changes_nothing_emits_nothing() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "5")])
    emitted(bars, 62)
    bars.observe([gap("g3", "recovered", 100, 110)])  # another period
    assert emitted(bars, 120) == []


def test_periods_before_coinfeed_had_every_trade_are_incomplete() -> None:
    bars = BarBuilder((parse_period("1MIN"),), covered_from={SYMBOL: T0 + 30})
    bars.observe([trade(40, "1"), trade(70, "2")])
    assert [b.complete for b in emitted(bars, 200)] == [False, True]
    live = BarBuilder((parse_period("1MIN"),))
    live.went_live(datetime.fromtimestamp(T0 + 30, UTC))
    live.observe([trade(40, "1")])
    assert [b.complete for b in emitted(live, 200)] == [False]


def test_several_periods_each_get_their_bar() -> None:
    bars = builder("1SEC", "1MIN")
    bars.observe([trade(0.1, "1"), trade(1.2, "2"), trade(1.7, "3")])
    out = emitted(bars, 100)
    by_period = {(b.period_id, b.time_period_start): b.trades_count for b in out}
    assert by_period == {("1SEC", at(0)): 1, ("1SEC", at(1)): 2, ("1MIN", at(0)): 3}


def test_a_trade_older_than_the_revision_window_is_counted_and_changes_nothing() -> None:
    bars = builder("1SEC")
    bars.observe([trade(0.5, "1")])
    emitted(bars, 3)
    emitted(bars, REVISION_WINDOW + 10)  # the bar is forgotten
    assert bars.retained() == 0
    bars.observe([trade(0.7, "2", source="rest")])
    assert emitted(bars, REVISION_WINDOW + 20) == []
    assert bars.late_trades == 1


def test_memory_is_capped_per_series_even_while_a_long_gap_is_pending() -> None:
    bars = builder("1SEC", grace=0)
    bars.observe(
        [gap("long", "pending", 0, 10 * RETAINED_PER_SERIES)]
    )  # keeps bars past the window
    for second in range(RETAINED_PER_SERIES + 100):
        bars.observe([trade(second + 0.5, "1")])
        assert len(emitted(bars, second + 1)) == 1
        assert bars.retained() <= RETAINED_PER_SERIES + 1


def test_shutdown_emits_what_is_open_and_only_a_period_not_over_is_incomplete() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "5"), trade(70, "6")])
    out: list[Event] = []
    bars.emit_all(T0 + 61, "r", out)  # the first minute ended, its grace had not
    assert [(b.time_period_start, b.complete) for b in out if isinstance(b, BarEvent)] == [
        (at(0), True), (at(60), False),
    ]  # fmt: skip


def test_an_offset_time_never_poisons_the_minute_cache() -> None:
    parser = TimestampReader()
    assert parser.second("2026-12-06T12:00:30+01:00") == int(T0) + 30 - 3600
    assert parser.second(at(30)) == int(T0) + 30


@pytest.mark.parametrize(
    ("text", "period_id", "seconds"),
    [
        ("1sec", "1SEC", 1),
        ("15MIN", "15MIN", 900),
        ("01HRS", "1HRS", 3600),
        ("1DAY", "1DAY", 86_400),
    ],
)
def test_period_ids(text: str, period_id: str, seconds: int) -> None:
    period = parse_period(text)
    assert (period.period_id, period.seconds) == (period_id, seconds)


@pytest.mark.parametrize(
    "text", ["7MIN", "8SEC", "12MIN", "1MTH", "2DAY", "SEC", "0SEC", "-1SEC", "1 MIN"]
)
def test_bad_period_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"period|divide"):
        parse_period(text)


def test_a_hostile_size_never_raises_and_the_bar_still_goes_out() -> None:
    bars = builder("1MIN")
    bars.observe([trade(10, "1", "1E+400"), trade(20, "1", "0.000000001")])
    (bar,) = emitted(bars, 62)
    assert bar.trades_count == 2 and bar.volume > Decimal("1E+399")
