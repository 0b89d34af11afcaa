"""Symbol sharding: a stable partition, applied by the service, printed by ``coinfeed shards``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfeed.cli import main
from coinfeed.config import ConfigError, Settings, Shard
from coinfeed.core.shard import assign, shard_of
from coinfeed.main import EXIT_USAGE, run_service
from coinfeed.service import Service
from tests.helpers import MemorySink

SYMBOLS = [
    "BITSTAMP_SPOT_BTC_USD",
    "BITSTAMP_SPOT_BTC_USDT",
    "COINBASE_SPOT_ETH_USD",
    "KRAKEN_SPOT_XBT_EUR",
    "BINANCE_SPOT_ETH_BTC",
    "COINBASE_SPOT_SOL_USD",
]
# Fixed forever: replicas of different versions, hosts and Python builds must agree.
EXPECTED = [
    ["BITSTAMP_SPOT_BTC_USDT", "KRAKEN_SPOT_XBT_EUR"],
    ["COINBASE_SPOT_ETH_USD", "BINANCE_SPOT_ETH_BTC"],
    ["BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_SOL_USD"],
]

symbol_ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1)


@given(st.lists(symbol_ids, max_size=40), st.integers(min_value=1, max_value=17))
def test_shards_partition_any_symbol_list(symbols: list[str], count: int) -> None:
    shards = assign(symbols, count)
    assert len(shards) == count
    assert Counter(s for shard in shards for s in shard) == Counter(symbols)
    for index, shard in enumerate(shards):
        assert all(shard_of(s, count) == index for s in shard)
        assert shard == [s for s in symbols if shard_of(s, count) == index]  # order kept
    assert assign(symbols, count) == shards


def test_the_assignment_is_fixed_and_the_same_in_another_process() -> None:
    assert assign(SYMBOLS, 3) == EXPECTED
    # Python's hash() is salted per process; ours must not be.
    argv = ["shards", "--symbols", ",".join(SYMBOLS), "--count", "3"]
    out = subprocess.run(
        [sys.executable, "-m", "coinfeed", *argv],
        capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert out.stdout.splitlines() == [f"{i}/3: {','.join(s)}" for i, s in enumerate(EXPECTED)]


def test_shards_command_prints_every_shard_even_an_empty_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["shards", "--symbols", "BITSTAMP_SPOT_BTC_USD", "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    index = shard_of("BITSTAMP_SPOT_BTC_USD", 2)
    assert lines[index] == f"{index}/2: BITSTAMP_SPOT_BTC_USD"
    assert lines[1 - index] == f"{1 - index}/2: "
    assert main(["shards", "--symbols", "A", "--count", "0"]) == 2


def test_the_service_takes_only_its_shard(make_settings: Callable[..., Settings]) -> None:
    for index, expected in enumerate(EXPECTED):
        settings = make_settings(symbols=tuple(SYMBOLS), shard=Shard(index, 3))
        service = Service.build(settings, sinks=[MemorySink()], handle_signals=False)
        assert service.settings.symbols == tuple(expected)
        assert service.connection.symbols == tuple(expected)
        assert service.processor.symbols == frozenset(expected)


def test_a_shard_with_no_symbols_exits_2_naming_shard(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    empty = 1 - shard_of("BITSTAMP_SPOT_BTC_USD", 2)
    settings = make_settings(symbols=("BITSTAMP_SPOT_BTC_USD",), shard=Shard(empty, 2))
    with pytest.raises(ConfigError) as raised:
        Service.build(settings, sinks=[MemorySink()], handle_signals=False)
    assert raised.value.setting == "shard"
    assert run_service(settings) == EXIT_USAGE
    assert "'shard'" in capsys.readouterr().err
