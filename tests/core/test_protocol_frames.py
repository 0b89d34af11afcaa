"""Wire format: the exact example frames of docs/protocol.md, and every invalid reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from coinfeed.core import decoding, events, protocol, rest_protocol
from coinfeed.core.decoding import FrameDecoder, InvalidFrame
from coinfeed.core.protocol import (
    Book5,
    BookL3,
    BookUpdate,
    Error,
    Exrate,
    Heartbeat,
    HeartbeatCorrected,
    Ohlcv,
    Quote,
    Reconnect,
    Trade,
)

TRADE = b"""{"type":"trade","symbol_id":"BITSTAMP_SPOT_BTC_USD","sequence":2323346,
 "time_exchange":"2013-09-28T22:40:50.0000000Z","time_coinapi":"2017-03-18T22:42:21.3763342Z",
 "uuid":"770C7A3B-7258-4441-8182-83740F3E2457","price":770.000000000,"size":0.050000000,"taker_side":"BUY"}"""

QUOTE = b"""{"type":"quote","symbol_id":"BITSTAMP_SPOT_BTC_USD","sequence":2323346,
 "time_exchange":"2013-09-28T22:40:50.0000000Z","time_coinapi":"2017-03-18T22:42:21.3763342Z",
 "ask_price":770.000000000,"ask_size":3252,"bid_price":760,"bid_size":124}"""

BOOK = b"""{"type":"book","symbol_id":"BITSTAMP_SPOT_BTC_USD","sequence":2323346,
 "time_exchange":"2013-09-28T22:40:50.0000000Z","time_coinapi":"2017-03-18T22:42:21.3763342Z",
 "is_snapshot":true,
 "asks":[{"price":456.35,"size":123},{"price":456.36,"size":23}],
 "bids":[{"price":456.10,"size":42},{"price":456.09,"size":5}]}"""

BOOK5 = b"""{"type":"book5","symbol_id":"BITSTAMP_SPOT_BTC_USD","sequence":2323346,
 "time_exchange":"2013-09-28T22:40:50.0000000Z","time_coinapi":"2017-03-18T22:42:21.3763342Z",
 "asks":[{"price":456.35,"size":123}],"bids":[{"price":456.10,"size":42}]}"""

BOOK_L3 = b"""{"type":"book_l3","symbol_id":"COINBASE_SPOT_BCH_USD","sequence":2323346,
 "time_exchange":"2020-08-26T12:36:04.3464706Z","time_coinapi":"2020-08-26T12:36:04.2807750Z",
 "is_snapshot":false,
 "asks":[{"id":"520269d4-c085-47ed-8825-6d787af90800","price":273.01,"size":1.81940502,"update_type":"ADD"}],
 "bids":[{"id":"7eaaa899-089f-4308-9fa2-e33737ae36ee","price":272.96,"size":1.85989855,"update_type":"DELETE"}]}"""

OHLCV = b"""{"type":"ohlcv","symbol_id":"BITSTAMP_SPOT_XRP_USD","sequence":511,"period_id":"1MIN",
 "time_period_start":"2019-06-11T15:26:00.0000000Z","time_period_end":"2019-06-11T15:27:00.0000000Z",
 "time_open":"2019-06-11T15:26:07.0000000Z","time_close":"2019-06-11T15:26:36.0000000Z",
 "price_open":0.3865,"price_high":0.38706,"price_low":0.3865,"price_close":0.38706,
 "volume_traded":1500.31419084,"trades_count":5}"""

EXRATE = b"""{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","rate_type":"BASE_ALL_CROSSES_TO_REF",
 "time":"2019-06-11T15:26:00.0000000Z","rate":10065.0319541}"""  # noqa: E501

RECONNECT = b'{"type":"reconnect","within_seconds":10,"before_time":"2020-08-06T19:19:09.7035429Z"}'

RECEIVED_AT = "2026-01-02T03:04:05.678901Z"


@pytest.fixture
def decoder() -> FrameDecoder:
    return FrameDecoder()


def test_trade_frame_decodes_with_exact_decimals(decoder: FrameDecoder) -> None:
    msg = decoder.decode(TRADE)
    assert isinstance(msg, Trade)
    assert msg.symbol_id == "BITSTAMP_SPOT_BTC_USD"
    assert msg.sequence == 2323346
    assert msg.time_exchange == "2013-09-28T22:40:50.0000000Z"
    assert msg.time_coinapi == "2017-03-18T22:42:21.3763342Z"
    assert msg.uuid == "770C7A3B-7258-4441-8182-83740F3E2457"
    assert str(msg.price) == "770.000000000"
    assert str(msg.size) == "0.050000000"
    assert msg.taker_side == "BUY"


def test_decimal_digits_survive_protocol_and_event_encoding(decoder: FrameDecoder) -> None:
    msg = decoder.decode(TRADE)
    assert isinstance(msg, Trade)
    assert b'"price":770.000000000' in protocol.encode(msg)
    assert b'"size":0.050000000' in protocol.encode(msg)
    encoded = events.encode_event(events.trade_from_ws(msg, RECEIVED_AT))
    assert b'"price":770.000000000' in encoded
    assert b'"size":0.050000000' in encoded
    again = events.decode_event(encoded)
    assert isinstance(again, events.TradeEvent)
    assert str(again.price) == "770.000000000"


def test_trade_events_lower_case_the_uuid_from_ws_and_rest(decoder: FrameDecoder) -> None:
    msg = decoder.decode(TRADE)
    assert isinstance(msg, Trade)
    live = events.trade_from_ws(msg, RECEIVED_AT)
    assert live.uuid == "770c7a3b-7258-4441-8182-83740f3e2457"
    assert live.source == "ws"
    assert live.sequence == 2323346
    rest = rest_protocol.rest_trades_decoder.decode(
        b'[{"symbol_id":"BITSTAMP_SPOT_BTC_USD","time_exchange":"2013-09-28T22:40:50.0000000Z",'
        b'"time_coinapi":"2017-03-18T22:42:21.3763342Z",'
        b'"uuid":"770C7A3B-7258-4441-8182-83740F3E2457","price":770.0,"size":0.05,'
        b'"taker_side":"BUY","id_trade":null}]'
    )
    backfilled = events.trade_from_rest(rest[0], RECEIVED_AT)
    assert backfilled.uuid == live.uuid
    assert backfilled.sequence is None
    assert backfilled.source == "rest"


def test_quote_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(QUOTE)
    assert isinstance(msg, Quote)
    assert (msg.ask_price, msg.ask_size) == (Decimal("770.000000000"), Decimal(3252))
    assert (msg.bid_price, msg.bid_size) == (Decimal(760), Decimal(124))
    event = events.quote_from_ws(msg, RECEIVED_AT)
    assert b'"ask_price":770.000000000' in events.encode_event(event)


def test_book_snapshot_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(BOOK)
    assert isinstance(msg, BookUpdate)
    assert msg.is_snapshot is True
    assert [(str(lv.price), str(lv.size)) for lv in msg.asks] == [
        ("456.35", "123"),
        ("456.36", "23"),
    ]
    assert [(str(lv.price), str(lv.size)) for lv in msg.bids] == [("456.10", "42"), ("456.09", "5")]
    event = events.book_from_ws(msg, RECEIVED_AT)
    assert event.depth == "book"
    assert event.is_snapshot is True
    assert b'"bids":[[456.10,42],[456.09,5]]' in events.encode_event(event)


def test_book5_frame_is_always_a_snapshot(decoder: FrameDecoder) -> None:
    msg = decoder.decode(BOOK5)
    assert isinstance(msg, Book5)
    assert msg.asks == [protocol.Level(Decimal("456.35"), Decimal(123))]
    event = events.book_from_ws(msg, RECEIVED_AT)
    assert (event.depth, event.is_snapshot) == ("book5", True)


def test_book_l3_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(BOOK_L3)
    assert isinstance(msg, BookL3)
    assert msg.is_snapshot is False
    assert msg.asks[0].id == "520269d4-c085-47ed-8825-6d787af90800"
    assert msg.asks[0].update_type == "ADD"
    assert str(msg.asks[0].size) == "1.81940502"
    assert msg.bids[0].update_type == "DELETE"


def test_ohlcv_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(OHLCV)
    assert isinstance(msg, Ohlcv)
    assert msg.period_id == "1MIN"
    assert msg.sequence == 511
    assert str(msg.price_high) == "0.38706"
    assert str(msg.volume_traded) == "1500.31419084"
    assert msg.trades_count == 5


def test_ohlcv_without_period_id_or_open_close(decoder: FrameDecoder) -> None:
    msg = decoder.decode(
        b'{"type":"ohlcv","symbol_id":"S","sequence":1,"time_period_start":"a",'
        b'"time_period_end":"b","volume_traded":0,"trades_count":0}'
    )
    assert isinstance(msg, Ohlcv)
    assert (msg.period_id, msg.time_open, msg.price_open) == (None, None, None)


def test_exrate_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(EXRATE)
    assert isinstance(msg, Exrate)
    assert (msg.asset_id_base, msg.asset_id_quote) == ("BTC", "USD")
    assert msg.rate_type == "BASE_ALL_CROSSES_TO_REF"
    assert str(msg.rate) == "10065.0319541"


def test_heartbeat_accepts_the_wire_typo_and_the_correct_spelling(decoder: FrameDecoder) -> None:
    assert isinstance(decoder.decode(b'{"type":"hearbeat"}'), Heartbeat)
    assert isinstance(decoder.decode(b'{"type":"heartbeat"}'), HeartbeatCorrected)
    assert protocol.encode(Heartbeat()) == b'{"type":"hearbeat"}'


@pytest.mark.parametrize(
    "text", ["Invalid API key", "Reached maximum allowed buffered messages for this connection."]
)
def test_error_frame(decoder: FrameDecoder, text: str) -> None:
    msg = decoder.decode(msgspec.json.encode({"type": "error", "message": text}))
    assert msg == Error(text)


def test_reconnect_frame(decoder: FrameDecoder) -> None:
    msg = decoder.decode(RECONNECT)
    assert msg == Reconnect(within_seconds=10, before_time="2020-08-06T19:19:09.7035429Z")


def test_str_frames_decode_like_bytes(decoder: FrameDecoder) -> None:
    assert decoder.decode(TRADE.decode()) == decoder.decode(TRADE)


def test_parse_time_reads_seven_fractional_digits() -> None:
    moment = protocol.parse_time("2017-03-18T22:42:21.3763342Z")
    assert moment == datetime(2017, 3, 18, 22, 42, 21, 376334, tzinfo=UTC)
    assert protocol.format_time(moment) == "2017-03-18T22:42:21.3763340Z"


@pytest.fixture
def new_york_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york_local_time")
def test_parse_time_without_offset_is_utc_not_local_time() -> None:
    assert protocol.parse_time("2017-03-18T22:42:21.3763342") == datetime(
        2017, 3, 18, 22, 42, 21, 376334, tzinfo=UTC
    )
    assert protocol.parse_time("2017-03-18T22:42:21.3763342+01:00").hour == 21


def test_not_json(decoder: FrameDecoder) -> None:
    result = decoder.decode(b'{"type":"trade",')
    assert isinstance(result, InvalidFrame)
    assert (result.reason, result.size) == ("not_json", 16)


def test_lone_surrogate_text_is_not_json(decoder: FrameDecoder) -> None:
    result = decoder.decode('{"type":"\ud800"}')
    assert isinstance(result, InvalidFrame)
    assert result.reason == "not_json"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"trade","symbol_id":"X"}',
        b'{"type":"quote","symbol_id":"X","sequence":"7"}',
        b'{"sequence":1}',
        b"[1,2]",
        b'{"type":"hearbeat","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ],
    ids=["missing-fields", "wrong-type", "no-type", "not-an-object", "too-deep"],
)
def test_invalid_schema(decoder: FrameDecoder, frame: bytes) -> None:
    result = decoder.decode(frame)
    assert isinstance(result, InvalidFrame)
    assert result.reason == "invalid_schema"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"volume"}',
        b'{"type":"ticker","symbol_id":"X","sequence":"not a number"}',
        b'{"type":"symbol","symbol_id":42}',
    ],
)
def test_unknown_type_whatever_its_other_fields(decoder: FrameDecoder, frame: bytes) -> None:
    result = decoder.decode(frame)
    assert isinstance(result, InvalidFrame)
    assert result.reason == "unknown_type"


def test_too_large_is_rejected_before_parsing() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    heartbeat = b'{"type":"hearbeat"}'
    assert isinstance(decoder.decode(heartbeat.ljust(100)), Heartbeat)
    result = decoder.decode(heartbeat.ljust(101))
    assert isinstance(result, InvalidFrame)
    assert (result.reason, result.size) == ("too_large", 101)


def test_scope_message_appends_dollar_once_and_apikey_only_when_given() -> None:
    without_key = protocol.encode(
        protocol.scope_message("hello", ["trade", "book"], ["BITSTAMP_SPOT_BTC_USD", "X_SPOT_A_B$"])
    )
    assert msgspec.json.decode(without_key) == {
        "type": "hello",
        "heartbeat": True,
        "subscribe_data_type": ["trade", "book"],
        "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$", "X_SPOT_A_B$"],
    }
    with_key = msgspec.json.decode(
        protocol.encode(protocol.scope_message("subscribe", ["quote"], ["S"], apikey="K"))
    )
    assert with_key["apikey"] == "K"
    assert with_key["type"] == "subscribe"
    decoded = protocol.decode_scope_message(without_key)
    assert decoded.subscribe_filter_symbol_id == ["BITSTAMP_SPOT_BTC_USD$", "X_SPOT_A_B$"]
    assert decoded.apikey is None


def test_peek_frame_reads_the_stream_of_any_frame() -> None:
    head = decoding.peek_frame(TRADE)
    assert head is not None
    assert (head.type, head.symbol_id, head.sequence) == ("trade", "BITSTAMP_SPOT_BTC_USD", 2323346)
    unknown = decoding.peek_frame(b'{"type":"ticker","symbol_id":"S"}')
    assert unknown is not None
    assert (unknown.type, unknown.symbol_id, unknown.sequence) == ("ticker", "S", None)
    assert decoding.peek_frame(b"not json") is None
    assert decoding.peek_frame('{"type":"\udfff"}') is None


def test_error_frame_with_null_or_missing_message_is_still_an_error() -> None:
    from coinfeed.core.decoding import FrameDecoder
    from coinfeed.core.protocol import Error

    decoder = FrameDecoder()
    assert isinstance(decoder.decode(b'{"type":"error","message":null}'), Error)
    assert isinstance(decoder.decode(b'{"type":"error"}'), Error)


def test_the_hello_carries_ohlcv_periods_and_leaves_exrate_to_its_own_subscribe() -> None:
    hello = protocol.scope_message(
        "hello", ["trade", "ohlcv", "exrate"], ["BITSTAMP_SPOT_BTC_USD"], periods=["1SEC", "1MIN"]
    )
    assert msgspec.json.decode(protocol.encode(hello)) == {
        "type": "hello", "heartbeat": True, "subscribe_data_type": ["trade", "ohlcv"],
        "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$"],
        "subscribe_filter_period_id": ["1SEC", "1MIN"],
    }  # fmt: skip
    no_ohlcv = protocol.scope_message("subscribe", ["trade"], ["A_B_C_D"], periods=["1MIN"])
    assert no_ohlcv.subscribe_filter_period_id is None
    pairs = protocol.exrate_pairs(
        ["BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_BTC_USD", "KRAKENFTS_PERP_ETH_USD", "ODD"]
    )
    assert pairs == ("BTC/USD", "ETH/USD")
    assert msgspec.json.decode(protocol.encode(protocol.exrate_subscription(pairs))) == {
        "type": "subscribe", "heartbeat": True, "subscribe_data_type": ["exrate"],
        "subscribe_filter_asset_id": ["BTC/USD", "ETH/USD"],
    }  # fmt: skip
