"""Fixtures for the observability tests: the service's settings factory."""

from __future__ import annotations

from tests.service.conftest import make_settings

__all__ = ["make_settings"]
