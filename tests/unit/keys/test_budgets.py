"""Team and tag budgets: the [budgets] tables, which budgets a key counts towards, admission that needs
room in every one of them, exact concurrent admission (in process and on Redis shared by two ledgers),
calendar periods in a time zone on an injected clock, and the unpriced rule."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from addon import metadata as md
from addon.keys import budgets, ledger, store
from addon.keys.book import KeyBook
from addon.keys.budgets import Budget
from addon.keys.check import KeyCheck
from addon.services import CatalogService
from tests.support.clock import FakeClock
from tests.support.redis_server import RedisServer

KEY = "ck-0123abcd_" + "s" * 43
RECORD = store.KeyRecord("0123abcd", "app", None, None, 1.0, "day", None, None, team="ml",
                         tags=("env=prod", "app=chat"))
TEAM = Budget("team", "ml", 0.05, "day")
TAG = Budget("tag", "env=prod", 0.5, "month")


def test_budget_tables_are_parsed_and_checked() -> None:
    teams = budgets.parse("team", json.dumps({"ml": {"usd": 0.05, "period": "day"}}))
    tags = budgets.parse("tag", json.dumps({"env = prod": {"usd": 0.5, "period": "month"}}))
    assert teams == {"ml": TEAM} and tags == {"env=prod": TAG}
    assert [b.id for b in budgets.applicable(RECORD, teams, tags)] == ["key:0123abcd", "team:ml", "tag:env=prod"]
    for bad, message in [({"ml": {"usd": -1}}, "usd must be a number >= 0"),
                         ({"ml": {"usd": 1, "period": "year"}}, "period must be one of"),
                         ({"ml": {"usd": 1, "perod": "day"}}, "unknown setting 'perod'")]:
        with pytest.raises(ValueError, match=message):
            budgets.parse("team", json.dumps(bad))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        budgets.parse("tag", json.dumps({"prod": {"usd": 1}}))


def memory(spent_in_db: float = 0.0, clock: FakeClock | None = None) -> ledger.MemoryLedger:
    async def read(budget, start, pending):
        return spent_in_db, set()
    return ledger.MemoryLedger(read, clock or FakeClock())


NOW = datetime.datetime(2026, 12, 3, 12, 0)


async def test_forty_concurrent_requests_against_room_for_ten_admit_ten() -> None:
    book = memory()
    cost = 0.000024
    team = Budget("team", "ml", cost * 10.5, "day")
    results = await asyncio.gather(*(book.admit(f"f{i}", [team], cost, NOW, "UTC") for i in range(40)))
    assert sum(r is None for r in results) == 10
    refused = next(r for r in results if r is not None)
    assert refused.state.reserved_usd == pytest.approx(cost * 10)


async def test_every_budget_that_applies_must_have_room() -> None:
    book = memory()
    key = budgets.applicable(RECORD, {}, {})[0]
    assert await book.admit("a", [key, TEAM, TAG], 0.04, NOW, "UTC") is None
    await book.settle("a", 0.04)
    refusal = await book.admit("b", [key, TEAM, TAG], 0.02, NOW, "UTC")  # the key has room, the team not
    assert refusal is not None and refusal.state.budget == TEAM
    assert refusal.state.spent_usd == pytest.approx(0.04) and refusal.state.reset_at == datetime.datetime(2026, 12, 4)
    assert await book.admit("c", [key, TAG], 0.02, NOW, "UTC") is None  # a key of another team
    await book.settle("c", 0.0)  # an error: the reservation is given back, nothing spent
    [state] = await book.states([TAG], NOW, "UTC")
    assert state.spent_usd == pytest.approx(0.04) and state.reserved_usd == 0


async def test_a_cent_budget_stops_the_request_that_would_cross_it_and_resets_at_local_midnight() -> None:
    clock = FakeClock(datetime.datetime(2026, 12, 3, 22, 30, tzinfo=datetime.UTC).timestamp())
    book = KeyBook(clock=clock, wallclock=clock)
    book.timezone = "Europe/Berlin"  # UTC+1 in December: the day ends at 23:00 UTC
    book.team_budgets = {"ml": Budget("team", "ml", 0.01, "day")}
    book.memory = memory(clock=clock)
    record = store.KeyRecord("0123abcd", "app", None, None, None, None, None, None, team="ml")
    applying = book.budgets_of(record)
    for i in range(2):
        refusal, _ = await book.admit(f"f{i}", applying, 0.004)
        assert refusal is None
        await book.memory.settle(f"f{i}", 0.004)
    refusal, _ = await book.admit("f2", applying, 0.004)  # $0.008 + $0.004 would cross $0.01
    assert refusal is not None and refusal.state.spent_usd == pytest.approx(0.008)
    assert refusal.state.reset_at == datetime.datetime(2026, 12, 3, 23, 0)
    clock.now += 30 * 60  # 23:00 UTC, midnight in Berlin
    refusal, _ = await book.admit("f3", applying, 0.004)
    assert refusal is None
    book.done()


def priced_flow(cost: float | None, usage: dict | None, status: int = 200) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.response.status_code = status
    flow.metadata.update({md.PROVIDER: "openai", md.MODEL: "m", md.COST_USD: cost, md.USAGE: usage})
    return flow


def test_unknown_prices_and_usage_are_never_free() -> None:
    book = KeyBook(pricing=object())  # type: ignore[arg-type]  # only "is there a pricer" is read
    book.unpriced_usd = 0.01
    assert book.charge(priced_flow(0.0021, {"input_tokens": 5})) == 0.0021
    assert book.charge(priced_flow(None, {"input_tokens": 1500, "output_tokens": 500})) == 0.01
    book.unpriced_per_1k = 0.002
    assert book.charge(priced_flow(None, {"input_tokens": 1500, "output_tokens": 500})) == pytest.approx(0.004)
    assert book.charge(priced_flow(None, None)) == 0.01  # a success whose usage could not be read
    assert book.charge(priced_flow(None, None, status=429)) == 0.0  # refused upstream: nothing spent
    book.done()


async def test_unpriced_models_can_be_refused() -> None:
    book = KeyBook(clock=FakeClock(), wallclock=FakeClock())
    book.unpriced = "refuse"
    book.credentials = {"openai": ["sk-prov"]}

    async def verify(token: str) -> store.KeyRecord:
        return RECORD
    book.verify = verify  # type: ignore[method-assign]
    flow = tflow.tflow()
    flow.request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", b"{}",
                                     {"authorization": f"Bearer {KEY}"})
    flow.metadata.update({md.PROVIDER: "openai", md.FORMAT: "openai", md.MODEL: "no-such-model"})
    check = KeyCheck(book, CatalogService())
    await check.requestheaders(flow)
    await check.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert b"no price is known" in flow.response.content
    book.done()


# --- Redis: two ledgers (two gateways) sharing one server ------------------------------------------

@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def test_two_redis_ledgers_admit_exactly_the_room_and_correct_to_the_exact_cost(redis_server) -> None:
    seeded = []

    async def read(budget, start, pending):
        seeded.append(budget.id)
        return 0.001, set()  # what the database held before Redis counted

    a, b = ledger.RedisLedger(redis_server.url, read), ledger.RedisLedger(redis_server.url, read)
    cost = 0.000024
    team = Budget("team", f"t{id(a)}", 0.001 + cost * 10.5, "day")
    results = await asyncio.gather(*((a if i % 2 else b).admit(f"f{i}", [team], cost, NOW, "UTC")
                                     for i in range(40)))
    assert sum(r is None for r in results) == 10
    assert seeded.count(team.id) >= 1
    [state] = await a.states([team], NOW, "UTC")
    assert state.spent_usd == pytest.approx(0.001) and state.reserved_usd == pytest.approx(cost * 10)
    for i, result in enumerate(results):
        if result is None:  # half finish at a tenth of the estimate, half fail (given back)
            await (a if i % 2 else b).settle(f"f{i}", cost / 10 if i % 4 < 2 else 0.0)
    [state] = await b.states([team], NOW, "UTC")
    assert state.reserved_usd == 0
    assert state.spent_usd == pytest.approx(0.001 + cost / 10 * sum(
        1 for i, r in enumerate(results) if r is None and i % 4 < 2))
    await a.close()
    await b.close()


async def test_the_estimate_is_the_input_and_max_tokens_then_the_last_exact_charge() -> None:
    from addon.services import PricingService
    book = KeyBook(PricingService(CatalogService()))

    def asking(body: dict) -> http.HTTPFlow:
        flow = priced_flow(0.0021, {"input_tokens": 900, "output_tokens": 100})
        flow.request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", json.dumps(body))
        flow.metadata[md.MODEL] = "gpt-4o-mini"
        return flow

    plain = book.estimate(asking({"model": "gpt-4o-mini", "messages": []}))
    capped = book.estimate(asking({"model": "gpt-4o-mini", "messages": [], "max_tokens": 4000}))
    assert plain is not None and capped is not None and 0 < plain < capped
    # gpt-4o-mini: $0.60 per million output tokens (and a few more input tokens for the longer body)
    assert capped - plain == pytest.approx(4000 * 0.6 / 1e6, abs=1e-5)
    flow = asking({"model": "gpt-4o-mini", "messages": []})
    book.asked(flow)
    flow.metadata[md.MODEL] = "gpt-4o-mini-2024-07-18"  # the answer names a dated version
    await book.finished(flow)
    assert book.estimate(asking({"model": "gpt-4o-mini", "messages": [], "max_tokens": 4000})) == 0.0021
    book.done()


@pytest.mark.parametrize("on_failure", ["open", "closed"])
async def test_redis_down_counts_in_process_or_refuses(on_failure: str) -> None:
    from addon.services import SharedState
    from addon.state import StateUnavailable
    from tests.support.gateway import refused_port

    shared = SharedState()
    shared.on_failure = on_failure
    book = KeyBook(shared_state=shared, clock=FakeClock(), wallclock=FakeClock())
    book.memory = memory()
    book.shared = ledger.RedisLedger(f"redis://127.0.0.1:{refused_port()}", book.memory.reader)  # nothing listens
    if on_failure == "closed":
        with pytest.raises(StateUnavailable):
            await book.admit("f1", [TEAM], 0.04)
    else:
        refusal, note = await book.admit("f1", [TEAM], 0.04)
        assert refusal is None and note is not None and "counted by this process only" in note
        refusal, _ = await book.admit("f2", [TEAM], 0.04)  # this process still holds the line
        assert refusal is not None and refusal.state.reserved_usd == pytest.approx(0.04)
    await book.shared.close()
    book.done()


async def test_a_shared_budget_starts_again_at_the_period_boundary(redis_server) -> None:
    async def read(budget, start, pending):
        return 0.0, set()

    shared = ledger.RedisLedger(redis_server.url, read)
    team = Budget("team", f"reset{id(shared)}", 0.01, "day")
    before_midnight = datetime.datetime(2026, 12, 3, 22, 59)  # 23:59 in Berlin
    assert await shared.admit("a", [team], 0.006, before_midnight, "Europe/Berlin") is None
    await shared.settle("a", 0.006)
    refusal = await shared.admit("b", [team], 0.006, before_midnight, "Europe/Berlin")
    assert refusal is not None and refusal.state.reset_at == datetime.datetime(2026, 12, 3, 23, 0)
    assert await shared.admit("c", [team], 0.006, datetime.datetime(2026, 12, 3, 23, 0), "Europe/Berlin") is None
    await shared.close()
