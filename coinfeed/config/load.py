"""Loading the settings: defaults < TOML file < ``COINFEED_*`` environment < flags."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coinfeed.config.settings import (
    DEFAULTS,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Settings,
)
from coinfeed.config.values import (
    API_KEY_ENV,
    CONFIG_ENV,
    DEBUG_TOKEN_ENV,
    ENV_PREFIX,
    InvalidValue,
    Secret,
)


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
        name: (value, None) for name, value in {**DEFAULTS, **defaults}.items()
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
        except InvalidValue as error:
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
