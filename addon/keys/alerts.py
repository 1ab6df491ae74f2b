"""BudgetAlerts: one event per budget, threshold and period when spend crosses ``[alerts] thresholds``.

After KeySpend (which has settled the flow's cost on its budgets), a recorded flow of a gateway key
schedules a check of that key *off the request path*: a task of its own that reads the state of every
budget the key counts towards (its own, its team's, its tags': ``KeyBook.states(budgets_of(record))``,
the numbers admission uses), so no response waits for it. For every threshold the spend has reached
(``spent / limit >= 0.8``) and that has not fired in this period, the event goes to the log (warning),
to ``/metrics`` (``corral_budget_alerts_total{budget,threshold}``, ``corral_budget_used_ratio{budget}``)
and to ``[alerts] webhook`` (addon/keys/webhook.py: queued, retried, never waited for). Admission refuses
the request that *would* cross a budget, so spend may stop short of the limit: a budget that refused a
request (``corral.budget_refused``) counts as used up, 100 %.

One check per key at a time, and at most one every ``CHECK_INTERVAL``: the first flow after a quiet
spell is checked at once; the task then stays ``CHECK_INTERVAL`` and checks again only if more of the
key's flows were recorded meanwhile. A busy key therefore costs each flow a dict lookup, not a task and
a read of its budgets, and an alert goes out at most ``CHECK_INTERVAL`` after the flow that crossed it
(at shutdown the pending checks run before the process ends).

Exactly once per (budget, threshold, period): before an event goes out, a row is inserted into the
``budget_alerts`` table, whose unique index (budget, threshold, period_start) is the claim. A restart,
or another gateway process on the same database, finds the row and sends nothing; a new period has a
new ``period_start`` and fires again. The claim comes first, so a crash between claim and webhook
loses that webhook call rather than sending it twice (the log line and the row stay). With the
database unreachable the event still goes out (a repeat after a restart is better than silence).

"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peewee
from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry, Counter, Gauge

from addon import metadata as md, money
from addon.keys import store
from addon.keys.book import KeyBook
from addon.keys.webhook import WebhookSender
from addon.storage import db as dbmod
from addon.storage.models import BudgetAlert

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = "0.5,0.8,1.0"
CHECK_INTERVAL = 0.5  # seconds between two checks of one key's budgets while its flows keep coming
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.5,0.8,1.0"`` -> (0.5, 0.8, 1.0): fractions of the limit, > 0, sorted; "" means no alerts."""
    out = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not 0 < value <= 100:
            raise exceptions.OptionsError(f"[alerts] thresholds: {part!r} is not a fraction of the budget "
                                          "like 0.5 (50 %) or 1.0 (100 %)")
        out.add(value)
    return tuple(sorted(out))


def webhook_url(value: str) -> str:
    """``[alerts] webhook``: an http(s) URL, or "env:VAR" naming one (webhook URLs often hold a secret)."""
    if value.startswith("env:"):
        if not os.environ.get(value[4:]):
            raise exceptions.OptionsError(f"[alerts] webhook: environment variable {value[4:]} is not set")
        value = os.environ[value[4:]]
    parts = urllib.parse.urlsplit(value)
    if value and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise exceptions.OptionsError("[alerts] webhook: expected an http:// or https:// URL (or \"env:VAR\")")
    return value


def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else f"{value:%Y-%m-%dT%H:%M:%SZ}"


