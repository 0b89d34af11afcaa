"""Processor decisions on ordered batches (no sockets; recovery requests are inspected)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest
import trio
import trio.testing

from coinfeed.core.book import BookState
from coinfeed.core.controls import (
    ConnectionOpened,
    Resubscribed,
    ResyncFailed,
    TradesRecovered,
    TradeWindow,
)
from coinfeed.core.decoding import FrameDecoder
from coinfeed.core.dedup import TradeDedup
from coinfeed.core.events import BookEvent, Event, ExrateEvent, GapEvent, OhlcvEvent, TradeEvent
from coinfeed.core.protocol import BookUpdate, Exrate, Level, Ohlcv, Quote, Trade, encode
from coinfeed.core.rest_protocol import RestTrade
from coinfeed.framequeue import FrameQueue
from coinfeed.processor import Processor
from coinfeed.recovery import RecoveryScheduler
from coinfeed.status import ServiceStatus

SYM = "BITSTAMP_SPOT_BTC_USD"
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    moment = T0 + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def trade(seq: int, uuid: str, at: float, symbol: str = SYM) -> bytes:
    return encode(
        Trade(
            symbol_id=symbol,
            sequence=seq,
            time_exchange=ts(at),
            time_coinapi=ts(at),
            uuid=uuid,
            price=Decimal("100.10"),
            size=Decimal("0.5"),
            taker_side="SELL",
        )
    )


def rest_trade(uuid: str, at: float) -> RestTrade:
    """A trade as the REST history returns it, ``at`` seconds after T0."""
    return RestTrade(
        symbol_id=SYM, time_exchange=ts(at), time_coinapi=ts(at), uuid=uuid,
        price=Decimal("100.10"), size=Decimal("0.5"), taker_side="SELL",
    )  # fmt: skip


def book(seq: int, snapshot: bool, asks: list[tuple[str, str]]) -> bytes:
    return encode(
        BookUpdate(
            symbol_id=SYM,
            sequence=seq,
            time_exchange=ts(0),
            time_coinapi=ts(0),
            is_snapshot=snapshot,
            asks=[Level(Decimal(p), Decimal(s)) for p, s in asks],
            bids=[],
        )
    )


@attrs.define(eq=False)
class Harness:
    queue: FrameQueue
    processor: Processor
    recovery: RecoveryScheduler
    resubscribed: list[str]

    def feed(self, *items: object) -> list[Event]:
        for item in items:
            if isinstance(item, bytes | str):
                self.queue.put_frames_nowait(self.processor._connection_id or 1, [item])
            else:
                self.queue.put_control_nowait(item)
        batch, drops = self.queue.take_nowait()
        out: list[Event] = []
        self.processor.handle_batch(batch, drops, out, trio.current_time())
        return out

    def windows(self) -> list[TradeWindow]:
        return [w for ws in self.recovery._windows.values() for w in ws]


def harness(
    capacity: int = 100,
    types: tuple[str, ...] = ("trade", "book", "quote"),
    restart_from: dict[str, datetime] | None = None,
) -> Harness:
    queue = FrameQueue(capacity)
    asked: list[str] = []
    recovery = RecoveryScheduler(
        rest=None,  # type: ignore[arg-type]
        deliver=queue.put_control_nowait,
        resubscribe=asked.append,
        interim_books=False,
        max_attempts=3,
    )

    async def emit(_events: list[Event]) -> None:  # pragma: no cover - not awaited here
        pass

    processor = Processor(
        queue=queue,
        recovery=recovery,
        emit=emit,
        status=ServiceStatus(),
        symbols=frozenset({SYM}),
        types=frozenset(types),
        decoder=FrameDecoder(),
        dedup=TradeDedup(10_000),
        skew_margin=2.0,
        restart_from=restart_from or {},
        restart_backfill_max=timedelta(hours=1),
    )
    return Harness(queue, processor, recovery, asked)


def trades(events: list[Event]) -> list[TradeEvent]:
    return [e for e in events if isinstance(e, TradeEvent)]


def gaps(events: list[Event]) -> list[GapEvent]:
    return [e for e in events if isinstance(e, GapEvent)]


async def test_a_trade_seen_live_is_not_delivered_again_by_backfill() -> None:
    h = harness()
    out = h.feed(ConnectionOpened(1, T0), trade(1, "AA-1", 0), trade(3, "AA-3", 2))
    assert [t.uuid for t in trades(out)] == ["aa-1", "aa-3"]
    [window] = h.windows()
    assert (window.start, window.end, window.expected_missing) == (
        T0,
        T0 + timedelta(seconds=2, microseconds=1),
        1,
    )
    rest = [rest_trade(u, s) for s, u in ((0, "aa-1"), (1, "aa-2"), (2, "aa-3"))]
    out = h.feed(TradesRecovered(window, rest))
    delivered = trades(out)
    assert [(t.uuid, t.source, t.sequence) for t in delivered] == [("aa-2", "rest", None)]
    assert [(g.status, g.recovery) for g in gaps(out)] == [("recovered", "backfill")]


async def test_window_end_includes_a_trade_stamped_with_100ns_precision() -> None:
    h = harness()
    late = trade(3, "c", 2).replace(ts(2).encode(), b"2026-11-28T12:00:02.0000009Z")
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 0), late)
    [window] = h.windows()
    # 12:00:02.0000009 must lie inside [start, end]: microseconds would truncate it to .000000.
    assert window.end > T0 + timedelta(seconds=2)


async def test_incomplete_backfill_is_retried_then_reported_unrecovered() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 0), trade(5, "e", 4))
    [window] = h.windows()
    h.recovery._windows.clear()
    out = h.feed(TradesRecovered(window, []))
    assert gaps(out) == []  # still pending: asked again
    [retry] = h.windows()
    assert retry.attempt == 1 and retry.expected_missing == 3
    h.recovery._windows.clear()
    h.feed(TradesRecovered(retry, []))
    [last] = h.windows()
    h.recovery._windows.clear()
    out = h.feed(TradesRecovered(last, []))
    assert [(g.status, g.missing) for g in gaps(out)] == [("unrecovered", 3)]


async def test_old_frames_in_flight_after_resubscribe_then_restart_lose_nothing() -> None:
    h = harness()
    h.feed(
        ConnectionOpened(1, T0),
        trade(1, "a", 0),
        trade(2, "b", 1),
        book(1, True, [("10", "1")]),
        book(3, False, [("11", "1")]),
    )
    assert h.processor.books.get(SYM).state is BookState.OUT_OF_SYNC  # type: ignore[union-attr]
    assert h.resubscribed == [SYM]
    at = T0 + timedelta(seconds=2)
    out = h.feed(
        Resubscribed(1, frozenset({SYM}), at),
        trade(3, "c", 2),  # sent before the server saw the unsubscribe
        trade(1, "d", 5),  # the restarted stream
        trade(2, "f", 6),
        book(1, True, [("12", "2")]),
        book(2, False, [("13", "1")]),
    )
    assert [t.uuid for t in trades(out)] == ["c", "d", "f"]
    assert h.processor.counters.behind_sequence == 0
    book_state = h.processor.books.get(SYM)
    assert book_state is not None and book_state.state is BookState.SYNCED
    assert book_state.top(5)[0] == [(Decimal("12"), Decimal("2")), (Decimal("13"), Decimal("1"))]
    statuses = [(g.data_type, g.status) for g in gaps(out)]
    assert ("book", "recovered") in statuses
    # The trades of the unsubscribed moment are backfilled up to the subscribe + margin.
    [window] = h.windows()
    assert window.end == at + timedelta(seconds=2)
    assert window.start == T0 + timedelta(seconds=1)


async def test_dropped_trades_are_repaired_without_waiting_for_a_successor() -> None:
    h = harness(capacity=2)
    h.feed(ConnectionOpened(1, T0))
    h.queue.put_frames_nowait(
        1, [trade(1, "a", 0), trade(2, "b", 1), trade(3, "c", 2), trade(4, "d", 3)]
    )
    batch, drops = h.queue.take_nowait()
    out: list[Event] = []
    h.processor.handle_batch(batch, drops, out, trio.current_time())
    assert [t.uuid for t in trades(out)] == ["a", "b"]
    assert [(g.status, g.missing) for g in gaps(out)] == [("pending", 2)]
    [window] = h.windows()
    assert (window.start, window.end) == (
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=3, microseconds=1),
    )
    # The successor is in sequence: no second gap, no second request.
    out = h.feed(trade(5, "e", 4))
    assert gaps(out) == [] and len(h.windows()) == 1


async def test_reconnect_backfills_each_trade_stream_and_resyncs_books() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), trade(7, "a", 1), book(1, True, [("10", "1")]))
    reopened = T0 + timedelta(seconds=30)
    out = h.feed(ConnectionOpened(2, reopened))
    assert sorted((g.data_type, g.reason, g.status) for g in gaps(out)) == [
        ("book", "reconnect", "pending"),
        ("trade", "reconnect", "pending"),
    ]
    [window] = h.windows()
    assert (window.start, window.end) == (
        T0 + timedelta(seconds=1),
        reopened + timedelta(seconds=2),
    )
    # Sequences restart on the new connection: 1 is not stale.
    out = h.feed(trade(1, "b", 31), book(1, True, [("11", "1")]))
    assert [t.uuid for t in trades(out)] == ["b"]
    assert [(g.data_type, g.status) for g in gaps(out)] == [("book", "recovered")]


async def test_a_book_whose_resync_gave_up_asks_again_and_not_on_every_update(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), book(1, True, [("10", "1")]))
    out = h.feed(book(3, False, [("10", "2")]))  # 2 is missing: stale, resync asked
    assert [(g.data_type, g.status) for g in gaps(out)] == [("book", "pending")]
    assert h.resubscribed == [SYM]
    out = h.feed(ResyncFailed(SYM))  # no snapshot after every attempt
    assert [(g.data_type, g.status) for g in gaps(out)] == [("book", "unrecovered")]
    h.recovery.book_synced(SYM)  # (the scheduler forgot it when it gave up)
    # The next update finds a stale book with nothing in flight: it asks again, once.
    out = h.feed(book(4, False, [("10", "3")]), book(5, False, [("10", "4")]))
    assert [(g.data_type, g.status) for g in gaps(out)] == [("book", "pending")]
    assert h.resubscribed == [SYM, SYM]
    # Still stale, and the new attempt gave up too: not again before resync_timeout...
    h.feed(ResyncFailed(SYM))
    h.recovery.book_synced(SYM)
    assert gaps(h.feed(book(6, False, [("10", "5")]))) == []
    # ...then once more; a snapshot ends it.
    await trio.sleep(h.recovery.resync_timeout)
    assert [g.status for g in gaps(h.feed(book(7, False, [("10", "6")])))] == ["pending"]
    out = h.feed(book(1, True, [("10", "7")]))
    assert [(g.data_type, g.status) for g in gaps(out)] == [("book", "recovered")]
    assert h.processor.books.get(SYM).state is BookState.SYNCED  # type: ignore[union-attr]


async def test_book_updates_before_a_snapshot_are_not_applied() -> None:
    h = harness()
    out = h.feed(ConnectionOpened(1, T0), book(1, False, [("10", "1")]))
    assert [e for e in out if isinstance(e, BookEvent)] == []
    assert h.processor.counters.unsynced_updates == 1


async def test_prefix_matched_symbols_and_unsubscribed_types_are_not_delivered() -> None:
    h = harness(types=("book",))
    out = h.feed(ConnectionOpened(1, T0), trade(1, "a", 0), trade(1, "x", 0, symbol=SYM + "T"))
    assert out == []
    assert h.processor.counters.unrequested == 2
    h = harness(types=("trade",))
    quote = encode(
        Quote(
            symbol_id=SYM, sequence=1, time_exchange=ts(0), time_coinapi=ts(0),
            ask_price=Decimal("2"), ask_size=Decimal("1"), bid_price=Decimal("1"),
            bid_size=Decimal("1"),
        )
    )  # fmt: skip
    prefixed_book = book(1, True, [("10", "1")]).replace(SYM.encode(), (SYM + "T").encode())
    out = h.feed(ConnectionOpened(1, T0), quote, book(1, True, [("10", "1")]), prefixed_book)
    assert out == []
    assert h.processor.counters.unrequested == 3
    # Counted as received all the same: they came over the wire.
    assert h.processor.counters.received == {"quote": 1, "book": 2}


async def test_invalid_frames_are_counted_by_reason_and_processing_goes_on() -> None:
    h = harness()
    oversized = b'{"type":"trade","pad":"' + b"x" * (9 * 1024 * 1024) + b'"}'
    out = h.feed(
        ConnectionOpened(1, T0),
        b"{not json",
        b'{"type":"trade","symbol_id":"%s","sequence":"one"}' % SYM.encode(),
        b'{"type":"exchange","exchange_id":"X"}',
        oversized,
        trade(1, "ok", 0),
    )
    assert [t.uuid for t in trades(out)] == ["ok"]
    assert h.processor.counters.invalid == {
        "not_json": 1,
        "invalid_schema": 1,
        "unknown_type": 1,
        "too_large": 1,
    }
    await trio.lowlevel.checkpoint()


async def test_a_window_is_judged_only_after_its_last_page() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 0), trade(4, "d", 3))
    [window] = h.windows()
    h.recovery._windows.clear()
    out = h.feed(TradesRecovered(window, [rest_trade("b", 1)], final=False))
    assert [t.uuid for t in trades(out)] == ["b"] and gaps(out) == []
    out = h.feed(TradesRecovered(window, [rest_trade("c", 2), rest_trade("d", 3)], final=True))
    assert [t.uuid for t in trades(out)] == ["c"]
    assert [(g.status, g.missing) for g in gaps(out)] == [("recovered", 2)]
    assert h.windows() == []


async def test_gaps_still_pending_at_shutdown_end_unrecovered_not_pending() -> None:
    h = harness()
    h.feed(
        ConnectionOpened(1, T0),
        trade(1, "a", 0),
        trade(4, "d", 3),  # a trade gap, its window pending in recovery
        book(1, True, [("10", "1")]),
        book(3, False, [("11", "1")]),  # a book gap, resync pending
    )
    emitted: list[Event] = []

    async def emit(events: list[Event]) -> None:
        emitted.extend(events)

    h.processor.emit = emit
    h.queue.close()
    await h.processor.run()
    final = {(g.data_type, g.recovery, g.status, g.missing) for g in gaps(emitted)}
    assert final == {
        ("trade", "backfill", "unrecovered", 2),
        ("book", "resubscribe", "unrecovered", 1),
    }


async def test_messages_are_counted_under_the_type_they_arrived_as() -> None:
    h = harness(types=("book5",))
    h.feed(
        ConnectionOpened(1, T0),
        '{"type":"hearbeat"}',
        '{"type":"heartbeat"}',
        '{"type":"reconnect","within_seconds":5}',
    )
    assert h.processor.counters.received == {"hearbeat": 1, "heartbeat": 1, "reconnect": 1}


def raw_trade(
    seq: int | str, uuid: str, *, time_exchange: str, price: str = "100.10", size: str = "0.5"
) -> bytes:
    """A trade frame written by hand, so any field can hold what a hostile server sends."""
    return (
        f'{{"type":"trade","symbol_id":"{SYM}","sequence":{seq},'
        f'"time_exchange":"{time_exchange}","time_coinapi":"{ts(0)}","uuid":"{uuid}",'
        f'"price":{price},"size":{size},"taker_side":"BUY"}}'
    ).encode()


async def test_a_trade_whose_time_is_not_a_time_is_invalid_and_a_later_gap_still_repaired() -> None:
    h = harness()
    out = h.feed(
        ConnectionOpened(1, T0),
        trade(1, "a", 0),
        raw_trade(2, "bad", time_exchange="not-a-time"),
        trade(4, "d", 3),
    )
    assert [t.uuid for t in trades(out)] == ["a", "d"]
    assert h.processor.counters.invalid == {"invalid_value": 1}
    [window] = h.windows()
    assert (window.start, window.expected_missing) == (T0, 2)


async def test_hostile_numbers_and_times_are_invalid_and_never_move_the_sequence() -> None:
    h = harness()
    out = h.feed(
        ConnectionOpened(1, T0),
        trade(1, "a", 0),
        raw_trade(2**63, "too-big", time_exchange=ts(1)),
        raw_trade(-2, "negative-sequence", time_exchange=ts(1)),
        raw_trade(2**62, "implausible-jump", time_exchange=ts(1)),
        raw_trade(2, "negative-price", time_exchange=ts(1), price="-1"),
        raw_trade(2, "nan-size", time_exchange=ts(1), size='"NaN"'),
        raw_trade(2, "far-future", time_exchange="9999-12-31T23:59:59.0000000Z"),
        trade(2, "b", 1),
        raw_trade(3, "zero-size-is-valid", time_exchange=ts(2), size="0"),
    )
    assert [t.uuid for t in trades(out)] == ["a", "b", "zero-size-is-valid"]
    assert gaps(out) == []
    assert h.processor.counters.invalid == {"invalid_value": 6}
    assert h.processor.counters.behind_sequence == 0


async def test_a_dropped_trade_with_a_bad_time_is_repaired_up_to_now() -> None:
    h = harness(capacity=1)
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 0))
    h.queue.put_frames_nowait(
        1, [trade(2, "b", 1), raw_trade(3, "c", time_exchange="9999-12-31T23:59:59.0000000Z")]
    )
    batch, drops = h.queue.take_nowait()
    out: list[Event] = []
    h.processor.handle_batch(batch, drops, out, trio.current_time())
    assert [(g.status, g.missing) for g in gaps(out)] == [("pending", 1)]
    [window] = h.windows()
    assert window.start == T0 + timedelta(seconds=1)
    assert window.end <= datetime.now(UTC)
    # The poisoned time did not become the symbol's latest trade time.
    out = h.feed(trade(5, "e", 4))
    assert max(w.start for w in h.windows()) <= T0 + timedelta(seconds=4)


# -- the restart checkpoint's view ------------------------------------------------------------


async def test_complete_through_holds_back_to_an_open_window_until_it_is_finished() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0))
    assert h.processor.gaps.complete_through() == {SYM: T0}  # live, nothing traded yet
    h.feed(trade(1, "a", 1), trade(2, "b", 2))
    assert h.processor.gaps.complete_through() == {SYM: T0 + timedelta(seconds=2)}
    h.feed(trade(5, "e", 5))  # c and d missing: owed from the last trade seen, 2 s
    [window] = h.windows()
    h.feed(trade(6, "f", 6))
    assert h.processor.gaps.complete_through() == {SYM: T0 + timedelta(seconds=2)}
    h.recovery._windows.clear()
    rest = [rest_trade("c", 3), rest_trade("d", 4)]
    h.feed(TradesRecovered(window, rest))
    assert h.processor.gaps.complete_through() == {SYM: T0 + timedelta(seconds=6)}


async def test_windows_cut_short_by_shutdown_stay_owed_to_the_next_process() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 1), trade(4, "d", 4))
    out: list[Event] = []
    h.processor.report_unfinished(out, trio.current_time())
    assert [g.status for g in gaps(out)] == ["unrecovered"]
    assert h.processor.gaps.complete_through() == {SYM: T0 + timedelta(seconds=1)}


async def test_a_restart_backfills_from_the_checkpoint_and_reports_a_restart_gap() -> None:
    checkpoint = T0 - timedelta(seconds=10)
    h = harness(restart_from={SYM: checkpoint})
    out = h.feed(ConnectionOpened(1, T0))
    [gap] = gaps(out)
    assert (gap.data_type, gap.reason, gap.recovery, gap.status) == (
        "trade",
        "restart",
        "backfill",
        "pending",
    )
    [window] = h.windows()
    assert (window.start, window.end) == (checkpoint, T0 + timedelta(seconds=2))
    assert h.processor.gaps.complete_through() == {SYM: checkpoint}  # until it is backfilled
    h.recovery._windows.clear()
    out = h.feed(TradesRecovered(window, []))
    assert [(g.reason, g.status) for g in gaps(out)] == [("restart", "recovered")]
    assert h.processor.gaps.complete_through() == {SYM: T0 + timedelta(seconds=2)}


async def test_a_restart_older_than_restart_backfill_max_reports_the_rest_unrecovered() -> None:
    h = harness(restart_from={SYM: T0 - timedelta(hours=3)})  # the harness allows 1 h
    out = h.feed(ConnectionOpened(1, T0))
    assert [(g.reason, g.status) for g in gaps(out)] == [
        ("restart", "unrecovered"),
        ("restart", "pending"),
    ]
    [window] = h.windows()
    assert window.start == T0 - timedelta(hours=1)


async def test_no_restart_gap_without_a_checkpoint_or_on_a_reconnect() -> None:
    h = harness()
    assert gaps(h.feed(ConnectionOpened(1, T0))) == []
    h2 = harness(restart_from={SYM: T0 - timedelta(seconds=5)})
    h2.feed(ConnectionOpened(1, T0))
    reasons = [g.reason for g in gaps(h2.feed(ConnectionOpened(2, T0 + timedelta(seconds=9))))]
    assert "restart" not in reasons


async def test_the_stats_line_gap_figures_add_up() -> None:
    from coinfeed.service import gap_summary

    h = harness()
    h.feed(
        ConnectionOpened(1, T0),
        trade(1, "a", 0),
        trade(3, "c", 2),  # a trade gap: backfilled
        trade(4, "d", 50),
        trade(9, "i", 100),  # another, far from the first (not merged): still pending
        book(1, True, [("10", "1")]),
        book(3, False, [("11", "1")]),  # a book gap: resync pending
    )
    first = min(h.windows(), key=lambda w: w.start)
    h.recovery._windows.clear()
    h.feed(TradesRecovered(first, [rest_trade("b", 1)]))
    counters = h.processor.counters
    assert gap_summary(counters.gaps, counters.recoveries) == {
        "gaps": 3,
        "repaired": 1,
        "no_repair_needed": 0,
        "unrecovered": 0,
        "pending": 2,
    }


async def test_a_missed_trade_an_overlapping_window_brought_first_still_counts() -> None:
    h = harness()
    h.feed(ConnectionOpened(1, T0), trade(1, "a", 0), trade(3, "c", 2))  # b missing
    [window] = h.windows()
    h.recovery._windows.clear()
    # Another window over the same time (a resubscribe's, say) fetches b first.
    overlapping = TradeWindow(SYM, T0, T0 + timedelta(seconds=3), [])
    assert [t.uuid for t in trades(h.feed(TradesRecovered(overlapping, [rest_trade("b", 1)])))] == [
        "b"
    ]
    out = h.feed(TradesRecovered(window, [rest_trade("a", 0), rest_trade("b", 1)]))
    assert trades(out) == []  # nothing twice
    assert [(g.status, g.missing) for g in gaps(out)] == [("recovered", 1)]  # not retried
    assert h.windows() == []


async def test_gaps_waiting_for_recovery_stay_bounded_per_symbol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import coinfeed.gaps

    monkeypatch.setattr(coinfeed.gaps, "MAX_OPEN_GAPS_PER_SYMBOL", 3)
    h = harness()
    # REST is blocked: no window is fetched, every gap of the symbol stays open.
    out = h.feed(ConnectionOpened(1, T0), *(trade(2 * n + 1, f"t{n}", n) for n in range(6)))
    pending = [g for g in gaps(out) if g.status == "pending"]
    given_up = [g for g in gaps(out) if g.status == "unrecovered"]
    assert len(pending) == 5
    assert [g.id for g in given_up] == [g.id for g in pending[:2]]  # the oldest, once each
    assert sum(len(w.gaps) for w in h.windows()) == 3
    assert h.processor.counters.recoveries == {("trade", "unrecovered"): 2}


def ohlcv(seq: int, start: float, period_id: str | None = "1MIN", symbol: str = SYM) -> bytes:
    return encode(
        Ohlcv(
            symbol_id=symbol,
            sequence=seq,
            period_id=period_id,
            time_period_start=ts(start),
            time_period_end=ts(start + 60),
            time_open=ts(start + 1),
            time_close=ts(start + 2),
            price_open=Decimal("0.3865"),
            price_high=Decimal("0.38706"),
            price_low=Decimal("0.3865"),
            price_close=Decimal("0.38706"),
            volume_traded=Decimal("1500.31419084"),
            trades_count=5,
        )
    )


def exrate(base: str, quote: str) -> bytes:
    return encode(
        Exrate(
            asset_id_base=base,
            asset_id_quote=quote,
            time=ts(0),
            rate=Decimal("10065.0319541"),
            rate_type="BASE_ALL_CROSSES_TO_REF",
        )
    )


async def test_ohlcv_is_passed_on_exactly_and_a_gap_in_it_is_unrecovered() -> None:
    h = harness(types=("trade", "ohlcv"))
    h.feed(ConnectionOpened(1, T0))
    (first,) = h.feed(ohlcv(1, 0))
    assert isinstance(first, OhlcvEvent)
    assert str(first.volume_traded) == "1500.31419084" and first.price_high == Decimal("0.38706")
    assert (first.period_id, first.time_period_start, first.sequence) == ("1MIN", ts(0), 1)
    out = h.feed(ohlcv(2, 0, period_id=None), ohlcv(5, 60))
    (gap,) = gaps(out)
    assert (gap.data_type, gap.missing, gap.recovery, gap.status) == (
        "ohlcv", 2, "none", "unrecovered",
    )  # fmt: skip
    assert [e.sequence for e in out if isinstance(e, OhlcvEvent)] == [2, 5]
    assert h.processor.counters.recoveries[("ohlcv", "unrecovered")] == 1
    assert h.feed(ohlcv(6, 60, symbol="KRAKEN_SPOT_BTC_USD")) == []
    assert h.processor.counters.unrequested == 1


async def test_exrates_of_the_pairs_asked_for_are_passed_on_the_rest_skipped() -> None:
    h = harness(types=("trade", "exrate"))
    h.processor.exrate_pairs = frozenset({"BTC/USD"})
    h.feed(ConnectionOpened(1, T0))
    (rate,) = h.feed(exrate("BTC", "USD"))
    assert isinstance(rate, ExrateEvent)
    assert (rate.symbol_id, rate.rate, rate.rate_type) == (
        "BTC/USD", Decimal("10065.0319541"), "BASE_ALL_CROSSES_TO_REF",
    )  # fmt: skip
    assert h.feed(exrate("ETH", "USD")) == []
    assert h.processor.counters.unrequested == 1
