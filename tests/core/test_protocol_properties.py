"""Property tests: decoding never raises; every record and event survives encode -> decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfeed.core import decoding, events, protocol
from coinfeed.core.decoding import FrameDecoder, InvalidFrame

SERVER_RECORDS = get_args(protocol.ServerMessage)
DECODER = FrameDecoder()

# Exact decimals with up to 16 significant digits and -12..+6 exponents, like CoinAPI's numbers
# (e.g. 770.000000000); text such as "770.000000000" must come back digit for digit.
decimals = st.builds(
    lambda coefficient, exponent: Decimal(coefficient).scaleb(exponent),
    st.integers(-(10**16) + 1, 10**16 - 1),
    st.integers(-12, 6),
)
# What the decoder accepts as market values: no negative or non-finite amount, sequences of a
# signed 64-bit range, trade times that are times and not in the future.
amounts = decimals.map(abs)
texts = st.text(max_size=24)
sequences = st.integers(-(2**63), 2**63 - 1)
record_sequences = st.integers(0, 2**63 - 1)
trade_times = st.datetimes(
    min_value=datetime(2010, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
).map(protocol.format_time)
levels = st.lists(st.builds(protocol.Level, amounts, amounts), max_size=6)
l3_entries = st.lists(
    st.builds(
        protocol.L3Entry,
        price=decimals,
        size=decimals,
        id=st.none() | texts,
        update_type=st.none() | st.sampled_from(["ADD", "UPDATE", "SUBTRACT", "DELETE", "MATCH"]),
    ),
    max_size=4,
)
common = {
    "symbol_id": texts,
    "sequence": record_sequences,
    "time_exchange": texts,
    "time_coinapi": texts,
}
server_records = st.one_of(
    st.builds(
        protocol.Trade,
        **{**common, "time_exchange": trade_times},
        uuid=texts,
        price=amounts,
        size=amounts,
        taker_side=texts,
    ),
    st.builds(
        protocol.Quote,
        **common,
        ask_price=amounts,
        ask_size=amounts,
        bid_price=amounts,
        bid_size=amounts,
    ),
    st.builds(protocol.BookUpdate, **common, is_snapshot=st.booleans(), asks=levels, bids=levels),
    *(st.builds(cls, **common, asks=levels, bids=levels) for cls in get_args(protocol.TopOfBook)),
    st.builds(
        protocol.BookL3, **common, is_snapshot=st.booleans(), asks=l3_entries, bids=l3_entries
    ),
    st.builds(
        protocol.Ohlcv,
        symbol_id=texts,
        sequence=record_sequences,
        time_period_start=texts,
        time_period_end=texts,
        period_id=st.none() | texts,
        time_open=st.none() | texts,
        time_close=st.none() | texts,
        price_open=st.none() | amounts,
        price_high=st.none() | amounts,
        price_low=st.none() | amounts,
        price_close=st.none() | amounts,
        volume_traded=amounts,
        trades_count=st.integers(0, 2**31),
    ),
    st.builds(
        protocol.Exrate,
        asset_id_base=texts,
        asset_id_quote=texts,
        time=texts,
        rate=amounts,
        rate_type=st.none() | texts,
    ),
    st.builds(protocol.Heartbeat),
    st.builds(protocol.HeartbeatCorrected),
    st.builds(protocol.Error, texts),
    st.builds(
        protocol.Reconnect, within_seconds=st.integers(0, 3600), before_time=st.none() | texts
    ),
)

pairs = st.lists(st.tuples(decimals, decimals), max_size=6)
event_common = {
    "symbol_id": texts,
    "sequence": st.none() | sequences,
    "source": st.sampled_from(get_args(events.Source)),
    "received_at": texts,
}
any_event = st.one_of(
    st.builds(
        events.TradeEvent,
        **event_common,
        time_exchange=texts,
        time_coinapi=texts,
        uuid=texts,
        price=decimals,
        size=decimals,
        taker_side=texts,
    ),
    st.builds(
        events.QuoteEvent,
        **event_common,
        time_exchange=texts,
        time_coinapi=texts,
        ask_price=decimals,
        ask_size=decimals,
        bid_price=decimals,
        bid_size=decimals,
    ),
    st.builds(
        events.BookEvent,
        **event_common,
        depth=st.sampled_from(get_args(events.BookDepth)),
        time_exchange=texts,
        is_snapshot=st.booleans(),
        asks=pairs,
        bids=pairs,
    ),
    st.builds(
        events.GapEvent,
        data_type=texts,
        symbol_id=texts,
        reason=st.sampled_from(get_args(events.GapReason)),
        missing=st.none() | st.integers(0, 2**40),
        recovery=st.sampled_from(get_args(events.GapRecovery)),
        status=st.sampled_from(get_args(events.GapStatus)),
        received_at=texts,
    ),
    st.builds(
        events.BarEvent,
        symbol_id=texts,
        period_id=texts,
        time_period_start=texts,
        time_period_end=texts,
        time_open=texts,
        time_close=texts,
        open=decimals,
        high=decimals,
        low=decimals,
        close=decimals,
        volume=decimals,
        trades_count=st.integers(0, 2**40),
        revision=st.integers(0, 2**20),
        complete=st.booleans(),
        received_at=texts,
    ),
    st.builds(
        events.BookTopEvent,
        symbol_id=texts,
        depth=st.integers(1, 1000),
        time=texts,
        sequence=st.none() | sequences,
        asks=pairs,
        bids=pairs,
        received_at=texts,
    ),
    st.builds(
        events.OhlcvEvent,
        symbol_id=texts,
        sequence=sequences,
        period_id=st.none() | texts,
        time_period_start=texts,
        time_period_end=texts,
        time_open=st.none() | texts,
        time_close=st.none() | texts,
        price_open=st.none() | decimals,
        price_high=st.none() | decimals,
        price_low=st.none() | decimals,
        price_close=st.none() | decimals,
        volume_traded=decimals,
        trades_count=st.integers(0, 2**31),
        received_at=texts,
    ),
    st.builds(
        events.ExrateEvent,
        symbol_id=texts,
        asset_id_base=texts,
        asset_id_quote=texts,
        rate_type=st.none() | texts,
        time=texts,
        rate=decimals,
        received_at=texts,
    ),
)

FIELD_NAMES = sorted(
    {name for cls in SERVER_RECORDS for name in cls.__struct_fields__}
    | {"type", "price", "size", "id"}
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)
frame_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES), json_values, max_size=10
) | st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(protocol.KNOWN_TYPES)) | st.text(max_size=10)},
    optional={name: json_values for name in FIELD_NAMES if name != "type"},
)


def assert_record_or_invalid(result: object) -> None:
    if isinstance(result, InvalidFrame):
        assert result.reason in decoding.INVALID_REASONS
    else:
        assert isinstance(result, SERVER_RECORDS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_any_bytes_never_raises(frame: bytes) -> None:
    assert_record_or_invalid(DECODER.decode(frame))
    head = decoding.peek_frame(frame)
    assert head is None or isinstance(head, decoding.FrameHead)


any_text = st.text(st.characters(codec=None), max_size=100)
# A str frame can hold a lone surrogate, which is not encodable as UTF-8.
text_with_surrogate = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    any_text,
    st.characters(categories=["Cs"]),
    any_text,
)


@settings(max_examples=200, deadline=None)
@given(any_text | text_with_surrogate | frame_objects.map(lambda obj: json.dumps(obj)))
def test_decoding_any_text_never_raises(frame: str) -> None:
    assert_record_or_invalid(DECODER.decode(frame))
    head = decoding.peek_frame(frame)
    assert head is None or isinstance(head, decoding.FrameHead)


@settings(max_examples=300, deadline=None)
@given(frame_objects)
def test_decoding_json_objects_gives_a_record_or_a_reason(obj: dict[str, Any]) -> None:
    result = DECODER.decode(json.dumps(obj).encode())
    assert_record_or_invalid(result)
    kind = obj.get("type")
    if isinstance(kind, str) and kind and kind not in protocol.KNOWN_TYPES:
        assert isinstance(result, InvalidFrame)
        assert result.reason == "unknown_type"


@settings(max_examples=300, deadline=None)
@given(server_records)
def test_server_records_round_trip_with_their_digits(record: protocol.ServerMessage) -> None:
    encoded = protocol.encode(record)
    decoded = DECODER.decode(encoded)
    assert decoded == record
    assert protocol.encode(decoded) == encoded  # same text: same digits


@settings(max_examples=200, deadline=None)
@given(any_event)
def test_events_round_trip_with_their_digits(event: events.Event) -> None:
    encoded = events.encode_event(event)
    decoded = events.decode_event(encoded)
    assert decoded == event
    assert events.encode_event(decoded) == encoded
    assert events.encode_lines([event, event]) == encoded + b"\n" + encoded + b"\n"


@settings(max_examples=300, deadline=None)
@given(
    server_records,
    st.sampled_from(["price", "size", "ask_price", "bid_size", "level", "volume_traded", "rate"]),
)
def test_a_negative_amount_makes_any_market_record_invalid(
    record: protocol.ServerMessage, field: str
) -> None:
    market = protocol.Trade | protocol.Quote | protocol.Ohlcv | protocol.Exrate
    if isinstance(record, market) and hasattr(record, field):
        value = getattr(record, field)
        hostile = msgspec.structs.replace(record, **{field: -value - 1})
    elif isinstance(record, protocol.BookUpdate | protocol.TopOfBook) and field == "level":
        hostile = msgspec.structs.replace(record, asks=[protocol.Level(Decimal(1), Decimal(-1))])
    else:
        return
    decoded = DECODER.decode(protocol.encode(hostile))
    assert isinstance(decoded, InvalidFrame)
    assert decoded.reason == "invalid_value"
