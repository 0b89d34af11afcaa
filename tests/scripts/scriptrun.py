"""Running one of ``scripts/`` as a user would: a child process from the repository's root; or
loading one as a module, to test its parts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def load_script(name: str, module_name: str) -> ModuleType:
    """``scripts/NAME`` loaded as the module ``module_name`` (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
