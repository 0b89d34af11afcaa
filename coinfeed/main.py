"""The ``run`` and ``demo`` entry points: process-wide set-up around one service run.

``coinfeed run`` builds a :class:`~coinfeed.service.Service` from the settings and runs it under
``trio.run``. ``coinfeed demo`` first starts the built-in simulator and points the settings at
it; that composition lives here, so the service never imports the simulator. Both pin glibc's
mmap threshold (:func:`~coinfeed.observability.process.pin_mmap_threshold`) and shorten the GIL
switch interval for the duration of the run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import attrs
import trio
from loguru import logger

from coinfeed.config import ConfigError, Settings
from coinfeed.observability.process import pin_mmap_threshold
from coinfeed.service import EXIT_FAILURE, Service

EXIT_USAGE = 2
GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread keeps the GIL while another waits for it (CPython's default: 0.005). Sink
writes run in worker threads and each hand-off needs the GIL; with the default a busy event loop
delayed them long enough for the raw queue to drop frames at full speed (``scripts/bench.py``
measures it; ``docs/performance.md`` has the figures)."""
DEMO_SEED = 7


async def _serve(settings: Settings) -> int:
    # Process-wide, and kept to the end: what a weeks-long run frees must go back to the system.
    threshold = pin_mmap_threshold()
    logger.bind(mmap_threshold=threshold).debug(
        "malloc mmap threshold " + ("pinned" if threshold else "left alone")
    )
    try:
        service = Service.build(settings)
    except ConfigError as error:  # a shard with no symbols, a sink that cannot open: exit 2
        print(f"coinfeed: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return await service.run()


async def _demo(settings: Settings, rate: float, faults: str, seed: int) -> int:
    from coinfeed.simulator import SimulatorConfig, open_simulator

    config = SimulatorConfig(rate=rate, seed=seed, faults=faults)
    async with open_simulator(config) as sim:
        symbols = settings.symbols or sim.config.symbols
        logger.bind(ws_url=sim.ws_url, rest_url=sim.rest_url).info("demo simulator up")
        # The simulated market starts afresh each time: a checkpoint of an earlier one means
        # nothing to it, so the demo keeps none.
        demo_settings = attrs.evolve(
            settings, ws_url=sim.ws_url, rest_url=sim.rest_url, symbols=symbols, state_dir=None
        )
        return await _serve(demo_settings)


@contextlib.contextmanager
def _prompt_gil_handoff() -> Iterator[None]:
    """:data:`GIL_SWITCH_INTERVAL` for the duration, then the interpreter's value again."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def run_service(settings: Settings) -> int:
    """``coinfeed run``: connect to CoinAPI and serve until stopped; returns the exit code."""
    try:
        with _prompt_gil_handoff():
            return trio.run(_serve, settings)
    except Exception as exc:
        return _unexpected(exc)


def run_demo(settings: Settings, *, rate: float, faults: str, seed: int | None) -> int:
    """``coinfeed demo``: the built-in simulator and ``run`` against it, in one process."""
    try:
        with _prompt_gil_handoff():
            return trio.run(_demo, settings, rate, faults, DEMO_SEED if seed is None else seed)
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    logger.opt(exception=exc).error("unexpected failure: {}", exc)
    return EXIT_FAILURE
