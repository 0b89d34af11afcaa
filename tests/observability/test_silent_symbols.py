"""A subscribed symbol that delivers nothing (a typo) is found, logged and counted."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio
from loguru import logger

from coinfeed.config import ListenAddress, Settings
from coinfeed.simulator import SimulatorConfig
from tests.helpers import SYMBOLS, running, samples

TYPO = "BITSTAMP_SPOT_BTC_USDX"


async def test_a_misspelt_symbol_among_good_ones_is_reported_silent(
    make_settings: Callable[..., Settings],
) -> None:
    warnings: list[dict[str, object]] = []
    handler = logger.add(
        lambda m: warnings.append({"message": m.record["message"], **m.record["extra"]}),
        level="WARNING",
    )
    try:
        async with (
            running(
                make_settings,
                SimulatorConfig(rate=1500, seed=3),
                symbols=(*SYMBOLS, TYPO),
                symbol_silent_after=1.5,
                http=ListenAddress("127.0.0.1", 0),
            ) as (_sim, service, _sink),
            httpx.AsyncClient(base_url=str(service.http_url)) as client,
        ):
            with trio.fail_after(10):
                while (report := (await client.get("/api/symbols")).json())["silent"] == []:
                    await trio.sleep(0.2)
            metrics = samples((await client.get("/metrics")).text)
            with trio.fail_after(10):
                while not any(w.get("symbol_id") == TYPO for w in warnings):
                    await trio.sleep(0.2)
    finally:
        logger.remove(handler)
    assert report["silent"] == [TYPO]
    assert report["symbols"][TYPO] == {
        "silent": True,
        "seconds_since_last": {"trade": None, "quote": None, "book": None},
    }
    good = report["symbols"][SYMBOLS[0]]
    assert good["silent"] is False and good["seconds_since_last"]["trade"] is not None
    assert metrics[("coinfeed_symbols_silent", ())] == 1
    [warning] = [w for w in warnings if w.get("symbol_id") == TYPO]
    assert str(warning["message"]).startswith("symbol silent")
    assert "case-sensitively" in str(warning["hint"])
