"""Recovery keeps up at scale: 2,000 symbols under the ``gaps`` fault profile."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from coinfeed.config import Settings
from coinfeed.core.events import GapEvent
from coinfeed.service import Service
from coinfeed.simulator.config import default_symbols
from tests.helpers import MemorySink, wait_for
from tests.simprocess import simulator_process

pytestmark = pytest.mark.slow  # 2,000 symbols for half a minute

SYMBOLS = default_symbols(2_000)
RUN_SECONDS = 30.0
"""Long enough that gaps are owed whatever the start-up costs: the first seconds go to 2,000
symbols' first frames (a symbol's first trade cannot be a gap), and under coverage only a
dozen gaps had been found 12 s in."""
REPAIR_SECONDS = 12.0
"""Gaps found this long before the end are owed a repair by the end."""


def trade_gaps(sink: MemorySink) -> list[GapEvent]:
    return [e for e in sink.events if isinstance(e, GapEvent) and e.data_type == "trade"]


async def test_2000_symbols_with_gaps_recover_their_trade_gaps_during_the_run(
    make_settings: Callable[..., Settings],
) -> None:
    sink = MemorySink()
    # The simulator in its own process, as in production: the event loop here is coinfeed's.
    args = ("--rate", "1500", "--seed", "15", "--faults", "gaps", "--symbols", ",".join(SYMBOLS))
    async with simulator_process(*args) as urls:
        # The recovery settings are the defaults: two REST calls in flight, 0.2 s apart.
        settings = make_settings(
            ws_url=urls["ws_url"], rest_url=urls["rest_url"], symbols=SYMBOLS,
            types=("trade", "book"),
        )  # fmt: skip
        service = Service.build(settings, sinks=[sink], handle_signals=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await wait_for(lambda: service.status.subscribed, 20, "subscribed")
            await trio.sleep(RUN_SECONDS - REPAIR_SECONDS)
            owed = sum(1 for g in trade_gaps(sink) if g.status == "pending")
            await trio.sleep(REPAIR_SECONDS)
            # Judged during the run, not after a drain.
            gaps = trade_gaps(sink)
            pending = sum(1 for g in gaps if g.status == "pending")
            finished = {"recovered": 0, "unrecovered": 0}
            for gap in gaps:
                if gap.status != "pending":
                    finished[gap.status] += 1
            oldest = service.recovery.oldest_pending_age() or 0.0
            service.status.request_shutdown("test over")
    recovered_share = finished["recovered"] / pending if pending else 0.0
    print(
        f"\n2,000 symbols, {RUN_SECONDS:g} s of 'gaps': {pending} trade gaps detected, "
        f"{finished['recovered']} recovered during the run ({recovered_share:.0%}; "
        f"{owed} found {REPAIR_SECONDS:g} s or more before the end), "
        f"{finished['unrecovered']} unrecovered, oldest still pending {oldest:.1f} s, "
        f"{service.recovery.counters.rest_calls} REST calls"
    )
    assert owed > 30, "the gaps profile should lose trades of many symbols"
    assert finished["unrecovered"] == 0
    # About as many repaired as were owed (in any order; the simulator's REST answers slowly
    # at times under 2,000 symbols, so a little slack).
    assert finished["recovered"] >= 0.9 * owed
    assert oldest < settings.recovery_stale_after
