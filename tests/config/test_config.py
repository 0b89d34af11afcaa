"""Settings: validation of every setting, precedence of the layers, and the API key."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from coinfeed.config import (
    SETTINGS,
    ConfigError,
    ListenAddress,
    Secret,
    SettingDef,
    Settings,
    format_value,
    load_settings,
    unknown_environment,
)
from coinfeed.config.values import Retention
from tests.helpers import KEY

ENV = {"COINAPI_KEY": KEY}

# One wrong value per setting, as a user would type it. Every setting must have one here.
INVALID = {
    "ws_url": "https://ws.coinapi.io/v1/",
    "transport": "aiohttp",
    "rest_url": "ftp://rest.coinapi.io",
    "symbols": "BITSTAMP SPOT BTC USD",
    "types": "trade,ohlc",
    "sinks": "kafka://localhost:9092",
    "http": "localhost",
    "ca_file": "/nonexistent/ca.pem",
    "connect_timeout": "0",
    "stale_after": "-1",
    "backoff_max": "inf",
    "shutdown_timeout": "nan",
    "duration": "0",
    "queue_capacity": "abc",
    "queue_full_wait": "-0.1",
    "sink_queue_capacity": "0",
    "sink_batch_size": "0",
    "sink_flush_interval": "0",
    "sink_stall_after": "0",
    "jsonl_fsync": "always",
    "parquet_roll_seconds": "0",
    "parquet_roll_rows": "999",
    "bars": "7MIN",
    "bar_grace": "-1",
    "book_snapshots": "10@50ms",
    "ohlcv_periods": "1WEEK",
    "redis_maxlen": "-5",
    "redis_ca_file": "/nonexistent/ca.pem",
    "redis_wait_replicas": "-1",
    "shard": "3/3",
    "symbol_silent_after": "0",
    "recovery_concurrency": "11",
    "recovery_max_attempts": "0",
    "recovery_pause": "-0.1",
    "recovery_pending_max": "1.5",
    "recovery_stale_after": "0",
    "state_dir": "/dev/null",
    "restart_backfill_max": "-1",
    "record": "/dev/null",
    "record_flush_interval": "0",
    "record_segment_seconds": "-1",
    "record_segment_bytes": "64KiB",
    "record_retention": "7w",
    "dedup_capacity": "999",
    "max_frame_bytes": "1023",
    "healthy_after": "0",
    "resubscribe_limit": "0",
    "resubscribe_window": "-10",
    "stats_interval": "never",
    "interim_rest_book": "maybe",
    "apikey_in_hello": "2",
    "debug_tracemalloc": "sometimes",
    "log_format": "xml",
    "log_level": "verbose",
    "api_key_file": "/nonexistent/coinapi.key",
}


def load(**cli: object) -> Settings:
    return load_settings(cli={"symbols": "BITSTAMP_SPOT_BTC_USD", **cli}, env=ENV)


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "coinfeed.toml"
    path.write_text(text)
    return str(path)


def test_every_setting_has_an_invalid_example() -> None:
    assert set(INVALID) == {setting.name for setting in SETTINGS}


def test_the_table_and_the_record_agree() -> None:
    fields = {field.name for field in attrs.fields(Settings)}
    assert fields == {setting.name for setting in SETTINGS} | {
        "api_key",
        "debug_token",
        "config_file",
    }


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.default != ()], ids=lambda s: s.name)
def test_defaults_shown_in_help_are_accepted_back(setting: SettingDef) -> None:
    assert setting.parse(format_value(setting.default)) == setting.default


@pytest.mark.parametrize("name", sorted(INVALID))
@pytest.mark.parametrize("layer", ["flag", "environment", "file"])
def test_invalid_value_names_the_setting(name: str, layer: str, tmp_path: Path) -> None:
    setting = next(s for s in SETTINGS if s.name == name)
    # symbols given on the command line would hide a bad one in the environment or the file
    cli: dict[str, object] = {} if name == "symbols" else {"symbols": "BITSTAMP_SPOT_BTC_USD"}
    env = dict(ENV)
    if layer == "flag":
        cli[name] = INVALID[name]
    elif layer == "environment":
        env[setting.env] = INVALID[name]
    else:
        cli["config"] = write_toml(tmp_path, f"{name} = {INVALID[name]!r}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(cli=cli, env=env)
    assert caught.value.setting == name
    message = str(caught.value)
    assert f"'{name}'" in message
    if name != "api_key_file":  # that one names the unreadable path instead of the value
        assert setting.env in message and setting.flag in message


def test_error_message_is_actionable() -> None:
    with pytest.raises(ConfigError) as caught:
        load(queue_capacity="abc")
    assert str(caught.value) == (
        "invalid setting 'queue_capacity' (--queue-capacity / COINFEED_QUEUE_CAPACITY): "
        "must be an integer >= 1, got 'abc' (from the command line)"
    )


@pytest.mark.parametrize("name", ["ws_url", "rest_url"])
def test_a_url_fragment_is_refused_not_silently_dropped(name: str) -> None:
    url = "wss://ws.coinapi.io/v1/#x" if name == "ws_url" else "https://rest.coinapi.io/#x"
    with pytest.raises(ConfigError) as refused:
        load(**{name: url})
    assert refused.value.setting == name and "#fragment" in str(refused.value)


def test_a_long_sinks_value_never_shows_part_of_a_redis_password() -> None:
    secret = "VeryLongSecretPassw0rdXYZ"
    sinks = f"sqlite:/var/lib/coinfeed/coinfeed.sqlite,redis://default:{secret}@redis:6379/0,"
    with pytest.raises(ConfigError) as refused:
        load(sinks=sinks)
    assert "VeryLong" not in str(refused.value)


def test_unknown_sink_lists_the_accepted_forms() -> None:
    with pytest.raises(ConfigError, match=r"--sink .*jsonl:-.*sqlite:PATH.*redis://HOST:PORT/DB"):
        load(sinks="kafka://localhost:9092")


def test_unknown_type_lists_the_accepted_types() -> None:
    with pytest.raises(ConfigError, match="trade, quote, book, book5, book20, book50"):
        load(types="trades")


@pytest.mark.parametrize(
    ("symbols", "expected"),
    [
        ("BITSTAMP_SPOT_BTC_USD", ("BITSTAMP_SPOT_BTC_USD",)),
        (" BITSTAMP_SPOT_BTC_USD$ , ETH ", ("BITSTAMP_SPOT_BTC_USD", "ETH")),
        ("A,B,A", ("A", "B")),
        (["A$", "B"], ("A", "B")),
    ],
)  # fmt: skip
def test_symbols_are_exact_ids_without_the_dollar(symbols: object, expected: tuple[str]) -> None:
    assert load(symbols=symbols).symbols == expected


@pytest.mark.parametrize("symbols", ["A,,B", "A,", "$", "A$B", ["A", 3]])
def test_malformed_symbol_lists_are_rejected(symbols: object) -> None:
    with pytest.raises(ConfigError, match="'symbols'"):
        load(symbols=symbols)


def test_types_are_normalized_and_deduplicated() -> None:
    assert load(types="Trade,book5,trade").types == ("trade", "book5")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("jsonl:-", "jsonl:-"),
        ("jsonl:/var/lib/coinfeed/events.jsonl", "jsonl:/var/lib/coinfeed/events.jsonl"),
        ("sqlite:events.db", "sqlite:events.db"),
        ("redis://localhost:6380/2", "redis://localhost:6380/2"),
        ("redis://localhost", "redis://localhost:6379/0"),
        ("redis://[::1]:6379/1", "redis://[::1]:6379/1"),
    ],
)
def test_sink_specs(spec: str, expected: str) -> None:
    assert load(sinks=spec).sinks == (expected,)


@pytest.mark.parametrize("spec", ["jsonl:", "jsonl", "sqlite:-", "redis://h/x", "redis://h:port/0"])
def test_malformed_sink_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ConfigError, match="'sinks'"):
        load(sinks=spec)


@pytest.mark.parametrize(
    ("http", "enabled", "host", "port"),
    [
        ("0.0.0.0:9000", True, "0.0.0.0", 9000),
        ("[::1]:8080", True, "::1", 8080),
        ("127.0.0.1:0", True, "127.0.0.1", 0),
        ("off", False, "", 0),
        ("OFF", False, "", 0),
    ],
)
def test_http_listener(http: str, enabled: bool, host: str, port: int) -> None:
    settings = load(http=http)
    assert (settings.http_enabled, settings.http_host, settings.http_port) == (enabled, host, port)


@pytest.mark.parametrize("http", ["nonexistent.example:80", "[::1]:8080", "off"])
def test_http_listener_is_shown_as_typed(http: str) -> None:
    assert load(http=http).redacted()["http"] == http


@pytest.mark.parametrize("http", ["::1:8080", ":8080", "localhost:65536", "localhost:http"])
def test_malformed_http_listener_is_rejected(http: str) -> None:
    with pytest.raises(ConfigError, match="'http'"):
        load(http=http)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)],
)
def test_booleans(text: str, expected: bool) -> None:
    settings = load_settings(cli={"symbols": "A"}, env={**ENV, "COINFEED_APIKEY_IN_HELLO": text})
    assert settings.apikey_in_hello is expected


def test_duration_none_and_numbers() -> None:
    assert load(duration="1.5").duration == 1.5
    assert load(duration="none").duration is None
    assert load().duration is None


def test_log_level_is_case_insensitive() -> None:
    assert load(log_level="debug").log_level == "DEBUG"


# --- precedence ------------------------------------------------------------------------------

TOML = """
queue_capacity = 100
symbols = ["FILE_SYMBOL"]
interim_rest_book = false
stats_interval = 3
"""


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    config = write_toml(tmp_path, TOML)
    env = {**ENV, "COINFEED_QUEUE_CAPACITY": "200", "COINFEED_SYMBOLS": "ENV_A,ENV_B"}
    cli = {"config": config, "queue_capacity": "300"}

    defaults_only = load_settings(cli={}, env=ENV, require_symbols=False)
    file_only = load_settings(cli={"config": config}, env=ENV)
    file_and_env = load_settings(cli={"config": config}, env=env)
    everything = load_settings(cli=cli, env=env)

    got = [
        (s.queue_capacity, s.symbols, s.interim_rest_book, s.stats_interval)
        for s in (defaults_only, file_only, file_and_env, everything)
    ]
    assert got == [
        (500, (), True, 10.0),
        (100, ("FILE_SYMBOL",), False, 3.0),
        (200, ("ENV_A", "ENV_B"), False, 3.0),
        (300, ("ENV_A", "ENV_B"), False, 3.0),
    ]


def test_environment_bool_overrides_file_and_flag_overrides_environment(tmp_path: Path) -> None:
    config = write_toml(tmp_path, TOML)
    env = {**ENV, "COINFEED_INTERIM_REST_BOOK": "yes"}
    assert load_settings(cli={"config": config}, env=env).interim_rest_book is True
    cli = {"config": config, "interim_rest_book": "no"}
    assert load_settings(cli=cli, env=env).interim_rest_book is False


def test_config_file_from_environment(tmp_path: Path) -> None:
    env = {**ENV, "COINFEED_CONFIG": write_toml(tmp_path, TOML)}
    settings = load_settings(cli={}, env=env)
    assert settings.queue_capacity == 100
    assert settings.config_file == env["COINFEED_CONFIG"]


def test_empty_environment_variable_counts_as_unset() -> None:
    settings = load_settings(cli={"symbols": "A"}, env={**ENV, "COINFEED_QUEUE_CAPACITY": ""})
    assert settings.queue_capacity == 500


def test_file_accepts_comma_strings_for_lists(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'symbols = "A, B"\ntypes = "trade"\n')
    settings = load_settings(cli={"config": config}, env=ENV)
    assert (settings.symbols, settings.types) == (("A", "B"), ("trade",))


def test_unknown_key_in_file_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "queue_capcity = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(cli={"config": config}, env=ENV)
    assert caught.value.setting == "config"
    assert "unknown key 'queue_capcity'" in str(caught.value)
    assert "did you mean 'queue_capacity'?" in str(caught.value)


def test_api_key_in_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    config = write_toml(tmp_path, f'api_key = "{KEY}"\n')
    with pytest.raises(ConfigError, match="COINAPI_KEY") as caught:
        load_settings(cli={"config": config}, env={})
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("content", [None, "symbols = [", b"\xff\xfe"])
def test_unreadable_or_invalid_file_names_config(tmp_path: Path, content: object) -> None:
    path = tmp_path / "coinfeed.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(cli={"config": str(path)}, env=ENV)
    assert caught.value.setting == "config"
    assert str(path) in str(caught.value)


def test_unknown_environment_variables_are_reported_not_fatal() -> None:
    env = {**ENV, "COINFEED_QUEUE_CAPACITI": "5", "COINFEED_SYMBOLS": "A", "COINFEED_ZZZ": "1"}
    assert load_settings(cli={}, env=env).queue_capacity == 500
    assert unknown_environment(env) == {
        "COINFEED_QUEUE_CAPACITI": "COINFEED_QUEUE_CAPACITY",
        "COINFEED_ZZZ": None,
    }


# --- requirements and the key ----------------------------------------------------------------


def test_run_requires_symbols() -> None:
    with pytest.raises(ConfigError, match="'symbols'"):
        load_settings(cli={}, env=ENV)


def test_run_requires_a_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(cli={"symbols": "A"}, env={})
    assert caught.value.setting == "api_key"
    assert "COINAPI_KEY is not set (or set api_key_file)" in str(caught.value)


def test_demo_and_config_need_neither() -> None:
    settings = load_settings(cli={}, env={}, require_symbols=False, require_key=False)
    assert (settings.symbols, settings.api_key) == ((), None)


def test_key_from_environment() -> None:
    settings = load()
    assert settings.api_key is not None and settings.api_key.reveal() == KEY


def test_key_from_file_wins_over_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "coinapi.key"
    key_file.write_text("FILE-KEY-0123456789\n")
    settings = load(api_key_file=str(key_file))
    assert settings.api_key is not None and settings.api_key.reveal() == "FILE-KEY-0123456789"
    assert settings.redacted()["api_key_source"] == "api_key_file"


@pytest.mark.parametrize("content", ["", "   \n", "two words\n"])
def test_key_file_must_hold_one_key(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "coinapi.key"
    key_file.write_text(content)
    with pytest.raises(ConfigError, match="'api_key_file'"):
        load(api_key_file=str(key_file))


def test_key_never_shows_in_repr_str_or_redacted_output() -> None:
    settings = load()
    for text in (repr(settings), str(settings), repr(settings.redacted()), f"{settings.api_key}"):
        assert KEY not in text
    assert repr(settings.api_key) == "Secret('***')"
    assert settings.redacted()["api_key"] == "***"
    assert load_settings(cli={}, env={}, require_key=False, require_symbols=False).redacted()[
        "api_key"
    ] is None  # fmt: skip


def test_key_pasted_into_the_wrong_variable_is_not_echoed(tmp_path: Path) -> None:
    env = {**ENV, "COINFEED_QUEUE_CAPACITY": KEY}
    with pytest.raises(ConfigError) as caught:
        load_settings(cli={"symbols": "A"}, env=env)
    assert KEY not in str(caught.value) and "***" in str(caught.value)

    key_file = tmp_path / "coinapi.key"
    key_file.write_text("FILE-KEY-0123456789")
    with pytest.raises(ConfigError) as caught:
        load(api_key_file=str(key_file), http="FILE-KEY-0123456789")
    assert "FILE-KEY-0123456789" not in str(caught.value)


def test_settings_built_directly_are_validated() -> None:
    with pytest.raises(ConfigError, match="'recovery_concurrency'"):
        Settings(recovery_concurrency=0)
    assert Settings(http=ListenAddress("::1", 0), api_key=Secret("k")).http_host == "::1"


def test_settings_are_immutable() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        load().queue_capacity = 1  # type: ignore[misc]


def test_debug_token_comes_from_the_environment_and_is_never_shown() -> None:
    settings = load_settings(
        cli={"symbols": "BITSTAMP_SPOT_BTC_USD"},
        env={**ENV, "COINFEED_DEBUG_TOKEN": "tok-123456"},
    )
    assert settings.debug_token is not None and settings.debug_token.reveal() == "tok-123456"
    assert "tok-123456" not in repr(settings)
    assert settings.redacted()["debug_token"] == "***"
    assert "tok-123456" not in str(settings.redacted())


def _shown(default: object, name: str) -> str:
    """A default as the README's settings table writes it."""
    if default is None:
        return "none"
    if isinstance(default, tuple):
        if not default:
            return "(required)" if name == "symbols" else "none"
        return ",".join(map(str, default))
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_the_readme_settings_table_states_the_real_defaults() -> None:
    """README and code must agree on every default the table lists (a contract users read)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    defaults = {s.name: s.default for s in SETTINGS}
    table = readme[readme.index("| setting | default | meaning |") :].split("\n\n")[0]
    checked = 0
    for row in table.splitlines()[2:]:
        names_cell, default_cell = row.split(" | ")[:2]
        names = [n for n in names_cell.split("`")[1::2] if n in defaults]
        shown = default_cell.split("`")[1::2] or [default_cell.strip()]
        assert len(names) == len(shown), row
        for name, text in zip(names, shown, strict=True):
            assert text == _shown(defaults[name], name), f"README says {name} = {text}"
            checked += 1
    assert checked >= 25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", None),
        ("50GiB", Retention(50 << 30, None)),
        ("7d", Retention(None, 7 * 86_400.0)),
        ("50GiB,7d", Retention(50 << 30, 7 * 86_400.0)),
        (" 12h , 500MB ", Retention(500_000_000, 12 * 3600.0)),
        ("1.5TiB", Retention(int(1.5 * (1 << 40)), None)),
    ],
)
def test_record_retention_takes_a_size_and_or_an_age(text: str, expected: object) -> None:
    settings = load(record_retention=text)
    assert settings.record_retention == expected
    # Shown as typed, and accepted back.
    shown = settings.redacted()["record_retention"]
    assert load(record_retention=shown).record_retention == expected


@pytest.mark.parametrize("text", ["7w", "50", "0d", "-1GiB", "1d,2d", "50GiB,60GiB", "GiB", "x"])
def test_malformed_record_retention_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="record_retention"):
        load(record_retention=text)


@pytest.mark.parametrize(
    ("text", "expected"), [("1MiB", 1 << 20), ("256MiB", 256 << 20), ("2GB", 2 * 10**9)]
)
def test_record_segment_bytes_takes_units(text: str, expected: int) -> None:
    assert load(record_segment_bytes=text).record_segment_bytes == expected
