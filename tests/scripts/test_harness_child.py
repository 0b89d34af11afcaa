"""scripts/harness.py's Child: what a short-lived child prints is read, even after it exits."""

from __future__ import annotations

import sys
import time
from types import ModuleType

import pytest

from tests.scripts.scriptrun import load_script


def load_harness() -> ModuleType:
    return load_script("harness.py", "harness")


def test_the_lines_of_a_child_that_already_exited_are_read() -> None:
    # A bare loop over 20,000 frames can print its result and exit between two polls.
    harness = load_harness()
    child = harness.Child([sys.executable, "-c", "print('RESULT 1')"], stdout_pipe=True)
    child.proc.wait()
    time.sleep(0.05)
    assert child.read_lines(1, timeout=5) == ["RESULT 1"]
    child.stop(grace=1)


def test_a_child_that_exits_without_its_lines_is_an_error() -> None:
    harness = load_harness()
    child = harness.Child([sys.executable, "-c", "print('only one')"], stdout_pipe=True)
    with pytest.raises(RuntimeError, match="exited with 0"):
        child.read_lines(2, timeout=5)
    child.stop(grace=1)
