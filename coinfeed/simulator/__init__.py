"""A CoinAPI-compatible exchange on loopback: WebSocket ``/v1/`` and the REST recovery
endpoints, driven by a seeded market, with fault injection and ground truth.

    async with open_simulator(SimulatorConfig(rate=5_000, faults="gaps")) as sim:
        ...  # connect to sim.ws_url / sim.rest_url; check against sim.truth
"""

from coinfeed.simulator.clock import Latency
from coinfeed.simulator.config import DEFAULT_SYMBOLS, SimulatorConfig, default_symbols
from coinfeed.simulator.faults import (
    BUFFER_OVERFLOW_MESSAGE,
    PROFILES,
    FaultProfile,
    RestFaults,
    WsFaults,
)
from coinfeed.simulator.server import Simulator, SimulatorStats, open_simulator
from coinfeed.simulator.truth import SessionCounters, Truth

__all__ = [
    "BUFFER_OVERFLOW_MESSAGE",
    "DEFAULT_SYMBOLS",
    "PROFILES",
    "FaultProfile",
    "Latency",
    "RestFaults",
    "SessionCounters",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "Truth",
    "WsFaults",
    "default_symbols",
    "open_simulator",
]
