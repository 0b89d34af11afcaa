"""The REST endpoints answer like CoinAPI's, from the same market, with budget and faults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import httpx
import msgspec
import pytest
import trio
from simclient import BTC, ETH

from coinfeed.core.protocol import encode, format_time
from coinfeed.core.rest_protocol import (
    rest_book_decoder,
    rest_error_decoder,
    rest_quote_decoder,
    rest_trades_decoder,
)
from coinfeed.simulator import PROFILES, SimulatorConfig, open_simulator

PAUSED_AFTER = 0.3


async def test_trade_history_is_oldest_first_within_the_window_and_limited() -> None:
    async with open_simulator(SimulatorConfig(rate=60_000)) as sim:
        await trio.sleep(PAUSED_AFTER)
        sim.pause_market()
        every = sim.truth.trades(BTC)
        assert len(every) > 300
        mid = every[len(every) // 3].time_exchange
        end = every[2 * len(every) // 3].time_exchange
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            url = f"/v1/trades/{BTC}/history"
            r = await rest.get(url, params={"time_start": mid, "time_end": end, "limit": 100_000})
            assert r.status_code == 200
            rows = rest_trades_decoder.decode(r.content)
            expected = [t for t in every if mid <= t.time_exchange < end]
            assert rows == expected
            assert [t.time_exchange for t in rows] == sorted(t.time_exchange for t in rows)
            assert all(t.uuid == t.uuid.lower() for t in rows)
            assert r.headers["X-RateLimit-Request-Cost"] == str(-(-len(rows) // 100))

            default = rest_trades_decoder.decode(
                (await rest.get(url, params={"time_start": mid})).content
            )
            assert default == [t for t in every if t.time_exchange >= mid][:100]

            latest = rest_trades_decoder.decode(
                (await rest.get(f"/v1/trades/{BTC}/latest", params={"limit": 250})).content
            )
            assert latest == every[::-1][:250]


@pytest.mark.parametrize(
    "params",
    [
        {},  # no time_start
        {"time_start": "yesterday"},
        {"time_start": "2024-01-01T23:00:00", "time_end": "2024-01-02T01:00:00"},  # two days
        {"time_start": "2024-01-01T10:00:00", "time_end": "2024-01-01T09:00:00"},
        {"time_start": "2024-01-01T10:00:00", "limit": "0"},
        {"time_start": "2024-01-01T10:00:00", "limit": "100001"},
        {"time_start": "2024-01-01T10:00:00", "limit": "ten"},
    ],
)
async def test_bad_history_parameters_get_400(params: dict[str, str]) -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100)) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        r = await rest.get(f"/v1/trades/{BTC}/history", params=params)
    assert r.status_code == 400
    assert rest_error_decoder.decode(r.content).text


async def test_a_whole_utc_day_is_one_window() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100)) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        r = await rest.get(
            f"/v1/trades/{BTC}/history",
            params={"time_start": "2024-01-01T00:00:00", "time_end": "2024-01-02T00:00:00"},
        )
    assert r.status_code == 200 and r.json() == []


async def test_unknown_symbols_get_empty_collections_and_550_for_single_items() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100)) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        now = format_time(datetime.now(UTC) - timedelta(seconds=1))
        history = await rest.get("/v1/trades/NOPE/history", params={"time_start": now})
        latest = await rest.get("/v1/trades/NOPE/latest")
        book = await rest.get("/v1/orderbooks/NOPE/current")
        quote = await rest.get("/v1/quotes/NOPE/current")
    assert (history.status_code, history.json()) == (200, [])
    assert (latest.status_code, latest.json()) == (200, [])
    assert book.status_code == 550 and quote.status_code == 550
    assert rest_error_decoder.decode(book.content).text


async def test_rest_book_and_quote_are_the_true_current_state() -> None:
    async with open_simulator(SimulatorConfig(rate=20_000)) as sim:
        await trio.sleep(0.1)
        sim.pause_market()
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            full = await rest.get(f"/v1/orderbooks/{ETH}/current")
            top = await rest.get(f"/v1/orderbooks/{ETH}/current", params={"limit_levels": 5})
            quote = await rest.get(f"/v1/quotes/{ETH}/current")
        truth = sim.truth.book(ETH)
        assert truth is not None
        assert full.content == encode(truth)  # prices as numbers with exact digits
        assert rest_book_decoder.decode(full.content) == truth
        book5 = rest_book_decoder.decode(top.content)
        assert (book5.asks, book5.bids) == (truth.asks[:5], truth.bids[:5])
        q = rest_quote_decoder.decode(quote.content)
        assert (q.ask_price, q.ask_size) == (truth.asks[0].price, truth.asks[0].size)
        assert (q.bid_price, q.bid_size) == (truth.bids[0].price, truth.bids[0].size)
        last = sim.truth.trades(ETH)[-1]
        assert q.last_trade is not None and q.last_trade.uuid == last.uuid


@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_bad_key_gets_401(where: str) -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100, keys={"k1"})) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        url = f"/v1/trades/{BTC}/latest"
        if where == "header":
            bad = await rest.get(url, headers={"X-CoinAPI-Key": "nope"})
            good = await rest.get(url, headers={"X-CoinAPI-Key": "k1"})
        else:
            bad = await rest.get(url, params={"apikey": "nope"})
            good = await rest.get(url, params={"apikey": "k1"})
        missing = await rest.get(url)
    assert bad.status_code == 401 and missing.status_code == 401
    assert rest_error_decoder.decode(bad.content).error == "Invalid API key"
    assert good.status_code == 200


async def test_a_request_budget_answers_429_with_retry_after_and_rate_limit_headers() -> None:
    config = SimulatorConfig(rate=100, rest_budget=3, rest_budget_window=30)
    async with open_simulator(config) as sim, httpx.AsyncClient(base_url=sim.rest_url) as rest:
        answers = [await rest.get(f"/v1/quotes/{BTC}/current") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert answers[2].headers["X-RateLimit-Used"] == "3"
    assert 25 <= int(answers[3].headers["Retry-After"]) <= 30
    assert "X-RateLimit-Reset" in answers[3].headers
    assert "X-RateLimit-Request-Cost" in answers[3].headers


async def test_one_shot_rest_failures_and_delays() -> None:
    async with open_simulator(SimulatorConfig(rate=100)) as sim:
        sim.rest_faults.fail_next(2, status=429, retry_after=1)
        sim.rest_faults.fail_next(1, status=503, retry_after=None)
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            url = f"/v1/trades/{BTC}/latest"
            answers = [await rest.get(url) for _ in range(3)]
            sim.rest_faults.delay_next(1, seconds=0.3)
            start = trio.current_time()
            slow = await rest.get(url)
            took = trio.current_time() - start
    assert [a.status_code for a in answers] == [429, 429, 503]
    assert answers[0].headers["Retry-After"] == "1"
    assert "Retry-After" not in answers[2].headers
    assert slow.status_code == 200 and took >= 0.3
    assert sim.stats.rest_by_status == {429: 2, 503: 1, 200: 1}


async def test_peak_concurrency_counts_requests_in_flight_at_once() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100)) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        for _ in range(3):  # one after the other: never more than one in flight
            await rest.get(f"/v1/trades/{BTC}/latest")
        assert sim.stats.rest_peak_in_flight == 1
        sim.rest_faults.delay_next(5, seconds=0.3)
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(rest.get, f"/v1/trades/{BTC}/latest")
    assert sim.stats.rest_peak_in_flight == 5
    assert sim.stats.rest_in_flight == 0
    assert sim.stats.rest_requests_total == 8


@pytest.mark.parametrize(
    ("profile", "check"),
    [
        ("rest-429", lambda codes, took: codes.count(429) >= 3),
        ("rest-5xx", lambda codes, took: sum(c >= 500 for c in codes) >= 2),
        ("slow-rest", lambda codes, took: took >= 0.2 and set(codes) == {200}),
    ],
)
async def test_rest_fault_profiles(profile: str, check: object) -> None:
    fast = attrs.evolve(PROFILES[profile], rest_delay_seconds=(0.05, 0.06))
    async with (
        open_simulator(SimulatorConfig(rate=100, faults=fast)) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as rest,
    ):
        start = trio.current_time()
        codes = [(await rest.get(f"/v1/trades/{BTC}/latest")).status_code for _ in range(20)]
        took = trio.current_time() - start
    assert check(codes, took)  # type: ignore[operator]
    if profile == "rest-429":
        assert all(c in (200, 429) for c in codes)


async def test_sim_truth_endpoint_matches_in_process_truth() -> None:
    async with open_simulator(SimulatorConfig(rate=20_000)) as sim:
        await trio.sleep(0.1)
        sim.pause_market()
        async with httpx.AsyncClient(base_url=sim.rest_url) as rest:
            whole = await rest.get("/_sim/truth")
            one = await rest.get("/_sim/truth", params={"symbol_id": BTC})
        assert whole.content == encode(sim.truth.snapshot())
        assert msgspec.json.decode(one.content)["books"].keys() == {BTC}
        body = msgspec.json.decode(whole.content)
        assert set(body["trades"]) == set(sim.truth.symbols)
        assert len(body["trades"][BTC]) == len(sim.truth.trades(BTC)) > 0
        price = str(sim.truth.trades(BTC)[0].price)
        assert f'"price":{price},' in whole.text  # a JSON number with the exact digits
    assert sim.stats.rest_requests_total == 0  # /_sim/ is not a CoinAPI request


async def test_every_coinapi_answer_carries_a_request_cost() -> None:
    async with (
        open_simulator(SimulatorConfig(rate=100, keys={"k"})) as sim,
        httpx.AsyncClient(base_url=sim.rest_url, headers={"X-CoinAPI-Key": "k"}) as rest,
    ):
        answers = [
            await rest.get(f"/v1/trades/{BTC}/latest"),
            await rest.get(f"/v1/trades/{BTC}/history"),  # 400
            await rest.get("/v1/quotes/NOPE/current"),  # 550
            await rest.get("/v1/nothing/here"),  # 404
            await rest.get("/v1/quotes/NOPE/current", headers={"X-CoinAPI-Key": "bad"}),  # 401
        ]
    assert [a.status_code for a in answers] == [200, 400, 550, 404, 401]
    assert all(a.headers["X-RateLimit-Request-Cost"] == "1" for a in answers)
