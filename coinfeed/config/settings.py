"""Settings: the one table of setting definitions and the validated, immutable record.

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

from typing import Any, Final

import attrs

from coinfeed.config import values as p
from coinfeed.config.values import (
    API_KEY_ENV,
    CONFIG_ENV,
    DATA_TYPES,
    ENV_PREFIX,
    JSONL_FSYNC,
    LOG_LEVELS,
    SINK_FORMS,
    TRANSPORTS,
    ListenAddress,
    Parser,
    Retention,
    Secret,
    Shard,
)
from coinfeed.core.protocol import exrate_pairs
from coinfeed.logs import redact
from coinfeed.sinks.open import SinkOptions


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
# The table
# ---------------------------------------------------------------------------------------------

STALE_AFTER_MIN: Final = 1.0
"""Least ``stale_after`` an operator may set: CoinAPI sends a heartbeat only after a second of
silence, so a shorter watchdog would reconnect a quiet but healthy feed. Enforced where settings
are loaded for a command (``cli.py``), not by the parser: in-process tests drive the watchdog
faster with feeds that never go quiet, and ``Settings`` re-runs the parsers."""

_S = SettingDef
SETTINGS: Final[tuple[SettingDef, ...]] = (
    _S("ws_url", p.url("ws", "wss"), "wss://ws.coinapi.io/v1/", "WebSocket endpoint", "URL"),
    _S("transport", p.choice(TRANSPORTS, str.lower), "direct",
       "WebSocket client: " + ", ".join(TRANSPORTS), "NAME"),
    _S("rest_url", p.url("http", "https"), "https://rest.coinapi.io", "REST endpoint", "URL"),
    _S("symbols", p.comma_list(p.symbol_id, "exact symbol ids"), (),
       "exact symbol ids (required)", "ID,..."),
    _S("types", p.comma_list(p.data_type, "data types"), ("trade", "quote", "book"),
       "data types: " + ", ".join(DATA_TYPES), "TYPE,..."),
    _S("sinks", p.comma_list(p.sink_spec, SINK_FORMS), ("jsonl:-",),
       "where events go: " + SINK_FORMS + "; repeatable", "SPEC", aliases=("--sink",),
       repeatable=True),
    _S("http", p.listen_address, ListenAddress("127.0.0.1", 8080),
       "listener for health, metrics and debug (HOST:PORT or off)", "HOST:PORT"),
    _S("ca_file", p.optional(p.readable_file), None,
       "CA certificates (PEM) trusted for CoinAPI's WebSocket and REST, besides the system's",
       "PATH"),
    _S("connect_timeout", p.seconds(), 30.0, "seconds for connect + handshake + subscribe", "S"),
    _S("stale_after", p.seconds(), 10.0,
       f"seconds without any frame before reconnecting (at least {STALE_AFTER_MIN:g}: CoinAPI "
       "sends a heartbeat after each second of silence)", "S"),
    _S("backoff_max", p.seconds(), 30.0, "cap of the reconnect backoff, seconds", "S"),
    _S("shutdown_timeout", p.seconds(), 10.0, "seconds from SIGTERM to exit", "S"),
    _S("duration", p.optional(p.seconds()), None, "stop cleanly after this many seconds", "S"),
    _S("queue_capacity", p.integer(1), 500, "capacity of the raw frame channel, frames", "N"),
    _S("queue_full_wait", p.seconds(zero_ok=True), 0.0,
       "seconds the reader may wait for the processor to take a full raw queue before reading "
       "on and dropping, once per full queue (0: never; a wait holds the server back)", "S"),
    _S("sink_queue_capacity", p.integer(1), 4000, "capacity of each sink's channel, events", "N"),
    _S("sink_batch_size", p.integer(1), 1000, "events a sink writes per batch at most", "N"),
    _S("sink_flush_interval", p.seconds(), 0.5,
       "seconds a sink may hold a partial batch before writing it", "S"),
    _S("sink_stall_after", p.seconds(), 5.0,
       "seconds a sink may hold events without progress before /ready reports it", "S"),
    _S("jsonl_fsync", p.choice(JSONL_FSYNC, str.lower), "never",
       "JSON Lines durability: never (page cache) or batch (fsync after each batch)", "WHEN"),
    _S("parquet_roll_seconds", p.seconds(), 60.0,
       "seconds of events a Parquet sink spools before converting them into files", "S"),
    _S("parquet_roll_rows", p.integer(1000), 50_000,
       "events a Parquet sink spools at most before converting them (bounds the memory a "
       "conversion takes)", "N"),
    _S("bars", p.comma_list(p.bar_period, "period ids"), (),
       "emit bar events built from trades for these periods (CoinAPI ids dividing a day: "
       "1SEC, 5SEC, 1MIN, 15MIN, 1HRS, 1DAY, ...)", "PERIOD,..."),
    _S("bar_grace", p.seconds(zero_ok=True), 2.0,
       "seconds after a period ends before its bar is emitted (late trades revise it)", "S"),
    _S("book_snapshots", p.comma_list(p.book_snapshot, "DEPTH@INTERVAL schedules"), (),
       "emit book_top events with the top DEPTH levels of each synced book every INTERVAL "
       "(e.g. 10@1s, 50@500ms); needs the book type", "DEPTH@INTERVAL,..."),
    _S("ohlcv_periods", p.comma_list(p.ohlcv_period, "period ids"), ("1MIN",),
       "periods of CoinAPI's ohlcv stream to subscribe (with the ohlcv type)", "PERIOD,..."),
    _S("redis_maxlen", p.integer(1), 100_000,
       "approximate length each Redis stream is trimmed to (XADD MAXLEN ~)", "N"),
    _S("redis_ca_file", p.optional(p.readable_file), None,
       "CA certificates (PEM) to verify a rediss:// server with", "PATH"),
    _S("redis_wait_replicas", p.integer(0), 0,
       "replicas that must confirm each Redis batch (WAIT) before it counts as written; 1 or "
       "more keeps a failover from losing entries", "N"),
    _S("shard", p.optional(p.shard), None,
       "INDEX/COUNT: subscribe only this replica's share of the symbols", "INDEX/COUNT"),
    _S("symbol_silent_after", p.seconds(), 60.0,
       "seconds a subscribed symbol may deliver nothing before it is reported silent", "S"),
    _S("recovery_concurrency", p.integer(1, 10), 2, "REST calls in flight at most", "N"),
    _S("recovery_max_attempts", p.integer(1), 5, "attempts before a gap is unrecovered", "N"),
    _S("recovery_pause", p.seconds(zero_ok=True), 0.2, "seconds between REST batches", "S"),
    _S("recovery_pending_max", p.integer(1), 1000, "cap of pending recovery work items", "N"),
    _S("recovery_stale_after", p.seconds(), 60.0,
       "seconds the oldest pending recovery may wait before /ready reports it", "S"),
    _S("state_dir", p.directory_or_off, "coinfeed-state",
       "directory of the restart checkpoint (off: no checkpoint, no restart backfill)", "DIR"),
    _S("restart_backfill_max", p.seconds(), 86_400.0,
       "longest outage before a restart that is backfilled over REST, seconds", "S"),
    _S("record", p.directory_or_off, None,
       "directory to record every frame and control item the processor takes, for `coinfeed "
       "replay` (off: no recording)", "DIR"),
    _S("record_flush_interval", p.seconds(), 1.0,
       "seconds recorded input may wait before it is compressed and written (what a kill -9 "
       "can lose)", "S"),
    _S("record_segment_seconds", p.seconds(), 3600.0,
       "seconds of recording per segment file", "S"),
    _S("record_segment_bytes", p.byte_size(1 << 20), 256 << 20,
       "bytes per segment file before the next one starts (KiB, MiB, GiB or KB, MB, GB)",
       "SIZE"),
    _S("record_retention", p.retention, None,
       "delete the oldest segments beyond a total size and/or an age, e.g. 50GiB,7d "
       "(off: keep every segment)", "SIZE,AGE"),
    _S("dedup_capacity", p.integer(1000), 200_000, "trade uuids remembered for de-dup", "N"),
    _S("max_frame_bytes", p.integer(1024), 8 * 1024 * 1024, "larger frames are skipped", "N"),
    _S("healthy_after", p.seconds(), 30.0,
       "seconds a connection must stay healthy before the backoff resets", "S"),
    _S("resubscribe_limit", p.integer(1), 10, "scope messages per resubscribe_window", "N"),
    _S("resubscribe_window", p.seconds(), 10.0, "seconds of the resubscribe budget", "S"),
    _S("stats_interval", p.seconds(), 10.0, "seconds between stats log lines", "S"),
    _S("interim_rest_book", p.boolean, True, "publish the REST book while a book resyncs",
       "BOOL"),
    _S("apikey_in_hello", p.boolean, False,
       "also send the key in the hello (legacy SDK style; the header is always sent)", "BOOL"),
    _S("debug_tracemalloc", p.boolean, False,
       "trace allocations so /api/debug/memory can list the top ones (slower)", "BOOL"),
    _S("log_format", p.choice(("text", "json"), str.lower), "text", "text or json", "FORMAT"),
    _S("log_level", p.choice(LOG_LEVELS, str.upper), "INFO", ", ".join(LOG_LEVELS), "LEVEL"),
    _S("api_key_file", p.optional(p.path), None,
       "file holding the API key (wins over COINAPI_KEY)", "PATH"),
)  # fmt: skip
SETTINGS_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}
DEFAULTS: Final[dict[str, Any]] = {setting.name: setting.default for setting in SETTINGS}


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

    ws_url: str = DEFAULTS["ws_url"]
    transport: str = DEFAULTS["transport"]
    rest_url: str = DEFAULTS["rest_url"]
    symbols: tuple[str, ...] = DEFAULTS["symbols"]
    types: tuple[str, ...] = DEFAULTS["types"]
    sinks: tuple[str, ...] = DEFAULTS["sinks"]
    http: ListenAddress | None = DEFAULTS["http"]
    ca_file: str | None = DEFAULTS["ca_file"]
    connect_timeout: float = DEFAULTS["connect_timeout"]
    stale_after: float = DEFAULTS["stale_after"]
    backoff_max: float = DEFAULTS["backoff_max"]
    shutdown_timeout: float = DEFAULTS["shutdown_timeout"]
    duration: float | None = DEFAULTS["duration"]
    queue_capacity: int = DEFAULTS["queue_capacity"]
    queue_full_wait: float = DEFAULTS["queue_full_wait"]
    sink_queue_capacity: int = DEFAULTS["sink_queue_capacity"]
    sink_batch_size: int = DEFAULTS["sink_batch_size"]
    sink_flush_interval: float = DEFAULTS["sink_flush_interval"]
    sink_stall_after: float = DEFAULTS["sink_stall_after"]
    jsonl_fsync: str = DEFAULTS["jsonl_fsync"]
    parquet_roll_seconds: float = DEFAULTS["parquet_roll_seconds"]
    parquet_roll_rows: int = DEFAULTS["parquet_roll_rows"]
    bars: tuple[str, ...] = DEFAULTS["bars"]
    bar_grace: float = DEFAULTS["bar_grace"]
    book_snapshots: tuple[str, ...] = DEFAULTS["book_snapshots"]
    ohlcv_periods: tuple[str, ...] = DEFAULTS["ohlcv_periods"]
    redis_maxlen: int = DEFAULTS["redis_maxlen"]
    redis_ca_file: str | None = DEFAULTS["redis_ca_file"]
    redis_wait_replicas: int = DEFAULTS["redis_wait_replicas"]
    shard: Shard | None = DEFAULTS["shard"]
    symbol_silent_after: float = DEFAULTS["symbol_silent_after"]
    recovery_concurrency: int = DEFAULTS["recovery_concurrency"]
    recovery_max_attempts: int = DEFAULTS["recovery_max_attempts"]
    recovery_pause: float = DEFAULTS["recovery_pause"]
    recovery_pending_max: int = DEFAULTS["recovery_pending_max"]
    recovery_stale_after: float = DEFAULTS["recovery_stale_after"]
    state_dir: str | None = DEFAULTS["state_dir"]
    restart_backfill_max: float = DEFAULTS["restart_backfill_max"]
    record: str | None = DEFAULTS["record"]
    record_flush_interval: float = DEFAULTS["record_flush_interval"]
    record_segment_seconds: float = DEFAULTS["record_segment_seconds"]
    record_segment_bytes: int = DEFAULTS["record_segment_bytes"]
    record_retention: Retention | None = DEFAULTS["record_retention"]
    dedup_capacity: int = DEFAULTS["dedup_capacity"]
    max_frame_bytes: int = DEFAULTS["max_frame_bytes"]
    healthy_after: float = DEFAULTS["healthy_after"]
    resubscribe_limit: int = DEFAULTS["resubscribe_limit"]
    resubscribe_window: float = DEFAULTS["resubscribe_window"]
    stats_interval: float = DEFAULTS["stats_interval"]
    interim_rest_book: bool = DEFAULTS["interim_rest_book"]
    apikey_in_hello: bool = DEFAULTS["apikey_in_hello"]
    debug_tracemalloc: bool = DEFAULTS["debug_tracemalloc"]
    log_format: str = DEFAULTS["log_format"]
    log_level: str = DEFAULTS["log_level"]
    api_key_file: str | None = DEFAULTS["api_key_file"]
    api_key: Secret | None = None
    debug_token: Secret | None = None
    """From ``COINFEED_DEBUG_TOKEN`` only: required for /api/debug/* off loopback."""
    config_file: str | None = None

    def __attrs_post_init__(self) -> None:
        # Built directly (tests do), the record is held to the same rules as load_settings.
        for setting in SETTINGS:
            try:
                setting.parse(getattr(self, setting.name))
            except p.InvalidValue as error:
                raise ConfigError(setting.name, str(error)) from None
        if self.bars and "trade" not in self.types:
            raise ConfigError("bars", "bars are built from trades: add trade to types")
        if self.book_snapshots and "book" not in self.types:
            raise ConfigError(
                "book_snapshots", "book_top events come from the full book: add book to types"
            )
        if "exrate" in self.types and self.symbols and not exrate_pairs(self.symbols):
            raise ConfigError(
                "types",
                "exrate needs symbols whose ids name an asset pair (EXCHANGE_TYPE_BASE_QUOTE, "
                "e.g. BITSTAMP_SPOT_BTC_USD gives BTC/USD)",
            )

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

    def sink_options(self) -> SinkOptions:
        """The settings that shape how sinks are opened."""
        return SinkOptions(
            redis_maxlen=self.redis_maxlen,
            redis_ca_file=self.redis_ca_file,
            redis_wait_replicas=self.redis_wait_replicas,
            jsonl_fsync=self.jsonl_fsync,
            parquet_roll_seconds=self.parquet_roll_seconds,
            parquet_roll_rows=self.parquet_roll_rows,
        )

    def redacted(self) -> dict[str, object]:
        """Every effective value, safe to print: the key is ``***`` when set (else None), and so
        is the password in a Redis sink's URL."""
        from coinfeed.sinks.open import parse_sink_spec  # the sink's name: password as ***

        values: dict[str, object] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.name == "sinks":
                value = [str(parse_sink_spec(spec)) for spec in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif setting.name in ("http", "state_dir", "record", "record_retention"):
                value = "off" if value is None else str(value)
            elif isinstance(value, Shard):
                value = str(value)
            elif setting.name in ("ws_url", "rest_url"):
                value = redact(value, ())  # a key pasted into the URL's apikey parameter
            values[setting.name] = value
        values["api_key"] = "***" if self.api_key is not None else None
        values["api_key_source"] = (
            None if self.api_key is None else "api_key_file" if self.api_key_file else API_KEY_ENV
        )
        values["debug_token"] = "***" if self.debug_token is not None else None
        values["config_file"] = self.config_file
        return values
