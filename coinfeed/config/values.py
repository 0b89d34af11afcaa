"""Setting values: the records a setting can hold, and the parsers that check raw values.

A parser takes a raw value (a string from the environment or a flag, a TOML value, or an
already-typed value) and returns the typed value, or raises :class:`InvalidValue` with a message
that says what was expected; the loader turns that into a ``ConfigError`` naming the setting.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from coinfeed.core.bars import parse_period
from coinfeed.core.booktop import parse_schedule
from coinfeed.logs import redact
from coinfeed.sinks.base import SinkSpecError
from coinfeed.sinks.open import ACCEPTED_FORMS, parse_sink_spec

API_KEY_ENV: Final = "COINAPI_KEY"
TRANSPORTS: Final = ("direct", "websockets", "trio-websocket")
"""WebSocket clients coinfeed can use (``transport`` setting): its own RFC 6455 framing on a trio
stream (``direct``), websockets' trio client, trio-websocket."""
DEBUG_TOKEN_ENV: Final = "COINFEED_DEBUG_TOKEN"
"""Bearer token for /api/debug/* when the listener is not on loopback; environment only."""
CONFIG_ENV: Final = "COINFEED_CONFIG"
ENV_PREFIX: Final = "COINFEED_"
DATA_TYPES: Final = (
    "trade", "quote", "book", "book5", "book20", "book50", "ohlcv", "exrate"
)  # fmt: skip
JSONL_FSYNC: Final = ("never", "batch")
LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
SINK_FORMS: Final = ACCEPTED_FORMS


@attrs.frozen(repr=False)
class Secret:
    """A value that must never be printed: repr and str show ``***``; ``reveal()`` returns it."""

    _value: str

    def reveal(self) -> str:
        """Return the secret itself, for the one place that has to send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@attrs.frozen
class Shard:
    """``INDEX/COUNT``: this replica takes the symbols whose stable hash lands on ``index``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@attrs.frozen
