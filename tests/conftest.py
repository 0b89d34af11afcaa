"""Fixtures every test folder may use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coinfeed.config import Settings
from tests.helpers import service_settings
from tests.pki import Pki


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build settings for an in-process service (see :func:`tests.helpers.service_settings`)."""
    return service_settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for 127.0.0.1 and localhost, made by the openssl CLI:
    what a loopback ``wss://`` peer (``tests.wspeer.server_context``) serves."""
    directory = tmp_path_factory.mktemp("tls")
    pair = Pki.in_directory(directory, "wss://").self_signed(
        "loopback", names="IP:127.0.0.1,DNS:localhost"
    )
    return pair.cert, pair.key
