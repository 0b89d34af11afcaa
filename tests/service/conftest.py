from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from coinfeed.config import Settings
from coinfeed.core.events import Event


@attrs.define(eq=False)
class MemorySink:
    """Keeps every event written (tests read ``events``)."""

    name: str = "memory"
    blocking: bool = False
    events: list[Event] = attrs.field(factory=list)
    closed: bool = False

    def write_batch(self, events: list[Event]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "ws_url": "ws://127.0.0.1:9/v1/",
            "rest_url": "http://127.0.0.1:9",
            "symbols": ("BITSTAMP_SPOT_BTC_USD",),
            "types": ("trade", "quote", "book"),
            "http": None,
            "stats_interval": 3600.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make
