"""``coinfeed simulate`` / ``python -m coinfeed.simulator``: run the simulator alone.

It prints one ``name=url`` line per endpoint on stdout (flushed, for scripts to parse), then
serves until SIGTERM/SIGINT or ``--duration`` seconds, and exits 0 (2 on a bad setting).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys

import trio
from loguru import logger

from coinfeed.simulator.config import SimulatorConfig, default_symbols
from coinfeed.simulator.faults import PROFILES
from coinfeed.simulator.server import open_simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback)")
    parser.add_argument("--port", type=int, default=0, help="WebSocket port (0: any free)")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (0: any free)")
    parser.add_argument("--blackhole-port", type=int, default=0, help="never-answering port")
    parser.add_argument(
        "--rate", type=float, default=2_000.0, help="market events (frames) per second, all symbols"
    )
    parser.add_argument(
        "--symbols",
        default="6",
        help="a count of default symbols, or comma-separated symbol ids",
    )
    parser.add_argument("--faults", default="none", choices=sorted(PROFILES), help="profile")
    parser.add_argument("--seed", type=int, default=1, help="market seed")
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument(
        "--keys",
        default=None,
        help="comma-separated API keys to accept (default: accept any key)",
    )
    parser.add_argument(
        "--latency",
        default=None,
        metavar="EXCHANGE=SECONDS[/SECONDS],...",
        help="per exchange, time_coinapi - time_exchange and (after the slash, default 0) how "
        "long before sending time_coinapi is stamped, e.g. BITSTAMP=0.05/0.2",
    )


def parse_latency(raw: str) -> dict[str, tuple[float, float]]:
    """``EXCHANGE=SECONDS[/SECONDS],…`` as ``{exchange: (to CoinAPI, to the client)}``.

    Raises ``ValueError`` naming the option; the values are checked by :class:`SimulatorConfig`.
    """
    latency: dict[str, tuple[float, float]] = {}
    for item in (i.strip() for i in raw.split(",")):
        exchange, _, seconds = (part.strip() for part in item.partition("="))
        try:
            values = [float(s) for s in seconds.split("/")]
        except ValueError:
            values = []
        if not exchange or not 1 <= len(values) <= 2:
            raise ValueError(f"latency: expected EXCHANGE=SECONDS[/SECONDS], got {item[:60]!r}")
        if exchange in latency:
            raise ValueError(f"latency: {exchange} given twice")
        latency[exchange] = (values[0], values[1] if len(values) == 2 else 0.0)
    return latency


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the config; raises ``ValueError`` naming the bad setting."""
    raw = str(args.symbols).strip()
    if raw.isdigit():
        symbols = default_symbols(int(raw))
    else:
        symbols = tuple(s.strip() for s in raw.split(",") if s.strip())
    keys = None if args.keys is None else frozenset(k for k in args.keys.split(",") if k)
    latency = {} if args.latency is None else parse_latency(args.latency)
    return SimulatorConfig(
        host=args.host,
        ws_port=args.port,
        rest_port=args.rest_port,
        blackhole_port=args.blackhole_port,
        rate=args.rate,
        symbols=symbols,
        faults=args.faults,
        seed=args.seed,
        keys=keys,
        latency=latency,
    )


async def run_simulate(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT or ``--duration``; print the URLs first. Returns the exit code."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"coinfeed simulate: {exc}", file=sys.stderr)
        return 2
    duration = math.inf if args.duration is None else args.duration
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_simulator(config) as sim:
            print(f"ws_url={sim.ws_url}", flush=True)
            print(f"rest_url={sim.rest_url}", flush=True)
            print(f"blackhole_url={sim.blackhole_url}", flush=True)
            with trio.move_on_after(duration):
                async for signum in signals:
                    logger.info("simulator stopping signal={}", signal.Signals(signum).name)
                    break
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m coinfeed.simulator``."""
    parser = argparse.ArgumentParser(
        prog="coinfeed simulate", description="Run the CoinAPI simulator on loopback."
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="loguru level for stderr")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    return trio.run(run_simulate, args)
