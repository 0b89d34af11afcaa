"""Every config test starts from a clean environment and leaves loguru as it found it."""

from __future__ import annotations

from tests.helpers import isolated_environment

__all__ = ["isolated_environment"]
