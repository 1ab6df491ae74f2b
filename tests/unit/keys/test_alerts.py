"""BudgetAlerts and its webhook in process: one event per budget, threshold and period (a fake clock moves
the period on), no resend after a restart, and a webhook that is down or hangs never holds anyone up."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator

import peewee
import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import tflow
from prometheus_client import CollectorRegistry

from addon import metadata as md
from addon.keys import store
from addon.keys.alerts import CHECK_INTERVAL, BudgetAlerts, parse_thresholds, webhook_url
from addon.keys.book import KeyBook
from addon.keys.webhook import WebhookSender
from addon.storage import db as dbmod
from addon.storage.models import BudgetAlert, Flow
from tests.support.clock import START, FakeClock
from tests.support.gateway import refused_port
from tests.support.webhook import WebhookReceiver

TO_MIDNIGHT = 6400.0  # the fake clock's epoch is 22:13:20 UTC


@pytest.fixture
def setup(tmp_path) -> Iterator[tuple[KeyBook, FakeClock, peewee.Database, str]]:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    database = dbmod.connect(url)
    clock = FakeClock()
    book = KeyBook(clock=clock, wallclock=clock)
    book.url, book.cache_ttl, book.spend_ttl = url, 1.0, 0.0
    yield book, clock, database, url
    book.done()
    database.close()


def alerts_for(book: KeyBook, clock: FakeClock, hook: str = "") -> tuple[BudgetAlerts, CollectorRegistry]:
    registry = CollectorRegistry()
    alerts = BudgetAlerts(book, registry, clock=clock)
    alerts._url = book.url
    alerts.webhook.url = hook
    return alerts, registry


async def reach(alerts: BudgetAlerts, book: KeyBook, key_id: str, spent: float) -> list[dict]:
    """The key's $1 daily budget at ``spent`` now (book.now(), the fake clock): the events sent."""
    start, end = store.period_bounds("day", book.now(), book.timezone)
    return await alerts.observe(f"key:{key_id}", spent, 1.0, "day", start, end,
                                {"key_prefix": f"ck-{key_id}", "key_name": "app"})


async def test_each_threshold_fires_once_per_period_and_again_in_the_next(setup) -> None:
    book, clock, _, _ = setup
    with WebhookReceiver() as hook:
        alerts, registry = alerts_for(book, clock, hook.url)
        alerts.webhook.start()
        assert await reach(alerts, book, "0123abcd", 0.4) == []  # 40 %: nothing
        assert len(await reach(alerts, book, "0123abcd", 0.85)) == 2  # 50 % and 80 % at once
        assert await reach(alerts, book, "0123abcd", 0.86) == []  # nothing new
        assert len(await reach(alerts, book, "0123abcd", 1.06)) == 1  # 100 %
        await alerts.webhook.queue.join()
        events = hook.wait_events(3)
        assert [e["threshold"] for e in events] == [0.5, 0.8, 1.0]
        first = events[0]
        assert first["budget"] == "key:0123abcd" and first["key_prefix"] == "ck-0123abcd"
        assert first["key_name"] == "app" and first["limit_usd"] == 1.0 and first["period"] == "day"
        assert first["spent_usd"] == pytest.approx(0.85) and first["reset"] == "2023-11-15T00:00:00Z"
        assert registry.get_sample_value("corral_budget_alerts_total",
                                         {"budget": "key:0123abcd", "threshold": "0.8"}) == 1
        assert registry.get_sample_value("corral_budget_used_ratio", {"budget": "key:0123abcd"}) == pytest.approx(1.06)
        clock.now += TO_MIDNIGHT - 1
        assert await reach(alerts, book, "0123abcd", 1.5) == []  # 23:59:59: still the same day
        clock.now += 1  # midnight: a new period, every threshold again
        assert [e["threshold"] for e in await reach(alerts, book, "0123abcd", 0.6)] == [0.5]
        await alerts.webhook.queue.join()
        events = hook.wait_events(4)
        assert events[3]["period_start"] == "2023-11-15T00:00:00Z" and len(hook.events) == 4
        await alerts.done()


async def test_a_restart_does_not_send_again(setup) -> None:
    book, clock, db, _ = setup
    first, _ = alerts_for(book, clock)
    assert len(await reach(first, book, "0123abcd", 0.9)) == 2
    assert BudgetAlert.select().where(BudgetAlert.budget == "key:0123abcd").count(db) == 2
    restarted, registry = alerts_for(book, clock)  # a new process: nothing in memory
    assert await reach(restarted, book, "0123abcd", 0.9) == []
    assert registry.get_sample_value("corral_budget_alerts_total",
                                     {"budget": "key:0123abcd", "threshold": "0.5"}) is None
    assert [e["threshold"] for e in await reach(restarted, book, "0123abcd", 1.0)] == [1.0]
    await first.done()
    await restarted.done()


async def test_a_key_without_budget_sends_nothing(setup) -> None:
    book, clock, db, _ = setup
    _, row = store.create(db, "unlimited")
    Flow.insert(id="f1", started_at=book.now(), mode="reverse", method="POST", path="/", gateway_key=row["id"],
                cost_usd=100.0).execute(db)
    alerts, _ = alerts_for(book, clock)
    await alerts._pass(row["id"])
    assert BudgetAlert.select().count(db) == 0
    await alerts.done()


async def test_webhook_down_is_retried_with_backoff_then_counted_failed() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    sender = WebhookSender(registry, sleep=clock.sleep)
    sender.url, sender.attempts = f"http://127.0.0.1:{refused_port()}/hook", 4  # nothing listens there
    sender.start()
    assert sender.submit({"budget": "key:ck-1", "threshold": 0.5})
    await clock.run(sender.queue.join())
    assert clock.waits == [0.5, 1.0, 2.0]  # backoff between the 4 attempts
    assert registry.get_sample_value("corral_budget_alert_webhook_events_total", {"outcome": "failed"}) == 1
    await sender.stop()


