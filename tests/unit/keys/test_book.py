"""KeyBook: verified keys and spend cached on an injected clock, database reads off the event loop."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Iterator

import peewee
import pytest

from addon.keys import budgets, store
from addon.keys.book import KeyBook
from addon.keys.budgets import Budget
from addon.storage import db as dbmod
from addon.storage.models import Flow
from tests.support.clock import FakeClock

# The fake clock's epoch is 2023-11-14 22:13:20 UTC: the day ends 1 h 46 min 40 s later.
TO_MIDNIGHT = 6400.0


@pytest.fixture
def setup(tmp_path) -> Iterator[tuple[KeyBook, FakeClock, peewee.Database]]:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    database = dbmod.connect(url)
    clock = FakeClock()
    book = KeyBook(clock=clock, wallclock=clock)
    book.url, book.cache_ttl, book.spend_ttl, book.unpriced_usd = url, 1.0, 2.0, 0.01
    yield book, clock, database
    book.done()
    database.close()


def record_flow(db: peewee.Database, flow_id: str, key_id: str, when: datetime.datetime, cost: float) -> None:
    Flow.insert(id=flow_id, started_at=when, mode="reverse", method="POST", path="/", gateway_key=key_id,
                cost_usd=cost).execute(db)


async def test_a_verified_key_is_reread_after_the_ttl(setup) -> None:
    book, clock, db = setup
    token, row = store.create(db, "app")
    first = await book.verify(token)
    assert first is not None and first.refusal(book.now()) is None
    store.revoke(db, row["id"])
    cached = await book.verify(token)
    assert cached is not None and cached.revoked_at is None  # within cache_ttl: the verified record
    clock.now += 1.0
    again = await book.verify(token)
    assert again is not None and again.refusal(book.now()) is not None  # revoked, seen after 1 s


async def test_database_reads_run_off_the_event_loop(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    book, _, db = setup
    token, _ = store.create(db, "app")
    threads: list[str] = []
    real_verify = store.verify

    def spy(database: peewee.Database, key: str) -> store.KeyRecord | None:
        threads.append(threading.current_thread().name)
        return real_verify(database, key)

    monkeypatch.setattr(store, "verify", spy)
    assert await book.verify(token) is not None
    assert threads and threads[0].startswith("corral-keys") and threads[0] != threading.main_thread().name


async def test_made_up_keys_are_not_looked_up(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    book, _, _ = setup
    monkeypatch.setattr(store, "verify", lambda *a: pytest.fail("looked up"))
    assert await book.verify("ck-not-even-well-formed") is None


def key_budget(record: store.KeyRecord) -> list[Budget]:
    return budgets.applicable(record, {}, {})


async def spent(book: KeyBook, applying: list[Budget]) -> float:
    [state] = await book.states(applying)
    return state.spent_usd


async def test_spend_counts_own_flows_once_and_resets_with_the_period(setup) -> None:
    book, clock, db = setup
    token, _ = store.create(db, "budgeted", budget_usd=1.0, period="day")
    record = await book.verify(token)
    assert record is not None
    mine = key_budget(record)
    assert await spent(book, mine) == 0.0
    assert await book.memory.admit("f1", mine, 0.25, book.now(), "UTC") is None
    assert (await book.states(mine))[0].reserved_usd == pytest.approx(0.25)
    await book.memory.settle("f1", 0.3)  # recorded by this process, its row not written yet
    assert await spent(book, mine) == pytest.approx(0.3)
    record_flow(db, "f1", record.id, book.now(), 0.3)  # the writer's batch lands
    record_flow(db, "f2", record.id, book.now(), 0.2)  # another worker's flow
    assert await spent(book, mine) == pytest.approx(0.3)  # the cached sum, within spend_ttl
    clock.now += 2.0
    assert await spent(book, mine) == pytest.approx(0.5)  # re-read: f1 once, f2 too
    clock.now += TO_MIDNIGHT
    assert await spent(book, mine) == 0.0  # a new day, a new budget


async def test_concurrent_requests_share_one_spend_query(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    book, _, db = setup
    token, _ = store.create(db, "busy", budget_usd=1.0, period="total")
    record = await book.verify(token)
    assert record is not None
    calls = []
    real_spent = store.spent
    monkeypatch.setattr(store, "spent", lambda *a: calls.append(1) or real_spent(*a))
    results = await asyncio.gather(*(spent(book, key_budget(record)) for _ in range(20)))
    assert results == [0.0] * 20 and len(calls) == 1


def test_provider_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mitmproxy import exceptions

    from addon.keys.book import provider_credentials
    monkeypatch.setenv("K1", "sk-one")
    monkeypatch.setenv("K2", "sk-two")
    got = provider_credentials('{"openai": {"api_key": ["env:K1", "env:K2"]}, "anthropic": {"upstream": "x"}}')
    assert got == {"openai": ["sk-one", "sk-two"]}
    book = KeyBook()
    book.credentials = got
    assert [book.credential_for("openai") for _ in range(3)] == ["sk-one", "sk-two", "sk-one"]
    assert book.credential_for("anthropic") is None
    monkeypatch.delenv("K2")
    with pytest.raises(exceptions.OptionsError, match="K2 is not set"):
        provider_credentials('{"openai": {"api_key": "env:K2"}}')


async def test_a_row_written_during_a_refresh_is_never_lost(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    book, _, db = setup
    token, _ = store.create(db, "racy", budget_usd=1.0, period="total")
    record = await book.verify(token)
    assert record is not None
    mine = key_budget(record)
    await book.memory.admit("f1", mine, 0.3, book.now(), "UTC")
    await book.memory.settle("f1", 0.3)
    real_ids = store.recorded_ids

    def the_writer_commits_mid_refresh(database: peewee.Database, flow_ids: list[str]) -> set[str]:
        record_flow(db, "f1", record.id, book.now(), 0.3)
        return real_ids(database, flow_ids)

    monkeypatch.setattr(store, "recorded_ids", the_writer_commits_mid_refresh)
    assert await spent(book, mine) >= 0.3  # counted twice until the next refresh, never not at all
