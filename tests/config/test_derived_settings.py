"""Settings of derived data: each refused when what it needs is missing, naming the setting."""

from __future__ import annotations

import pytest

from coinfeed.config import ConfigError, load_settings

SYMBOL = "BITSTAMP_SPOT_BTC_USD"


KEY = "5c3f9a1e-7d2b-4f60-9e81-a0b1c2d3e4f5"  # long enough not to match inside messages


def load(**cli: object) -> object:
    return load_settings(cli={"symbols": SYMBOL, **cli}, env={"COINAPI_KEY": KEY})


def test_derived_settings_parse_and_normalize() -> None:
    settings = load(
        bars="1sec,1MIN", bar_grace="0", book_snapshots="10@1s,50@500ms",
        types="trade,book,ohlcv,exrate", ohlcv_periods="1min,5SEC",
    )  # fmt: skip
    assert settings.bars == ("1SEC", "1MIN")  # type: ignore[attr-defined]
    assert settings.bar_grace == 0  # type: ignore[attr-defined]
    assert settings.book_snapshots == ("10@1s", "50@500ms")  # type: ignore[attr-defined]
    assert settings.ohlcv_periods == ("1MIN", "5SEC")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cli", "setting", "words"),
    [
        ({"bars": "1MIN", "types": "quote,book"}, "bars", "add trade to types"),
        ({"book_snapshots": "10@1s", "types": "trade"}, "book_snapshots", "add book to types"),
        ({"types": "exrate", "symbols": "SOMETHING"}, "types", "asset pair"),
    ],
)
def test_a_feature_without_what_it_needs_exits_naming_the_setting(
    cli: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**cli)
    assert caught.value.setting == setting and words in str(caught.value)
