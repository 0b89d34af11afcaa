"""Fixtures for the edges: a clean environment and loguru restored after each test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

KEY = "5c3f9a1e-7d2b-4f60-9e81-a0b1c2d3e4f5"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COINAPI_KEY or COINFEED_* from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name == "COINAPI_KEY" or name.startswith("COINFEED_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_loguru() -> Iterator[None]:
    """setup_logging() reconfigures the global logger; give other tests a default one back."""
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(lambda message: sys.stderr.write(message))
