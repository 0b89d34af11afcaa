"""Freed memory goes back to the system: the pinned glibc mmap threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import trio

from coinfeed.observability import process
from tests.coinfeed_process import ENDPOINTS, child_environment, closed_port, run_coinfeed_scraped

# The de-dup set at its default capacity, fed 3x its capacity in new uuids: Python rebuilds its
# 8 MiB hash table every ~115,000 new trades once it is full. Prints RSS growth in bytes from
# the moment the set is full to the end.
CHURN = """
import sys
from coinfeed.core.dedup import TradeDedup
from coinfeed.observability.process import pin_mmap_threshold, rss_bytes

if sys.argv[1] == "pinned":
    assert pin_mmap_threshold() == 1 << 20
capacity = 200_000
dedup = TradeDedup(capacity)
uuid = "00000000-0000-4000-8000-{:012x}".format
for n in range(capacity):
    dedup.first_sighting(uuid(n))
full = rss_bytes()
for n in range(capacity, 4 * capacity):
    dedup.first_sighting(uuid(n))
print(rss_bytes() - full)
"""

glibc_only = pytest.mark.skipif(
    process._glibc_mallopt() is None, reason="the knob exists in glibc only"
)


def churn_growth(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != process.ENVIRONMENT_OVERRIDE}
    result = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(result.stdout)


@glibc_only
def test_the_dedup_tables_rebuilds_leave_rss_flat_once_pinned() -> None:
    unpinned = churn_growth("dynamic")
    pinned = churn_growth("pinned")
    # glibc's dynamic threshold keeps at least one freed 8 MiB table in the heap...
    assert unpinned > 6_000_000, unpinned
    # ...pinned, every table is unmapped when freed.
    assert pinned < 1_000_000, pinned


def test_the_environment_chooses_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(process.ENVIRONMENT_OVERRIDE, "65536")
    assert process.pin_mmap_threshold() is None


def test_nothing_is_changed_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(process.ENVIRONMENT_OVERRIDE, raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert process.pin_mmap_threshold() is None


@glibc_only
async def test_a_coinfeed_process_reports_the_threshold_it_pinned() -> None:
    dead = f"127.0.0.1:{closed_port()}"
    seen: list[str] = []
    args = ("--ws-url", f"ws://{dead}/v1/", "--rest-url", f"http://{dead}", "--symbols", "X")
    for environment, expected in (
        (child_environment(), 1 << 20),
        (child_environment(**{process.ENVIRONMENT_OVERRIDE: "262144"}), None),
    ):
        seen.clear()
        with trio.fail_after(60):
            result = await run_coinfeed_scraped(
                *args, "--duration", "3", env=environment, seen=seen
            )
        assert result.returncode == 0, result.stderr.decode()
        memory = json.loads(seen[ENDPOINTS.index("/api/debug/memory")])
        assert memory["malloc_mmap_threshold"] == expected
