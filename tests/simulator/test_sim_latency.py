"""Injected latency per exchange: in the frames' timestamps, the same in REST, set from the CLI."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from simclient import BTC, DECODER, ETH, connect, scope

from coinfeed.core.protocol import BookUpdate, Quote, Trade
from coinfeed.core.rest_protocol import rest_book_decoder, rest_trades_decoder
from coinfeed.simulator import SimulatorConfig, open_simulator
from coinfeed.simulator.cli import add_arguments, config_from_args
from coinfeed.simulator.clock import TICKS_PER_SECOND, ticks_of

ROOT = Path(__file__).resolve().parents[2]


def seconds_between(earlier: str, later: str) -> float:
    return (ticks_of(later) - ticks_of(earlier)) / TICKS_PER_SECOND


async def test_an_exchanges_latency_shows_in_its_timestamps_and_rest_has_the_same_times() -> None:
    config = SimulatorConfig(rate=3_000, latency={"BITSTAMP": (0.05, 0.2)})
    hello = scope(["trade", "quote", "book"], [f"{BTC}$", f"{ETH}$"])
    arrivals: list[tuple[Trade | Quote | BookUpdate, float]] = []
    async with open_simulator(config) as sim, connect(sim, hello) as ws:
        with trio.move_on_after(1.0):
            while True:
                raw = await ws.get_message()
                arrived = time.time_ns() / 1e9  # the clock the simulator stamps with
                msg = DECODER.decode(raw)
                assert isinstance(msg, Trade | Quote | BookUpdate)
                arrivals.append((msg, arrived))
        sim.pause_market()
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            r = await rest.get(f"/v1/trades/{BTC}/latest", params={"limit": 100_000})
            history = {t.uuid: t for t in rest_trades_decoder.decode(r.content)}
            r = await rest.get(f"/v1/orderbooks/{BTC}/current")
            rest_book = rest_book_decoder.decode(r.content)
        truth = {t.uuid: t for t in sim.truth.trades(BTC)}

    for symbol, to_coinapi, to_client in ((BTC, 0.05, 0.2), (ETH, 0.0005, -0.0005)):
        mine = [(m, at) for m, at in arrivals if m.symbol_id == symbol]
        assert len(mine) > 100
        # exact, every frame: time_coinapi - time_exchange
        assert {seconds_between(m.time_exchange, m.time_coinapi) for m, _ in mine} == {to_coinapi}
        # send time - time_coinapi: events are stamped over the batch before the send (10 ms)
        delays = [at - ticks_of(m.time_coinapi) / TICKS_PER_SECOND for m, at in mine]
        assert statistics.median(delays) == pytest.approx(to_client, abs=0.01)
        assert min(delays) > to_client - 0.002

    trades = [m for m, _ in arrivals if isinstance(m, Trade) and m.symbol_id == BTC]
    for t in trades:  # one trade, one record: WebSocket, REST and truth agree
        for kept in (history[t.uuid.lower()], truth[t.uuid.lower()]):
            assert (kept.time_exchange, kept.time_coinapi) == (t.time_exchange, t.time_coinapi)
    last_book = [m for m, _ in arrivals if isinstance(m, BookUpdate) and m.symbol_id == BTC][-1]
    assert rest_book.time_exchange >= last_book.time_exchange
    assert seconds_between(rest_book.time_exchange, rest_book.time_coinapi) == 0.05


def _config(*argv: str) -> SimulatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_the_latency_option_takes_one_or_two_seconds_per_exchange() -> None:
    config = _config("--latency", "BITSTAMP=0.05/0.2, KRAKEN=1.5")
    assert config.latency == {"BITSTAMP": (0.05, 0.2), "KRAKEN": (1.5, 0.0)}
    assert config.latency["KRAKEN"].exchange_to_coinapi == 1.5
    assert _config().latency == {}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("BITSTAMP", "expected EXCHANGE=SECONDS[/SECONDS]"),
        ("BITSTAMP=fast", "expected EXCHANGE=SECONDS[/SECONDS]"),
        ("BITSTAMP=0.1/0.2/0.3", "expected EXCHANGE=SECONDS[/SECONDS]"),
        ("=0.1", "expected EXCHANGE=SECONDS[/SECONDS]"),
        ("BITSTAMP=0.1,BITSTAMP=0.2", "BITSTAMP given twice"),
        ("NOWHERE=0.1", "no symbol of exchange 'NOWHERE'"),
        ("BITSTAMP=-0.1", "expected seconds in [0, 3600]"),
        ("BITSTAMP=0.1/nan", "expected seconds in [0, 3600]"),
    ],
)
def test_a_bad_latency_is_refused_naming_the_option(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=r"^latency: ") as raised:
        _config("--latency", value)
    assert complaint in str(raised.value)


async def test_the_cli_exits_2_with_one_line_for_a_bad_latency() -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "coinfeed.simulator", "--latency", "BITSTAMP=0.1/x"],
        cwd=ROOT,
        capture_stderr=True,
        capture_stdout=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "coinfeed simulate: latency: expected EXCHANGE=SECONDS[/SECONDS], got 'BITSTAMP=0.1/x'"
    ]


def test_a_latency_mapping_is_checked_when_the_config_is_made() -> None:
    assert SimulatorConfig(latency={"BITSTAMP": 0.1}).latency == {"BITSTAMP": (0.1, 0.0)}
    with pytest.raises(ValueError, match=r"latency: BITSTAMP: expected \(seconds, seconds\)"):
        SimulatorConfig(latency={"BITSTAMP": (0.1, 0.2, 0.3)})  # type: ignore[dict-item]
