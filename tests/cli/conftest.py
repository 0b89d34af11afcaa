"""Every command-line test starts from a clean environment and leaves loguru as it found it."""

from __future__ import annotations

import pytest

from tests.helpers import clean_environment, restore_loguru

__all__ = ["clean_environment", "restore_loguru"]


@pytest.fixture(autouse=True)
def _isolated(clean_environment: None, restore_loguru: None) -> None:
    """Applies both fixtures to every test in this folder."""