class BudgetAlerts:
    def __init__(self, book: KeyBook, registry: CollectorRegistry, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.book = book
        self.clock = clock
        self.sleep = sleep
        self.webhook = WebhookSender(registry)
        self.thresholds: tuple[float, ...] = parse_thresholds(DEFAULT_THRESHOLDS)
        self.fired = Counter("corral_budget_alerts", "Budget alert events (one per budget, threshold and period)",
                             ["budget", "threshold"], registry=registry)
        self.used = Gauge("corral_budget_used_ratio", "Spend / limit of a budget in its current period, "
                          "as of its last check", ["budget"], registry=registry)
        self._claimed: set[tuple[str, float, datetime.datetime]] = set()  # fired (or found fired) here
        self._records: dict[str, tuple[float, store.KeyRecord | None]] = {}  # key id -> (until, record)
        self._again: dict[str, bool] = {}  # key id being checked (or resting) -> flows came since its last pass
        self._used_up: set[str] = set()  # budgets that refused a request since their last check
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-alerts")
        self._db: peewee.Database | None = None
        self._url = ""

    # --- options ----------------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("corral_alerts_thresholds", str, DEFAULT_THRESHOLDS,
                          "Fractions of a budget at which an alert fires once per period (log, /metrics, "
                          "webhook), e.g. 0.5,0.8,1.0. Empty: no alerts.")
        loader.add_option("corral_alerts_webhook", str, "",
                          "URL (or env:VAR) that budget alerts are POSTed to as JSON; empty: log and /metrics only.")
        loader.add_option("corral_alerts_webhook_timeout", str, "5", "Seconds one webhook attempt may take.")
        loader.add_option("corral_alerts_webhook_attempts", int, 5,
                          "Attempts per alert event (exponential backoff between them) before it is given up.")
        loader.add_option("corral_alerts_queue", int, 1000,
                          "Alert events waiting for the webhook at most; more are dropped and counted.")

    def configure(self, updated: set[str]) -> None:
        if "corral_alerts_thresholds" in updated:
            self.thresholds = parse_thresholds(ctx.options.corral_alerts_thresholds)
        if "corral_alerts_webhook" in updated:
            self.webhook.url = webhook_url(ctx.options.corral_alerts_webhook)
        if "corral_alerts_webhook_timeout" in updated:
            try:
                timeout = float(ctx.options.corral_alerts_webhook_timeout)
            except ValueError:
                timeout = 0.0
            if not 0 < timeout <= 600:
                raise exceptions.OptionsError("[alerts] webhook_timeout: expected seconds in (0, 600], got "
                                              f"{ctx.options.corral_alerts_webhook_timeout!r}")
            self.webhook.timeout = timeout
        if ctx.options.corral_alerts_webhook_attempts < 1 or ctx.options.corral_alerts_queue < 1:
            raise exceptions.OptionsError("[alerts] webhook_attempts and queue must be at least 1")
        self.webhook.attempts = ctx.options.corral_alerts_webhook_attempts
        self.webhook.resize(ctx.options.corral_alerts_queue)
        if self.book.url != self._url:
            self._url, self._db = self.book.url, None
            self._records.clear()

    def running(self) -> None:
        self.webhook.start()

    async def done(self) -> None:
        pending = [key_id for key_id, again in self._again.items() if again]
        for task in list(self._tasks):
            task.cancel()
        if pending:  # flows recorded during a key's rest: their check now, not never
            try:
                await asyncio.wait_for(asyncio.gather(*(self._pass(k) for k in pending)), 5.0)
            except (TimeoutError, Exception):
                logger.warning("corral: budget alert checks at shutdown did not finish", exc_info=True)
        await self.webhook.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- flows --------------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        self._observe_flow(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._observe_flow(flow)

    def _observe_flow(self, flow: http.HTTPFlow) -> None:
        key_id = flow.metadata.get(md.GATEWAY_KEY)
        if key_id is None or not flow.metadata.get(md.RECORDED) or not self.thresholds:
            return
        if refused := flow.metadata.get(md.BUDGET_REFUSED):
            self._used_up.add(refused)
        if key_id in self._again:  # a check of this key is under way or resting: one more after it
            self._again[key_id] = True
            return
        self._again[key_id] = False
        task = asyncio.get_running_loop().create_task(self._check_key(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_key(self, key_id: str) -> None:
        cancelled = False
        try:
            while True:
                self._again[key_id] = False
                started = self.clock()
                await self._pass(key_id)
                await self.sleep(max(0.0, started + CHECK_INTERVAL - self.clock()))
                if not self._again.get(key_id):
                    break
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception:
            logger.exception("corral: budget alert check of ck-%s failed", key_id)
        finally:
            if not cancelled or not self._again.get(key_id):  # cancelled at shutdown: done() runs a pending one
                self._again.pop(key_id, None)

    async def _pass(self, key_id: str) -> None:
        """One check of every budget the key counts towards."""
        record = await self._record(key_id)
        if record is None:
            return
        for state in await self.book.states(self.book.budgets_of(record)):  # its own, its team's and its tags'
            budget = state.budget
            about = ({"key_prefix": record.prefix, "key_name": record.name} if budget.kind == "key"
                     else {budget.kind: budget.name})
            await self.observe(budget.id, state.spent_usd, budget.usd, budget.period, state.period_start,
                               state.reset_at, about, used_up=budget.id in self._used_up)
            self._used_up.discard(budget.id)

    # --- any budget -------------------------------------------------------------------------------

    async def observe(self, budget: str, spent: float, limit: float, period: str, start: datetime.datetime,
                      end: datetime.datetime | None, about: dict[str, Any],
                      used_up: bool = False) -> list[dict[str, Any]]:
        """Fire the thresholds ``spent / limit`` has reached and that did not fire this period; the events sent.

        ``used_up``: the budget refused a request (no room for it), so it counts as 100 % even though the
        refused request's cost was never spent (admission refuses the request that *would* cross it)."""
        if limit <= 0:
            return []
        ratio = max(spent / limit, 1.0) if used_up else spent / limit
        sent: list[dict[str, Any]] = []
        for threshold in self.thresholds:
            if ratio < threshold:
                break
            slot = (budget, threshold, start)
            if slot in self._claimed:
                continue
            if len(self._claimed) > 100_000:  # old periods' slots: the table still has them
                self._claimed.clear()
            self._claimed.add(slot)
            event = {"event": "budget_alert", "budget": budget, **about, "spent_usd": round(spent, 9),
                     "limit_usd": limit, "threshold": threshold,
                     "used_up": spent / limit < threshold,  # reached by a refusal, not by what was spent
                     "period": period, "period_start": _iso(start), "reset": _iso(end), "at": _iso(self.book.now())}
            if not await self._claim(event, start):
                continue  # fired before: by this gateway before a restart, or by another one
            self._fire(event)
            sent.append(event)
        self.used.labels(budget).set(spent / limit)  # last: once it shows, this check's events are out
        return sent

    def _fire(self, event: dict[str, Any]) -> None:
        threshold = event["threshold"]
        who = (f"gateway key {event['key_prefix']} ({event['key_name']})" if event.get("key_prefix")
               else event["budget"])
        when = f"resets at {event['reset'][:16].replace('T', ' ')} UTC" if event["reset"] else "does not reset"
        logger.warning("corral: budget alert: %s reached %g%% of its %s %s budget: spent %s%s; it %s",
                       who, threshold * 100, money.usd(event["limit_usd"]),
                       _ADJECTIVE.get(event["period"], event["period"]), money.usd(event["spent_usd"]),
                       ", no room for the next request" if event["used_up"] else "", when)
        self.fired.labels(event["budget"], f"{threshold:g}").inc()
        self.webhook.submit(event)

    # --- the database, on a thread of its own -------------------------------------------------------

    def _database(self) -> peewee.Database:
        if self._db is None:  # the recorder has created the schema (budget_alerts included)
            self._db = dbmod.open_url(self._url)
        return self._db

    async def _off_loop(self, fn: Callable[[peewee.Database], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self._database()))

    async def _claim(self, event: dict[str, Any], start: datetime.datetime) -> bool:
        def insert(db: peewee.Database) -> bool:
            try:
                with db.atomic():
                    BudgetAlert.insert(budget=event["budget"], threshold=event["threshold"], period_start=start,
                                       fired_at=self.book.now(), spent_usd=event["spent_usd"],
                                       limit_usd=event["limit_usd"], detail=json.dumps(event)).execute(db)
                return True
            except peewee.IntegrityError:
                return False

        try:
            return bool(await self._off_loop(insert))
        except Exception as e:
            logger.warning("corral: budget alert of %s not recorded (sent anyway): %s", event["budget"], e)
            return True

    async def _record(self, key_id: str) -> store.KeyRecord | None:
        cached = self._records.get(key_id)
        if cached is not None and cached[0] > self.clock():
            return cached[1]

        def read(db: peewee.Database) -> store.KeyRecord | None:
            rows = store.key_row(db, key_id)
            return store.record_of(rows[0]) if rows else None

        record = await self._off_loop(read)
        self._records[key_id] = (self.clock() + max(self.book.cache_ttl, 1.0), record)
        return record
