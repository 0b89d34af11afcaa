"""Fixtures every test folder may use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coinfeed.config import Settings
from tests.helpers import service_settings


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build settings for an in-process service (see :func:`tests.helpers.service_settings`)."""
    return service_settings
