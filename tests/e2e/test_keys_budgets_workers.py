"""Budgets across `corral start --workers 2` on SQLite alone (no Redis): the workers choose the database
ledger ([keys] ledger = "auto"), so 40 concurrent requests (the real async openai SDK, each on a
connection of its own, spread over both workers by the kernel) against a team budget with room for
exactly 10 admit exactly 10."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.test_keys_budgets_shared import ANSWER_MODEL, COST, OPENAI_KEY, ask, create_key
from tests.e2e.test_workers import _listeners
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability
from tests.support.waiting import until


@pytest.fixture(scope="module")
def workers(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "keys": {"required": True},
        "providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
        f'prices."openai/{ANSWER_MODEL}"': {"input": 25, "output": 100},
        "budgets.team.ml": {"usd": round(COST * 10.5, 9), "period": "day"},
    }
    gw = Gateway(mock.url, config=config, args=["--workers", "2"], workdir=tmp_path_factory.mktemp("budget-workers"))
    gw.start(env={**os.environ, "CORRAL_TEST_OPENAI_KEY": OPENAI_KEY})
    try:
        until(lambda: _listeners(gw.port) == 2, timeout=20, message="two workers should listen on the port")
        yield gw
    finally:
        gw.stop()


@reliability("isolation",
             "40 concurrent requests over `--workers 2` on SQLite (no Redis) against a budget with room for 10",
             "exactly 10 answered, 30 refused 429 (the database ledger: one BEGIN IMMEDIATE admission)",
             "every request (status 200 or 429)")
def test_forty_concurrent_requests_over_two_workers_admit_exactly_ten(
        workers: Gateway, mock: MockUpstream, tag: str) -> None:
    # Each worker learns the model's exact cost (its admission estimate from then on) from a key outside
    # every budget; 24 connections reach both workers but with probability 2**-23.
    warm = create_key(workers, "--name", "warm")
    assert not any(isinstance(r, Exception) for r in asyncio.run(_burst(workers, warm, tag + "-warm", 24, 4)))
    rows = workers.wait_rows(lambda r: f"{tag}-warm" in (r["request_headers"] or ""), 24)
    assert {r["worker"] for r in rows} == {1, 2}
    key = create_key(workers, "--name", "ml-app", "--team", "ml")

    results = asyncio.run(_burst(workers, key, tag, 40, 40))
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(results) - len(refused) == 10, f"{len(results) - len(refused)} admitted"
    assert len(refused) == 30 and all(isinstance(r, openai.RateLimitError) for r in refused)
    assert refused[0].response.headers["x-corral-budget"] == "team:ml"
    assert sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag) == 10


async def _burst(gw: Gateway, key: str, tag: str, total: int, concurrency: int) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:  # ask() opens a client, so a connection, of its own
            return await ask(gw, key, tag)

    return list(await asyncio.gather(*(one() for _ in range(total))))
