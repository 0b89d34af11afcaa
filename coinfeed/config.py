"""Settings: one immutable, validated record built from defaults, a TOML file, env and flags.

How this works: ``SETTINGS`` is the single table of setting definitions (name, parser, default,
help). Everything else is generated from it: the TOML keys (``name``), the environment names
(``COINFEED_NAME``), the command-line flags (``--name``, built in ``cli.py``), the ``--help``
text and the validation. ``load_settings`` stacks the layers (defaults < file < environment <
flags), runs each raw value through its parser and raises :class:`ConfigError` naming the
setting in all its spellings when one is wrong.

The API key is the exception to the naming rule on purpose: it is read from ``COINAPI_KEY`` or
from the file named by ``api_key_file`` (which wins when set, being the explicit choice), never
from argv, and it lives in a :class:`Secret` whose repr is ``Secret('***')``.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

API_KEY_ENV: Final = "COINAPI_KEY"
TRANSPORTS: Final = ("direct", "websockets", "trio-websocket")
"""WebSocket clients coinfeed can use (``transport`` setting): its own RFC 6455 framing on a trio
stream (``direct``), websockets' trio client, trio-websocket."""
DEBUG_TOKEN_ENV: Final = "COINFEED_DEBUG_TOKEN"
"""Bearer token for /api/debug/* when the listener is not on loopback; environment only."""
CONFIG_ENV: Final = "COINFEED_CONFIG"
ENV_PREFIX: Final = "COINFEED_"
DATA_TYPES: Final = ("trade", "quote", "book", "book5", "book20", "book50")
LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
SINK_FORMS: Final = "jsonl:- (stdout), jsonl:PATH, sqlite:PATH or redis://HOST:PORT/DB"


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
class ListenAddress:
    """A ``HOST:PORT`` to listen on; IPv6 hosts are written ``[::1]:8080``."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.define(auto_exc=True)
class ConfigError(Exception):
    """An invalid or missing setting; ``str()`` names it as it is spelled in every layer."""

    setting: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return (
            f"invalid setting {self.setting!r} ({spellings(self.setting)}): {self.message}{where}"
        )


class _Invalid(ValueError):
    """Raised by a parser; ``load_settings`` turns it into a ConfigError naming the setting."""


Parser = Callable[[object], Any]


@attrs.frozen
class SettingDef:
    """One row of the settings table: everything the layers need to know about a setting."""

    name: str
    parse: Parser
    default: object
    help: str
    metavar: str = "VALUE"
    # Extra flag spellings, e.g. the documented ``--sink`` next to the rule's ``--sinks``.
    aliases: tuple[str, ...] = ()
    repeatable: bool = False

    @property
    def flag(self) -> str:
        """The command-line spelling, ``--some-name``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment spelling, ``COINFEED_SOME_NAME``."""
        return ENV_PREFIX + self.name.upper()


# ---------------------------------------------------------------------------------------------
# Parsers: raw value (str from env/flags, or a TOML value, or an already-typed value) -> typed
# ---------------------------------------------------------------------------------------------


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:76] + "...'"


def _text(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise _Invalid(f"must be {what} (a string), got {_show(raw)}")
    return raw.strip()


def _url(*schemes: str) -> Parser:
    accepted = " or ".join(f"{scheme}://" for scheme in schemes)

    def parse(raw: object) -> str:
        text = _text(raw, f"a {accepted} URL")
        try:
            parts = urlsplit(text)
            valid = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise _Invalid(f"must be a {accepted} URL with a host, got {_show(raw)}")
        return text

    return parse


def _integer(low: int, high: int | None = None) -> Parser:
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
            raise _Invalid(f"must be {wanted}, got {_show(raw)}")
        return value

    return parse


def _seconds(*, zero_ok: bool = False) -> Parser:
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
            raise _Invalid(f"must be {wanted}, got {_show(raw)}")
        return value

    return parse


def _optional(parse_value: Parser) -> Parser:
    def parse(raw: object) -> Any:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            return None
        try:
            return parse_value(raw)
        except _Invalid as error:
            raise _Invalid(f"{error}; 'none' unsets it") from None

    return parse


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise _Invalid(f"must be true or false (also 1/0, yes/no), got {_show(raw)}")


def _choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> Parser:
    def parse(raw: object) -> str:
        value = normalize(_text(raw, "one of " + ", ".join(choices)))
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {_show(raw)}")
        return value

    return parse


def _list(parse_item: Callable[[str], str], what: str) -> Parser:
    """A list from a comma string (env, flags, file) or an array (file); de-duplicated."""

    def parse(raw: object) -> tuple[str, ...]:
        if isinstance(raw, str):
            items: list[object] = list(raw.split(","))
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            raise _Invalid(f"must be a comma-separated list of {what}, got {_show(raw)}")
        values: dict[str, None] = {}
        for position, item in enumerate(items, start=1):
            if not isinstance(item, str):
                raise _Invalid(f"item {position} must be a string, got {_show(item)}")
            if not item.strip():
                raise _Invalid(f"item {position} is empty in {_show(raw)}; expected {what}")
            values[parse_item(item.strip())] = None
        return tuple(values)

    return parse


def _symbol(item: str) -> str:
    # coinfeed appends the ``$`` for an exact match itself; accept one written by the user.
    symbol = item.removesuffix("$")
    if not symbol or any(c.isspace() or c in ",$" for c in symbol):
        raise _Invalid(
            f"{item!r} is not a symbol id: expected an exact id such as BITSTAMP_SPOT_BTC_USD"
        )
    return symbol


def _data_type(item: str) -> str:
    if item.lower() not in DATA_TYPES:
        raise _Invalid(f"unknown data type {item!r}: accepted are {', '.join(DATA_TYPES)}")
    return item.lower()


def _sink(item: str) -> str:
    scheme, colon, rest = item.partition(":")
    if item == "jsonl:-" or (scheme in ("jsonl", "sqlite") and colon and rest and rest != "-"):
        return item
    if item.startswith("redis://"):
        try:
            parts = urlsplit(item)
            host, port = parts.hostname, parts.port or 6379
            database = int(parts.path.strip("/") or 0)
        except ValueError:
            host, port, database = None, 0, -1
        if host and database >= 0 and "@" not in parts.netloc and not parts.query:
            return f"redis://{f'[{host}]' if ':' in host else host}:{port}/{database}"
    raise _Invalid(f"unknown sink {item!r}: accepted are {SINK_FORMS}")


def _listen(raw: object) -> ListenAddress | None:
    if raw is None or isinstance(raw, ListenAddress):
        return raw
    text = _text(raw, "HOST:PORT or off")
    if text.lower() == "off":
        return None
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a bare IPv6 address is ambiguous; it must be bracketed
    if not colon or not host or any(c.isspace() for c in host) or not port_text.isdigit():
        raise _Invalid(f"must be HOST:PORT ([::1]:8080 for IPv6) or off, got {_show(raw)}")
    port = int(port_text)
    if port > 65535:
        raise _Invalid(f"port must be from 0 to 65535, got {_show(raw)}")
    return ListenAddress(host, port)


def _shard(raw: object) -> Shard | None:
    if raw is None or isinstance(raw, Shard):
        return raw
    text = _text(raw, "INDEX/COUNT")
    index_text, slash, count_text = text.partition("/")
    if not (slash and index_text.isdigit() and count_text.isdigit()):
        raise _Invalid(f"must be INDEX/COUNT like 0/3, got {_show(raw)}")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise _Invalid(f"needs COUNT >= 1 and 0 <= INDEX < COUNT, got {_show(raw)}")
    return Shard(index, count)


def _path(raw: object) -> str:
    text = _text(raw, "a file path")
    if not text:
        raise _Invalid("must be a file path, got an empty string")
    return text


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

_S = SettingDef
SETTINGS: Final[tuple[SettingDef, ...]] = (
    _S("ws_url", _url("ws", "wss"), "wss://ws.coinapi.io/v1/", "WebSocket endpoint", "URL"),
    _S("transport", _choice(TRANSPORTS, str.lower), "direct",
       "WebSocket client: " + ", ".join(TRANSPORTS), "NAME"),
    _S("rest_url", _url("http", "https"), "https://rest.coinapi.io", "REST endpoint", "URL"),
    _S("symbols", _list(_symbol, "exact symbol ids"), (), "exact symbol ids (required)", "ID,..."),
    _S("types", _list(_data_type, "data types"), ("trade", "quote", "book"),
       "data types: " + ", ".join(DATA_TYPES), "TYPE,..."),
    _S("sinks", _list(_sink, SINK_FORMS), ("jsonl:-",), "where events go: " + SINK_FORMS
       + "; repeatable", "SPEC", aliases=("--sink",), repeatable=True),
    _S("http", _listen, ListenAddress("127.0.0.1", 8080),
       "listener for health, metrics and debug (HOST:PORT or off)", "HOST:PORT"),
    _S("connect_timeout", _seconds(), 30.0, "seconds for connect + handshake + subscribe", "S"),
    _S("stale_after", _seconds(), 10.0, "seconds without any frame before reconnecting", "S"),
    _S("backoff_max", _seconds(), 30.0, "cap of the reconnect backoff, seconds", "S"),
    _S("shutdown_timeout", _seconds(), 10.0, "seconds from SIGTERM to exit", "S"),
    _S("duration", _optional(_seconds()), None, "stop cleanly after this many seconds", "S"),
    _S("queue_capacity", _integer(1), 500, "capacity of the raw frame channel, frames", "N"),
    _S("sink_queue_capacity", _integer(1), 4000, "capacity of each sink's channel, events", "N"),
    _S("sink_batch_size", _integer(1), 1000, "events a sink writes per batch at most", "N"),
    _S("sink_flush_interval", _seconds(), 0.5,
       "seconds a sink may hold a partial batch before writing it", "S"),
    _S("redis_maxlen", _integer(1), 100_000,
       "approximate length each Redis stream is trimmed to (XADD MAXLEN ~)", "N"),
    _S("shard", _optional(_shard), None,
       "INDEX/COUNT: subscribe only this replica's share of the symbols", "INDEX/COUNT"),
    _S("recovery_concurrency", _integer(1, 10), 2, "REST calls in flight at most", "N"),
    _S("recovery_max_attempts", _integer(1), 5, "attempts before a gap is unrecovered", "N"),
    _S("recovery_pause", _seconds(zero_ok=True), 0.2, "seconds between REST batches", "S"),
    _S("recovery_pending_max", _integer(1), 1000, "cap of pending recovery work items", "N"),
    _S("dedup_capacity", _integer(1000), 200_000, "trade uuids remembered for de-dup", "N"),
    _S("max_frame_bytes", _integer(1024), 8 * 1024 * 1024, "larger frames are skipped", "N"),
    _S("healthy_after", _seconds(), 30.0,
       "seconds a connection must stay healthy before the backoff resets", "S"),
    _S("resubscribe_limit", _integer(1), 10, "scope messages per resubscribe_window", "N"),
    _S("resubscribe_window", _seconds(), 10.0, "seconds of the resubscribe budget", "S"),
    _S("stats_interval", _seconds(), 10.0, "seconds between stats log lines", "S"),
    _S("interim_rest_book", _boolean, True, "publish the REST book while a book resyncs",
       "BOOL"),
    _S("apikey_in_hello", _boolean, False,
       "also send the key in the hello (legacy SDK style; the header is always sent)", "BOOL"),
    _S("debug_tracemalloc", _boolean, False,
       "trace allocations so /api/debug/memory can list the top ones (slower)", "BOOL"),
    _S("log_format", _choice(("text", "json"), str.lower), "text", "text or json", "FORMAT"),
    _S("log_level", _choice(LOG_LEVELS, str.upper), "INFO", ", ".join(LOG_LEVELS), "LEVEL"),
    _S("api_key_file", _optional(_path), None,
       "file holding the API key (wins over COINAPI_KEY)", "PATH"),
)  # fmt: skip
SETTINGS_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}
_DEFAULTS: Final[dict[str, Any]] = {setting.name: setting.default for setting in SETTINGS}


def spellings(name: str) -> str:
    """How a setting is written on the command line and in the environment, for messages."""
    if name == "config":
        return f"--config / {CONFIG_ENV}"
    if name == "api_key":
        return f"{API_KEY_ENV} or api_key_file"
    setting = SETTINGS_BY_NAME.get(name)
    if setting is None:
        return name
    return " / ".join((*setting.aliases, setting.flag, setting.env))


def format_value(value: object) -> str:
    """A value as it would be typed in the environment or on the command line."""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "none" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class Settings:
    """The validated, effective configuration of one coinfeed process."""

    ws_url: str = _DEFAULTS["ws_url"]
    transport: str = _DEFAULTS["transport"]
    rest_url: str = _DEFAULTS["rest_url"]
    symbols: tuple[str, ...] = _DEFAULTS["symbols"]
    types: tuple[str, ...] = _DEFAULTS["types"]
    sinks: tuple[str, ...] = _DEFAULTS["sinks"]
    http: ListenAddress | None = _DEFAULTS["http"]
    connect_timeout: float = _DEFAULTS["connect_timeout"]
    stale_after: float = _DEFAULTS["stale_after"]
    backoff_max: float = _DEFAULTS["backoff_max"]
    shutdown_timeout: float = _DEFAULTS["shutdown_timeout"]
    duration: float | None = _DEFAULTS["duration"]
    queue_capacity: int = _DEFAULTS["queue_capacity"]
    sink_queue_capacity: int = _DEFAULTS["sink_queue_capacity"]
    sink_batch_size: int = _DEFAULTS["sink_batch_size"]
    sink_flush_interval: float = _DEFAULTS["sink_flush_interval"]
    redis_maxlen: int = _DEFAULTS["redis_maxlen"]
    shard: Shard | None = _DEFAULTS["shard"]
    recovery_concurrency: int = _DEFAULTS["recovery_concurrency"]
    recovery_max_attempts: int = _DEFAULTS["recovery_max_attempts"]
    recovery_pause: float = _DEFAULTS["recovery_pause"]
    recovery_pending_max: int = _DEFAULTS["recovery_pending_max"]
    dedup_capacity: int = _DEFAULTS["dedup_capacity"]
    max_frame_bytes: int = _DEFAULTS["max_frame_bytes"]
    healthy_after: float = _DEFAULTS["healthy_after"]
    resubscribe_limit: int = _DEFAULTS["resubscribe_limit"]
    resubscribe_window: float = _DEFAULTS["resubscribe_window"]
    stats_interval: float = _DEFAULTS["stats_interval"]
    interim_rest_book: bool = _DEFAULTS["interim_rest_book"]
    apikey_in_hello: bool = _DEFAULTS["apikey_in_hello"]
    debug_tracemalloc: bool = _DEFAULTS["debug_tracemalloc"]
    log_format: str = _DEFAULTS["log_format"]
    log_level: str = _DEFAULTS["log_level"]
    api_key_file: str | None = _DEFAULTS["api_key_file"]
    api_key: Secret | None = None
    debug_token: Secret | None = None
    """From ``COINFEED_DEBUG_TOKEN`` only: required for /api/debug/* off loopback."""
    config_file: str | None = None

    def __attrs_post_init__(self) -> None:
        # Built directly (tests do), the record is held to the same rules as load_settings.
        for setting in SETTINGS:
            try:
                setting.parse(getattr(self, setting.name))
            except _Invalid as error:
                raise ConfigError(setting.name, str(error)) from None

    @property
    def http_enabled(self) -> bool:
        """Whether the HTTP listener runs (``--http off`` disables it)."""
        return self.http is not None

    @property
    def http_host(self) -> str:
        """Host of the HTTP listener (meaningful when ``http_enabled``)."""
        return self.http.host if self.http else ""

    @property
    def http_port(self) -> int:
        """Port of the HTTP listener, 0 for any free port (meaningful when ``http_enabled``)."""
        return self.http.port if self.http else 0

    def redacted(self) -> dict[str, object]:
        """Every effective value, safe to print: the key is ``***`` when set, else None."""
        values: dict[str, object] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if isinstance(value, tuple):
                value = list(value)
            elif setting.name == "http":
                value = "off" if value is None else str(value)
            elif isinstance(value, Shard):
                value = str(value)
            values[setting.name] = value
        values["api_key"] = "***" if self.api_key is not None else None
        values["api_key_source"] = (
            None if self.api_key is None else "api_key_file" if self.api_key_file else API_KEY_ENV
        )
        values["debug_token"] = "***" if self.debug_token is not None else None
        values["config_file"] = self.config_file
        return values


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_settings(
    *,
    cli: Mapping[str, object],
    env: Mapping[str, str],
    require_symbols: bool = True,
    require_key: bool = True,
    defaults: Mapping[str, object] | None = None,
) -> Settings:
    """Build the settings from defaults < TOML file < ``COINFEED_*`` env < ``cli`` values.

    ``cli`` maps setting names (and ``config``) to raw values; None means "not given".
    ``defaults`` overrides table defaults (``demo`` uses it). Reads no ``os.environ``.
    """
    known_secrets = [env.get(API_KEY_ENV, "").strip(), env.get(DEBUG_TOKEN_ENV, "").strip()]
    try:
        return _load(cli, env, require_symbols, require_key, defaults or {}, known_secrets)
    except ConfigError as error:
        message = error.message
        for secret in known_secrets:
            if secret:
                message = message.replace(secret, "***")
        raise ConfigError(error.setting, message, error.source) from None


def _load(
    cli: Mapping[str, object],
    env: Mapping[str, str],
    require_symbols: bool,
    require_key: bool,
    defaults: Mapping[str, object],
    known_secrets: list[str],
) -> Settings:
    given = {name: value for name, value in cli.items() if value is not None}
    config_file = given.pop("config", None) or env.get(CONFIG_ENV) or None
    unknown = set(given) - set(SETTINGS_BY_NAME)
    if unknown:
        raise TypeError(f"load_settings: unknown setting names {sorted(unknown)}")

    raw: dict[str, tuple[object, str | None]] = {
        name: (value, None) for name, value in {**_DEFAULTS, **defaults}.items()
    }
    if config_file is not None:
        config_file = str(config_file)
        for name, value in read_config_file(config_file).items():
            raw[name] = (value, f"the config file {config_file}")
    for setting in SETTINGS:
        if env.get(setting.env, "").strip():
            raw[setting.name] = (env[setting.env], "the environment")
    for name, value in given.items():
        raw[name] = (value, "the command line")

    values: dict[str, Any] = {}
    api_key = Secret(known_secrets[0]) if known_secrets[0] else None
    # The key file first, so its content is known (and redacted) before any other message.
    for setting in sorted(SETTINGS, key=lambda s: s.name != "api_key_file"):
        value, source = raw[setting.name]
        try:
            values[setting.name] = setting.parse(value)
        except _Invalid as error:
            raise ConfigError(setting.name, str(error), source) from None
        if setting.name == "api_key_file" and values["api_key_file"] is not None:
            api_key = read_key_file(values["api_key_file"])
            known_secrets.append(api_key.reveal())

    if require_symbols and not values["symbols"]:
        raise ConfigError(
            "symbols", "at least one exact symbol id is required, e.g. BITSTAMP_SPOT_BTC_USD"
        )
    if require_key and api_key is None:
        raise ConfigError("api_key", f"{API_KEY_ENV} is not set (or set api_key_file)")
    debug_token = Secret(known_secrets[1]) if known_secrets[1] else None
    return Settings(**values, api_key=api_key, debug_token=debug_token, config_file=config_file)


def read_config_file(path: str) -> dict[str, object]:
    """The settings in a TOML file; unknown keys are an error (they are usually typos)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError("config", f"cannot read {path!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path!r} is not valid TOML: {error}") from None
    for key in data:
        if key in SETTINGS_BY_NAME:
            continue
        if "key" in key.lower() and "api" in key.lower():
            hint = f"the API key is read from {API_KEY_ENV} or the file named by api_key_file"
        else:
            close = difflib.get_close_matches(key, SETTINGS_BY_NAME, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see `coinfeed run --help`"
        raise ConfigError("config", f"unknown key {key!r} in {path!r}: {hint}")
    return data


def read_key_file(path: str) -> Secret:
    """The API key held in ``path`` (surrounding whitespace stripped); never echoes content."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError("api_key_file", f"cannot read {path!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("api_key_file", f"{path!r} is not UTF-8 text") from None
    if not text or any(c.isspace() for c in text):
        raise ConfigError("api_key_file", f"{path!r} must hold only the key, on one line")
    return Secret(text)


def unknown_environment(env: Mapping[str, str]) -> dict[str, str | None]:
    """``COINFEED_*`` variables that no setting reads, each with a close known name or None.

    Not an error (the environment is shared with other tools), but worth a warning.
    """
    known = {setting.env: setting.name for setting in SETTINGS} | {
        CONFIG_ENV: "config",
        DEBUG_TOKEN_ENV: "debug_token",
    }
    unknown: dict[str, str | None] = {}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).lower(), known.values())
            unknown[name] = ENV_PREFIX + close[0].upper() if close else None
    return unknown
