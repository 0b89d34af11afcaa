"""Fixtures for the operations tests: the service's settings factory and shared helpers."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import make_settings

__all__ = ["make_settings", "samples"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


Samples = Callable[[str], dict[tuple[str, tuple[tuple[str, str], ...]], float]]