class Retention:
    """How much of a recording to keep: the oldest segments go beyond ``max_bytes`` in total
    or once older than ``max_seconds`` (either may be None: no limit of that kind)."""

    max_bytes: int | None = None
    max_seconds: float | None = None

    def __str__(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(format_bytes(self.max_bytes))
        if self.max_seconds is not None:
            parts.append(format_age(self.max_seconds))
        return ",".join(parts)


@attrs.frozen
class ListenAddress:
    """A ``HOST:PORT`` to listen on; IPv6 hosts are written ``[::1]:8080``."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class InvalidValue(ValueError):
    """Raised by a parser; ``load_settings`` turns it into a ConfigError naming the setting."""


Parser = Callable[[object], Any]


# ---------------------------------------------------------------------------------------------
# Parsers: raw value (str from env/flags, or a TOML value, or an already-typed value) -> typed
# ---------------------------------------------------------------------------------------------


def show(raw: object) -> str:
    # Redacted, then cut: a cut first could keep a password whose closing "@" it removed.
    text = redact(repr(raw), ())
    return text if len(text) <= 80 else text[:76] + "...'"


def as_text(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidValue(f"must be {what} (a string), got {show(raw)}")
    return raw.strip()


def url(*schemes: str) -> Parser:
    accepted = " or ".join(f"{scheme}://" for scheme in schemes)

    def parse(raw: object) -> str:
        text = as_text(raw, f"a {accepted} URL")
        try:
            parts = urlsplit(text)
            valid = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise InvalidValue(f"must be a {accepted} URL with a host, got {show(raw)}")
        if "#" in text:  # a fragment is never sent to a server: the URL means something else
            raise InvalidValue(f"must not have a #fragment, got {show(raw)}")
        return text

    return parse


def integer(low: int, high: int | None = None) -> Parser:
    wanted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(raw: object) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                value = None
        if value is None or value < low or (high is not None and value > high):
            raise InvalidValue(f"must be {wanted}, got {show(raw)}")
        return value

    return parse


def seconds(*, zero_ok: bool = False) -> Parser:
    wanted = "a number of seconds " + (">= 0" if zero_ok else "> 0")

    def parse(raw: object) -> float:
        value = math.nan
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise InvalidValue(f"must be {wanted}, got {show(raw)}")
        return value

    return parse


def optional(parse_value: Parser) -> Parser:
    def parse(raw: object) -> Any:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            return None
        try:
            return parse_value(raw)
        except InvalidValue as error:
            raise InvalidValue(f"{error}; 'none' unsets it") from None

    return parse


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise InvalidValue(f"must be true or false (also 1/0, yes/no), got {show(raw)}")


def choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> Parser:
    def parse(raw: object) -> str:
        value = normalize(as_text(raw, "one of " + ", ".join(choices)))
        if value not in choices:
            raise InvalidValue(f"must be one of {', '.join(choices)}, got {show(raw)}")
        return value

    return parse


def comma_list(parse_item: Callable[[str], str], what: str) -> Parser:
    """A list from a comma string (env, flags, file) or an array (file); de-duplicated."""

    def parse(raw: object) -> tuple[str, ...]:
        if isinstance(raw, str):
            items: list[object] = list(raw.split(","))
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            raise InvalidValue(f"must be a comma-separated list of {what}, got {show(raw)}")
        values: dict[str, None] = {}
        for position, item in enumerate(items, start=1):
            if not isinstance(item, str):
                raise InvalidValue(f"item {position} must be a string, got {show(item)}")
            if not item.strip():
                raise InvalidValue(f"item {position} is empty in {show(raw)}; expected {what}")
            values[parse_item(item.strip())] = None
        return tuple(values)

    return parse


def symbol_id(item: str) -> str:
    # coinfeed appends the ``$`` for an exact match itself; accept one written by the user.
    symbol = item.removesuffix("$")
    if not symbol or any(c.isspace() or c in ",$" for c in symbol):
        raise InvalidValue(
            f"{item!r} is not a symbol id: expected an exact id such as BITSTAMP_SPOT_BTC_USD"
        )
    return symbol


def bar_period(item: str) -> str:
    try:
        return parse_period(item).period_id
    except ValueError as error:
        raise InvalidValue(str(error)) from None


_OHLCV_PERIOD = re.compile(r"[1-9][0-9]*(SEC|MIN|HRS|DAY|MTH|YRS)")


def ohlcv_period(item: str) -> str:
    period_id = item.upper()
    if _OHLCV_PERIOD.fullmatch(period_id) is None:
        raise InvalidValue(
            f"{item!r} is not a CoinAPI period id (a count and SEC, MIN, HRS, DAY, MTH or YRS, "
            "e.g. 1MIN)"
        )
    return period_id


def book_snapshot(item: str) -> str:
    try:
        return str(parse_schedule(item))
    except ValueError as error:
        raise InvalidValue(str(error)) from None


def data_type(item: str) -> str:
    if item.lower() not in DATA_TYPES:
        raise InvalidValue(f"unknown data type {item!r}: accepted are {', '.join(DATA_TYPES)}")
    return item.lower()


def sink_spec(item: str) -> str:
    try:
        return parse_sink_spec(item).unredacted  # a Redis password kept, to connect with
    except SinkSpecError as error:
        raise InvalidValue(str(error)) from None


def listen_address(raw: object) -> ListenAddress | None:
    if raw is None or isinstance(raw, ListenAddress):
        return raw
    text = as_text(raw, "HOST:PORT or off")
    if text.lower() == "off":
        return None
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a bare IPv6 address is ambiguous; it must be bracketed
    if not colon or not host or any(c.isspace() for c in host) or not port_text.isdigit():
        raise InvalidValue(f"must be HOST:PORT ([::1]:8080 for IPv6) or off, got {show(raw)}")
    port = int(port_text)
    if port > 65535:
        raise InvalidValue(f"port must be from 0 to 65535, got {show(raw)}")
    return ListenAddress(host, port)


def shard(raw: object) -> Shard | None:
    if raw is None or isinstance(raw, Shard):
        return raw
    text = as_text(raw, "INDEX/COUNT")
    index_text, slash, count_text = text.partition("/")
    if not (slash and index_text.isdigit() and count_text.isdigit()):
        raise InvalidValue(f"must be INDEX/COUNT like 0/3, got {show(raw)}")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise InvalidValue(f"needs COUNT >= 1 and 0 <= INDEX < COUNT, got {show(raw)}")
    return Shard(index, count)


def path(raw: object) -> str:
    text = as_text(raw, "a file path")
    if not text:
        raise InvalidValue("must be a file path, got an empty string")
    return text


def readable_file(raw: object) -> str:
    text = path(raw)
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise InvalidValue(f"must be a readable file, got {show(raw)}")
    return text


def directory_or_off(raw: object) -> str | None:
    """A directory path (created when needed, so it need not exist yet), or ``off``."""
    if raw is None:
        return None
    text = as_text(raw, "a directory path or off")
    if text.strip().lower() in ("off", "none"):
        return None
    if not text.strip():
        raise InvalidValue("must be a directory path or off, got an empty string")
    if os.path.exists(text) and not os.path.isdir(text):
        raise InvalidValue(f"must be a directory path or off, got {show(raw)} (not a directory)")
    return text


_BYTE_UNITS: Final = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}  # fmt: skip
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _split_number(text: str) -> tuple[str, str]:
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return number.strip(), text[len(number) :].strip().lower()


def _byte_count(text: str) -> int | None:
    number, unit = _split_number(text)
    if unit not in _BYTE_UNITS:
        return None
    try:
        value = float(number)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value * _BYTE_UNITS[unit])


def format_bytes(n: int) -> str:
    """``n`` in the largest unit that writes it whole (``256MiB``, ``500MB``), else ``nB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
        size = _BYTE_UNITS[unit.lower()]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def format_age(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        size = _AGE_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def byte_size(low: int) -> Parser:
    """A number of bytes, with an optional unit: KB/MB/GB/TB (powers of 10) or KiB/MiB/GiB/TiB."""
    wanted = f"a size in bytes >= {low} (e.g. 256MiB)"

    def parse(raw: object) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str):
            value = _byte_count(raw.strip())
        if value is None or value < low:
            raise InvalidValue(f"must be {wanted}, got {show(raw)}")
        return value

    return parse


def retention(raw: object) -> Retention | None:
    """``off``, or a total size and/or an age, comma-separated: ``50GiB``, ``7d``, ``50GiB,7d``
    (ages in s, m, h or d)."""
    if raw is None or isinstance(raw, Retention):
        return raw
    text = as_text(raw, "a size and/or an age, or off")
    if text.lower() in ("off", "none", ""):
        return None
    wanted = f"must be a size (50GiB) and/or an age (7d), comma-separated, or off, got {show(raw)}"
    max_bytes: int | None = None
    max_seconds: float | None = None
    for part in (item.strip() for item in text.split(",")):
        number, unit = _split_number(part)
        if unit in _AGE_UNITS and max_seconds is None:
            try:
                age = float(number) * _AGE_UNITS[unit]
            except ValueError:
                raise InvalidValue(wanted) from None
            if not math.isfinite(age) or age <= 0:
                raise InvalidValue(wanted)
            max_seconds = age
        elif unit in _BYTE_UNITS and unit and max_bytes is None:  # a bare number is ambiguous
            size = _byte_count(part)
            if not size:
                raise InvalidValue(wanted)
            max_bytes = size
        else:
            raise InvalidValue(wanted)
    return Retention(max_bytes, max_seconds)
