"""Running one of ``scripts/`` as a user would: a child process from the repository's root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(
    name: str, *args: str, timeout: float = 120, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """``python scripts/NAME ARGS``, its output captured; fails, showing that output, unless it
    exits with ``expect``."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == expect, done.stdout + done.stderr[-3000:]
    return done
