"""The ``run`` and ``demo`` entry points: process-wide set-up around one service run.

``coinfeed run`` builds a :class:`~coinfeed.service.Service` from the settings and runs it under
``trio.run``. ``coinfeed demo`` first starts the built-in simulator and points the settings at
it; that composition lives here, so the service never imports the simulator. Both pin glibc's
mmap threshold (:func:`~coinfeed.observability.process.pin_mmap_threshold`) and shorten the GIL
switch interval for the duration of the run.

What the operator can fix (a taken HTTP port, a sink that cannot open, a shard with no symbols)
ends in one ``coinfeed: error:`` line naming the setting and exit 2, never a traceback; only an
unexpected failure logs one (exit 1).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import attrs
import trio
from loguru import logger

from coinfeed.config import ConfigError, Settings
from coinfeed.observability.http import ListenError, check_listen_address, sole_exception
from coinfeed.observability.process import pin_mmap_threshold
from coinfeed.recording.format import RecordingError
from coinfeed.recording.replay import check_recording
from coinfeed.service import EXIT_FAILURE, Service

EXIT_USAGE = 2
GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread keeps the GIL while another waits for it (CPython's default: 0.005). Sink
writes run in worker threads and each hand-off needs the GIL; with the default a busy event loop
delayed them long enough for the raw queue to drop frames at full speed (``scripts/bench.py``
measures it; ``docs/performance.md`` has the figures)."""


async def _serve(settings: Settings, build: Callable[[], Service] | None = None) -> int:
    # Process-wide, and kept to the end: what a weeks-long run frees must go back to the system.
    threshold = pin_mmap_threshold()
    logger.bind(mmap_threshold=threshold).debug(
        "malloc mmap threshold " + ("pinned" if threshold else "left alone")
    )
    try:
        service = build() if build is not None else Service.build(settings)
    except ConfigError as error:  # a shard with no symbols, a sink that cannot open: exit 2
        return _usage_error(error)
    try:
        return await service.run()
    except (ListenError, BaseExceptionGroup) as exc:
        # The listener is started inside the service's root nursery, which wraps what it
        # raises: a port taken since _check_listener looked comes out as a group.
        listen_error = sole_exception(exc, ListenError)
        if listen_error is None:
            raise
        return _usage_error(_http_error(listen_error))


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
        _check_listener(settings)
        with _prompt_gil_handoff():
            return trio.run(_serve, settings)
    except ConfigError as error:
        return _usage_error(error)
    except Exception as exc:
        return _unexpected(exc)


def run_demo(settings: Settings, *, rate: float, faults: str, seed: int) -> int:
    """``coinfeed demo``: the built-in simulator and ``run`` against it, in one process (the
    defaults of ``rate``, ``faults`` and ``seed`` are the command line's, shown in its help)."""
    try:
        _check_listener(settings)  # before the simulator starts and logs its URLs
        with _prompt_gil_handoff():
            return trio.run(_demo, settings, rate, faults, seed)
    except ConfigError as error:
        return _usage_error(error)
    except Exception as exc:
        return _unexpected(exc)


def run_replay(
    settings: Settings,
    directory: str,
    *,
    speed: float | None = None,
    start: datetime | None = None,
    stop: datetime | None = None,
) -> int:
    """``coinfeed replay``: a recording through the processor to the sinks; the exit code."""

    def build() -> Service:
        return Service.build_replay(settings, directory, speed=speed, start=start, stop=stop)

    try:
        check_recording(Path(directory))
    except RecordingError as error:  # no recording there, or one from a newer coinfeed
        print(f"coinfeed: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _check_listener(settings)
        with _prompt_gil_handoff():
            return trio.run(_serve, settings, build)
    except ConfigError as error:
        return _usage_error(error)
    except Exception as exc:
        return _unexpected(exc)


def _check_listener(settings: Settings) -> None:
    """Refuse a listener address that cannot be bound before anything starts: the service
    connects to CoinAPI before its listener is up, and a taken port is not worth a connection
    (or the log lines it writes before the error)."""
    if settings.http is not None:
        try:
            check_listen_address(settings.http.host, settings.http.port)
        except ListenError as error:
            raise _http_error(error) from None


def _http_error(error: ListenError) -> ConfigError:
    return ConfigError("http", f"{error}, or 'off' to run without the listener")


def _usage_error(error: ConfigError) -> int:
    print(f"coinfeed: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _unexpected(exc: BaseException) -> int:
    logger.opt(exception=exc).error("unexpected failure: {}", exc)
    return EXIT_FAILURE
