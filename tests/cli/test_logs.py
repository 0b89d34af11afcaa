"""Logging: text and JSON lines on stderr, the key redacted everywhere, rate limiting."""

from __future__ import annotations

import json

import pytest
from loguru import logger

from coinfeed.logs import RateLimitedLog, setup_logging
from tests.helpers import KEY


def fail_with_key() -> None:
    raise ConnectionError(f"403 Forbidden for wss://ws.coinapi.io/v1/?apikey={KEY}")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_key_is_redacted_in_message_extra_and_traceback(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(log_format, "INFO", secrets=[KEY])
    logger.bind(url=f"wss://ws.coinapi.io/v1/?apikey={KEY}").info("connecting with key {}", KEY)
    try:
        fail_with_key()
    except ConnectionError:
        logger.exception("connection failed")
    err = capsys.readouterr().err
    assert KEY not in err
    assert "connecting with key ***" in err
    assert "apikey=***" in err
    assert "fail_with_key" in err and "ConnectionError: 403 Forbidden" in err


def test_other_sinks_see_redacted_records(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("text", "INFO", secrets=[KEY])
    seen: list[str] = []
    logger.add(lambda message: seen.append(message), format="{message} {extra}")
    logger.bind(header=f"X-CoinAPI-Key: {KEY}").warning(f"sent {KEY}")
    assert seen and all(KEY not in line for line in seen)
    assert "***" in seen[0]


def test_text_lines_carry_level_message_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("text", "INFO")
    logger.bind(symbol_id="BITSTAMP_SPOT_BTC_USD", attempt=2, reason="stale feed").info("reconnect")
    logger.debug("not shown at INFO")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        ' INFO     reconnect symbol_id=BITSTAMP_SPOT_BTC_USD attempt=2 reason="stale feed"'
    )
    assert line[:4].isdigit() and line[23] == "Z"  # 2024-05-01T12:00:00.123Z


def test_json_lines_parse_with_context_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "debug", secrets=[KEY])
    logger.bind(symbol_id="BITSTAMP_SPOT_BTC_USD", attempt=3, reason="sequence").warning("gap")
    logger.debug("detail")
    try:
        fail_with_key()
    except ConnectionError:
        logger.bind(attempt=4).exception("connect failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(d["level"], d["message"]) for d in lines] == [
        ("WARNING", "gap"),
        ("DEBUG", "detail"),
        ("ERROR", "connect failed"),
    ]
    first = lines[0]
    assert (first["symbol_id"], first["attempt"], first["reason"]) == (
        "BITSTAMP_SPOT_BTC_USD",
        3,
        "sequence",
    )
    assert first["time"].endswith("Z")
    assert "ConnectionError: 403 Forbidden" in lines[2]["exception"]
    assert KEY not in lines[2]["exception"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        setup_logging("xml", "INFO")


def test_rate_limited_log_suppresses_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "INFO")
    limited = RateLimitedLog(interval=10.0)
    emitted = [
        limited.warning("queue full", "frame dropped", now=now, queue="raw")
        for now in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 30.0)
    ]
    assert emitted == [True, False, False, False, True, False, True]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line.get("suppressed") for line in lines] == [None, 3, 1]
    assert all(line["queue"] == "raw" and line["message"] == "frame dropped" for line in lines)


def test_rate_limited_log_keys_are_independent_and_bounded() -> None:
    limited = RateLimitedLog(interval=10.0, max_keys=2)
    assert limited.warning("a", "m", now=0.0)
    assert limited.warning("b", "m", now=0.0)
    assert not limited.warning("a", "m", now=1.0)
    assert limited.warning("c", "m", now=1.0)  # "a", the oldest, is forgotten
    assert limited.warning("a", "m", now=2.0)
