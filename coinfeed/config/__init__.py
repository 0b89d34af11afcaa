"""Configuration: one validated, immutable :class:`Settings` from defaults, file, env and flags.

``values`` holds what a setting can be and how a raw value is checked, ``settings`` the one
table of settings and the record, ``load`` the layering (defaults < TOML < env < flags).
"""

from __future__ import annotations

from coinfeed.config.load import (
    load_settings,
    read_config_file,
    read_key_file,
    unknown_environment,
)
from coinfeed.config.settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    SettingDef,
    Settings,
    format_value,
    spellings,
)
from coinfeed.config.values import (
    API_KEY_ENV,
    CONFIG_ENV,
    DATA_TYPES,
    DEBUG_TOKEN_ENV,
    ENV_PREFIX,
    LOG_LEVELS,
    SINK_FORMS,
    TRANSPORTS,
    ListenAddress,
    Secret,
    Shard,
)

__all__ = [
    "API_KEY_ENV",
    "CONFIG_ENV",
    "DATA_TYPES",
    "DEBUG_TOKEN_ENV",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "SINK_FORMS",
    "TRANSPORTS",
    "ConfigError",
    "ListenAddress",
    "Secret",
    "SettingDef",
    "Settings",
    "Shard",
    "format_value",
    "load_settings",
    "read_config_file",
    "read_key_file",
    "spellings",
    "unknown_environment",
]
