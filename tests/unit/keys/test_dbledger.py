"""The database ledger ([keys] ledger = "database"): two ledgers, each with its own connection and thread
like two worker processes, on one SQLite file (and one PostgreSQL database, where available) admit
exactly the room of a budget, on every budget of a request or none, settle to the exact charge, and
forget the holds of a process that died."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import peewee
import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon.keys import dbledger
from addon.keys.book import KeyBook
from addon.keys.budgets import Budget
from addon.keys.dbledger import DatabaseLedger
from addon.storage import db as dbmod
from addon.workers import WORKER_ENV
from tests.support import pgdb

NOW = datetime.datetime(2026, 12, 3, 12, 0)
COST = 0.000024


class Process:
    """One gateway process's side of the ledger: its own connection, used on one thread of its own."""

    def __init__(self, url: str, seeded: float, clock: list[float]) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.db: peewee.Database = self.executor.submit(dbmod.connect, url).result()
        self.clock = clock  # the wall clock, [seconds]: shared by the pair
        self.ledger = DatabaseLedger(self.run, lambda db, budget, start: seeded, lambda: clock[0])

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(self.db, *args))

    def close(self) -> None:
        self.executor.submit(self.db.close).result()
        self.executor.shutdown()


@pytest.fixture(params=["sqlite", "postgres"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Process, Process]]:
    if request.param == "postgres":
        pgdb.require()
        url = pgdb.create_database()
    else:
        url = f"sqlite:///{tmp_path / 'corral.db'}"
    dbmod.connect(url).close()  # the schema, as the first gateway process makes it
    clock = [1_800_000_000.0]
    a, b = Process(url, 0.001, clock), Process(url, 0.001, clock)
    yield a, b
    a.close()
    b.close()
    if request.param == "postgres":
        pgdb.drop_database(url)


async def test_two_processes_admit_exactly_the_room_and_settle_to_the_exact_cost(pair) -> None:
    a, b = pair
    team = Budget("team", "ml", 0.001 + COST * 10.5, "day")
    results = await asyncio.gather(*((a if i % 2 else b).ledger.admit(f"f{i}", [team], COST, NOW, "UTC")
                                     for i in range(40)))
    assert sum(r is None for r in results) == 10
    refused = next(r for r in results if r is not None)
    assert refused.state.budget == team and refused.state.spent_usd == pytest.approx(0.001)
    [state] = await a.ledger.states([team], NOW, "UTC")
    assert state.spent_usd == pytest.approx(0.001) and state.reserved_usd == pytest.approx(COST * 10)
    for i, result in enumerate(results):
        if result is None:  # half finish at a tenth of the estimate, half fail (given back)
            await (a if i % 2 else b).ledger.settle(f"f{i}", COST / 10 if i % 4 < 2 else 0.0)
    [state] = await b.ledger.states([team], NOW, "UTC")
    assert state.reserved_usd == 0
    assert state.spent_usd == pytest.approx(0.001 + COST / 10 * sum(
        1 for i, r in enumerate(results) if r is None and i % 4 < 2))


async def test_room_is_taken_on_every_budget_or_on_none(pair) -> None:
    a, b = pair
    roomy, tight = Budget("tag", "env=prod", 1.0, "month"), Budget("team", "ml", 0.001 + COST, "day")
    assert await a.ledger.admit("x", [roomy, tight], COST, NOW, "UTC") is None
    refusal = await b.ledger.admit("y", [roomy, tight], COST, NOW, "UTC")
    assert refusal is not None and refusal.state.budget == tight
    [r, t] = await b.ledger.states([roomy, tight], NOW, "UTC")
    assert r.reserved_usd == pytest.approx(COST) and t.reserved_usd == pytest.approx(COST)  # y reserved nothing
    await a.ledger.settle("x", COST)
    [t] = await b.ledger.states([tight], NOW, "UTC")
    assert (t.spent_usd, t.reserved_usd) == (pytest.approx(0.001 + COST), 0)


async def test_the_holds_of_a_process_that_died_stop_counting(pair) -> None:
    a, b = pair
    team = Budget("team", "ml", 0.001 + COST, "day")
    assert await a.ledger.admit("lost", [team], COST, NOW, "UTC") is None  # a never settles: it died
    assert await b.ledger.admit("next", [team], COST, NOW, "UTC") is not None
    a.clock[0] += dbledger.HOLD_TTL + 1
    assert await b.ledger.admit("next", [team], COST, NOW, "UTC") is None


async def test_a_database_that_fails_is_a_state_failure(pair, tmp_path: Path) -> None:
    a, _ = pair
    a.executor.submit(a.db.close).result()
    a.db = dbmod.open_url(f"sqlite:///{tmp_path / 'missing' / 'corral.db'}")  # cannot be opened
    with pytest.raises(dbledger.StateUnavailable, match="database ledger"):
        await a.ledger.admit("f", [Budget("team", "ml", 1.0, "day")], COST, NOW, "UTC")


@pytest.mark.parametrize(("ledger", "worker", "expected"), [
    ("auto", None, type(None)), ("auto", "2", DatabaseLedger), ("database", None, DatabaseLedger),
    ("memory", "2", type(None))])
def test_the_ledger_setting_and_its_automatic_choice(ledger: str, worker: str | None, expected: type,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if worker is None:
        monkeypatch.delenv(WORKER_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKER_ENV, worker)
    book = KeyBook()
    with taddons.context(book) as tctx:
        tctx.configure(book, corral_keys_ledger=ledger)
        assert type(book.shared) is expected  # None: the in-process MemoryLedger
        with pytest.raises(exceptions.OptionsError, match='needs \\[state\\] url = "redis://'):
            tctx.configure(book, corral_keys_ledger="redis")
        with pytest.raises(exceptions.OptionsError, match="ledger: expected"):
            tctx.configure(book, corral_keys_ledger="sqlite")
    book.done()
