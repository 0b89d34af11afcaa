"""The recording format: batches, control items and answers come back as they were written."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfeed.core.controls import (
    ConnectionLost,
    ConnectionOpened,
    GapRecord,
    InterimBook,
    Resubscribed,
    ResyncFailed,
    TradesRecovered,
    TradesUnrecovered,
    TradeWindow,
)
from coinfeed.core.rest_protocol import Level, RestBook, RestTrade
from coinfeed.recording.format import (
    BATCH,
    HEADER,
    Batch,
    End,
    RecordingError,
    RecordSplitter,
    Sent,
    check_header,
    decode_control,
    decode_record,
    encode_batch,
    encode_clocked,
    encode_control,
    encode_header,
    wall_from_ns,
    wall_ns,
    window_answer,
    windows_of,
)

AT = datetime(2026, 12, 6, 14, 3, 0, 123456, tzinfo=UTC)


def window() -> TradeWindow:
    gap = GapRecord("trade", "S", "sequence", 3, "ab12cd34-7", 10, 14, "2026-12-06T14:02:59Z", None)
    return TradeWindow(
        "S", AT, AT, [gap], attempt=2, not_before=12.5, found=1, credited={"u1"}, opened_at=3.25
    )


CONTROLS = [
    ConnectionOpened(3, AT),
    ConnectionLost(3, "closed"),
    Resubscribed(3, frozenset({"A", "B"}), AT),
    TradesRecovered(
        window(),
        [
            RestTrade(
                symbol_id="S",
                time_exchange="2026-12-06T14:03:00.0000001Z",
                time_coinapi="2026-12-06T14:03:00.1Z",
                uuid="u2",
                price=Decimal("0.000012340"),
                size=Decimal("1E+3"),
                taker_side="BUY",
            )
        ],
        final=False,
    ),
    TradesUnrecovered(window(), "HTTP 503"),
    InterimBook(
        RestBook(
            symbol_id="S",
            time_exchange="t",
            time_coinapi="t",
            asks=[Level(price=Decimal("1.10"), size=Decimal("2"))],
            bids=[],
        )
    ),
    ResyncFailed("S"),
]


def records(data: bytes) -> list[object]:
    return [decode_record(kind, body) for kind, body in RecordSplitter().feed(data)]


@pytest.mark.parametrize("item", CONTROLS, ids=lambda item: type(item).__name__)
def test_every_control_item_comes_back_equal_with_its_exact_decimals(item: object) -> None:
    decoded = decode_control(encode_control(item))  # type: ignore[arg-type]
    assert decoded == item
    if isinstance(item, TradesRecovered):
        assert isinstance(decoded, TradesRecovered)
        assert str(decoded.trades[0].price) == "0.000012340"
        assert str(decoded.trades[0].size) == "1E+3"


def test_a_batch_keeps_its_items_kinds_order_clocks_drops_and_answers() -> None:
    items: list[object] = [b'{"type":"trade"}', "text é frame", CONTROLS[0], b"", CONTROLS[3]]
    controls = [encode_control(CONTROLS[0]), encode_control(CONTROLS[3])]  # type: ignore[arg-type]
    drops = [{"connection_id": 1, "data_type": "trade", "symbol_id": "S", "count": 2,
              "min_sequence": 5, "max_sequence": 6, "last_time_exchange": None}]  # fmt: skip
    answers = [{"call": "resync", "value": False}, {"call": "unfinished", "value": []}]
    parts = encode_batch(items, controls, {"drops": drops, "answers": answers}, wall_ns(AT), 17.125)
    [batch] = records(b"".join(parts))
    assert isinstance(batch, Batch)
    assert batch.items == items
    assert type(batch.items[0]) is bytes and type(batch.items[1]) is str  # the type handed over
    assert (batch.drops, batch.answers) == (drops, answers)
    assert wall_from_ns(batch.wall_ns) == AT and batch.now == 17.125


def test_frames_are_not_copied_into_the_parts() -> None:
    frame = b'{"type":"quote"}' * 10
    parts = encode_batch([frame], [], {}, 0, 0.0)
    assert parts[1] is frame


def test_the_layout_is_the_documented_one() -> None:
    """docs/recording.md: u32 length, u8 kind, then i64 ns, f64 seconds, u32 count, u32 extra,
    kinds, u32 lengths, extra JSON, payloads; all little-endian."""
    data = b"".join(
        encode_batch(
            [b"ab", "c"],
            [],
            {"answers": []},
            5,
            1.5,
        )
    )
    length, kind = struct.unpack_from("<IB", data)
    assert (length, kind) == (len(data) - 4, BATCH)
    wall, now, count, extra = struct.unpack_from("<qdII", data, 5)
    assert (wall, now, count) == (5, 1.5, 2)
    at = 5 + 24
    assert data[at : at + 2] == bytes([0, 1])
    assert struct.unpack_from("<2I", data, at + 2) == (2, 1)
    assert json.loads(data[at + 10 : at + 10 + extra]) == {"answers": []}
    assert data[at + 10 + extra :] == b"abc"


def test_sent_end_and_header_records() -> None:
    data = (
        encode_header({"format": "coinfeed-recording", "format_version": 1})
        + encode_clocked(0x53, 7_000, 2.5, b'{"type":"hello"}')
        + encode_clocked(0x45, 8_000, 3.5, b'{"answers":[{"call":"unfinished","value":[]}]}')
    )
    header, sent, end = records(data)
    assert header == {"format": "coinfeed-recording", "format_version": 1}
    assert sent == Sent(7_000, 2.5, '{"type":"hello"}')
    assert end == End(8_000, 3.5, [{"call": "unfinished", "value": []}])
    assert data[4] == HEADER


def test_trade_windows_as_answers_keep_every_field() -> None:
    assert windows_of(json.loads(json.dumps(window_answer([window()])))) == [window()]


def test_wall_times_round_trip_exactly() -> None:
    for moment in (AT, datetime(1999, 1, 1, tzinfo=UTC), datetime(2100, 6, 1, 0, 0, 0, 1, UTC)):
        assert wall_from_ns(wall_ns(moment)) == moment


@given(st.lists(st.binary(max_size=40), max_size=20), st.lists(st.integers(1, 50), max_size=30))
def test_records_are_cut_whole_whatever_pieces_the_stream_comes_in(
    frames: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(
        b"".join(encode_batch([frame], [], {}, n, float(n))) for n, frame in enumerate(frames)
    )
    splitter = RecordSplitter()
    got = []
    at = 0
    for cut in cuts:
        got += splitter.feed(data[at : at + cut])
        at += cut
    got += splitter.feed(data[at:])
    assert [decode_record(k, b).items for k, b in got] == [[frame] for frame in frames]  # type: ignore[union-attr]
    assert splitter.pending == 0


def test_a_newer_format_is_refused_naming_both_versions() -> None:
    header = {"format": "coinfeed-recording", "format_version": 99, "written_by": "coinfeed 9.0"}
    with pytest.raises(RecordingError, match=r"version 99 is newer .*\(1\).*coinfeed 9\.0"):
        check_header(header, "seg.cfrec")
    with pytest.raises(RecordingError, match="not a coinfeed recording"):
        check_header({"format": "other"}, "seg.cfrec")


def test_unknown_control_items_and_record_kinds_are_errors_not_crashes() -> None:
    with pytest.raises(RecordingError, match="unknown control item"):
        decode_control(b'{"type":"Teleported","item":{}}')
    with pytest.raises(RecordingError, match="unknown record kind"):
        decode_record(0x5A, b"")