async def test_a_hanging_webhook_fills_the_queue_and_submit_still_returns_at_once() -> None:
    registry = CollectorRegistry()
    with WebhookReceiver("hang") as hook:
        sender = WebhookSender(registry)
        sender.url, sender.timeout = hook.url, 600.0
        sender.resize(2)
        sender.start()
        assert sender.submit({"n": 1})
        await asyncio.get_running_loop().run_in_executor(None, hook.wait_hung)  # the sender holds event 1
        assert sender.submit({"n": 2}) and sender.submit({"n": 3})  # the queue holds 2
        assert not sender.submit({"n": 4})  # full: dropped, not waited for
        assert registry.get_sample_value("corral_budget_alert_webhook_events_total", {"outcome": "dropped"}) == 1
        assert hook.events == []
        await sender.stop()


def test_options_are_validated() -> None:
    assert parse_thresholds("1.0, 0.5,0.8") == (0.5, 0.8, 1.0)
    assert parse_thresholds("") == ()
    for bad in ("half", "0", "-1"):
        with pytest.raises(exceptions.OptionsError, match="thresholds"):
            parse_thresholds(bad)
    with pytest.raises(exceptions.OptionsError, match="webhook"):
        webhook_url("ftp://example")
    with pytest.raises(exceptions.OptionsError, match="CORRAL_NO_SUCH_VAR"):
        webhook_url("env:CORRAL_NO_SUCH_VAR")
    assert webhook_url("https://hooks.example/x") == "https://hooks.example/x"


def test_period_starts_differ_between_days() -> None:
    day1 = store.period_bounds("day", datetime.datetime(2026, 12, 3, 23, 59))[0]
    day2 = store.period_bounds("day", datetime.datetime(2026, 12, 4, 0, 0))[0]
    assert day1 != day2


async def test_a_webhook_refusing_with_4xx_is_not_retried_but_5xx_is() -> None:
    clock = FakeClock()
    for mode, waits in (("fail", [0.5]), ("refuse", [])):
        with WebhookReceiver(mode) as hook:
            registry = CollectorRegistry()
            sender = WebhookSender(registry, sleep=clock.sleep)
            sender.url, sender.attempts = hook.url, 2
            clock.waits.clear()
            sender.start()
            sender.submit({"budget": "key:1", "threshold": 0.5})
            await clock.run(sender.queue.join())
            assert clock.waits == waits, mode
            assert registry.get_sample_value("corral_budget_alert_webhook_events_total", {"outcome": "failed"}) == 1
            await sender.stop()


async def test_a_budget_that_refused_a_request_counts_as_used_up(setup) -> None:
    book, clock, _, _ = setup
    alerts, registry = alerts_for(book, clock)
    start, end = store.period_bounds("day", book.now())
    events = await alerts.observe("team:ml", 0.96, 1.0, "day", start, end, {"team": "ml"}, used_up=True)
    assert [(e["threshold"], e["used_up"]) for e in events] == [(0.5, False), (0.8, False), (1.0, True)]
    assert registry.get_sample_value("corral_budget_used_ratio", {"budget": "team:ml"}) == pytest.approx(0.96)
    assert await alerts.observe("team:ml", 0.96, 1.0, "day", start, end, {"team": "ml"}, used_up=True) == []
    await alerts.done()


def key_flow(key_id: str) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.metadata.update({md.GATEWAY_KEY: key_id, md.RECORDED: True})
    return flow


async def test_a_busy_key_is_checked_at_once_then_at_most_once_per_interval(setup) -> None:
    book, clock, _, _ = setup
    alerts = BudgetAlerts(book, CollectorRegistry(), clock=clock, sleep=clock.sleep)
    passes: list[tuple[str, float]] = []

    async def counted(key_id: str) -> None:
        passes.append((key_id, clock.now - START))
    alerts._pass = counted  # type: ignore[method-assign]

    async def traffic() -> None:
        for _ in range(50):  # a burst before the check starts: one check covers them all
            alerts.response(key_flow("k1"))
        alerts.error(key_flow("k2"))  # another key has its own check
        await clock.sleep(CHECK_INTERVAL / 2)
        alerts.response(key_flow("k1"))  # during the rest: checked when the interval is over
        await clock.sleep(CHECK_INTERVAL * 4)  # quiet: the second pass ran, then the task ended
        alerts.response(key_flow("k1"))  # after a quiet spell: at once again
        await clock.sleep(CHECK_INTERVAL * 2)

    await clock.run(traffic())
    assert passes == [("k1", 0.0), ("k2", 0.0), ("k1", CHECK_INTERVAL), ("k1", CHECK_INTERVAL * 4.5)]
    assert clock.waits.count(CHECK_INTERVAL) == 4  # k1 three times and k2 once rested, never more often
    assert alerts._again == {} and not alerts._tasks
    await alerts.done()


async def test_shutdown_runs_the_check_a_resting_key_still_owes(setup) -> None:
    book, clock, _, _ = setup
    alerts = BudgetAlerts(book, CollectorRegistry(), clock=clock, sleep=clock.sleep)
    passes: list[str] = []

    async def counted(key_id: str) -> None:
        passes.append(key_id)
    alerts._pass = counted  # type: ignore[method-assign]
    alerts.response(key_flow("k1"))
    for _ in range(5):
        await asyncio.sleep(0)  # the first pass, then the task rests
    alerts.response(key_flow("k1"))  # recorded during the rest
    assert passes == ["k1"]
    await alerts.done()
    assert passes == ["k1", "k1"]
