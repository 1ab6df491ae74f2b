"""CPU cost of a gateway key check on the hot path: find the key in the request, verify it from the
cache, then budget admission (a key, a team and a tag budget: estimate, check, reserve) and the
settlement after the response, in process (no Redis); then the whole path as the gateway runs it
(KeyCheck's two hooks with the credential swap, KeySpend's and BudgetAlerts' response hooks, on a
request with an SDK's headers), plus the work a running gateway repeats, spread over the requests of
the bench's rate: the budget alert check of the key (once per ``CHECK_INTERVAL`` while its flows keep
coming) and the database reads (the key re-verified every ``[keys] cache_ttl``, the budget's sum every
``spend_ttl``, on the keys thread). Budget: <= 0.1 ms CPU per request.
With ``--redis URL`` the same through the shared ledger (two Lua scripts per request; the CPU is this
process's, the time in Redis and on the socket is not CPU here). With ``--database`` the same through
the database ledger (``[keys] ledger = "database"``, a SQLite file: two write transactions per request
on the keys thread; CPU of every thread of this process, and the wall time of one request's admission
and settlement).

    .venv/bin/python -m bench.keys_check [--redis redis://127.0.0.1:6379/15 | --database]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time

from mitmproxy import http
from mitmproxy.test import tflow
from prometheus_client import CollectorRegistry

from addon import metadata as md
from addon.keys import store
from addon.keys.alerts import CHECK_INTERVAL, BudgetAlerts
from addon.keys.book import KeyBook
from addon.keys.budgets import Budget
from addon.keys.check import KeyCheck, presented_key
from addon.keys.spend import KeySpend
from addon.services import CatalogService, PricingService
from addon.storage import db as dbmod

KEY = "ck-0123abcd_" + "s" * 43
BUDGET_MS = 0.1
RATE = 40.0  # requests per second of the bench's budget pair (bench/scenarios.py)
# What the openai Python SDK sends with a chat completion (values shortened).
SDK_HEADERS = {"host": "127.0.0.1:8080", "accept-encoding": "gzip, deflate", "connection": "keep-alive",
               "accept": "application/json", "content-type": "application/json", "user-agent": "OpenAI/Python 1.99.0",
               "x-stainless-lang": "python", "x-stainless-package-version": "1.99.0", "x-stainless-os": "Linux",
               "x-stainless-arch": "x64", "x-stainless-runtime": "CPython", "x-stainless-runtime-version": "3.13.0",
               "authorization": f"Bearer {KEY}", "x-stainless-async": "false", "x-stainless-retry-count": "0",
               "x-stainless-read-timeout": "600", "content-length": "89"}


async def main(n: int = 100_000, redis: str | None = None, database: bool = False) -> None:
    book = KeyBook(PricingService(CatalogService()))
    book.spend_ttl = book.memory.ttl = 1e9  # the database sum is cached: what every request but one a second pays

    async def read(budget, start, pending):
        return 0.0, set()
    book.memory.reader = read
    if redis:
        from addon.keys.ledger import RedisLedger
        book.shared = RedisLedger(redis, read)
        n = min(n, 10_000)
    tmp = tempfile.TemporaryDirectory()
    if database:
        from addon.keys.dbledger import DatabaseLedger
        book.url = f"sqlite:///{tmp.name}/corral.db"
        dbmod.connect(book.url).close()
        book.shared = DatabaseLedger(book._off_loop, lambda db, budget, start: 0.0, time.time)
        n = min(n, 5_000)
    record = store.KeyRecord("0123abcd", "app", None, None, 1e6, "day", None, None, team="ml", tags=("env=prod",))
    book.team_budgets = {"ml": Budget("team", "ml", 1e6, "day")}
    book.tag_budgets = {"env=prod": Budget("tag", "env=prod", 1e6, "month")}
    book._verified[hashlib.sha256(KEY.encode()).digest()] = (time.monotonic() + 1e9, record)
    request = http.Request.make("POST", "https://x/v1/chat/completions", b'{"model": "gpt-4o-mini"}', {
        "authorization": f"Bearer {KEY}", "content-type": "application/json", "user-agent": "OpenAI/Python"})
    flow = tflow.tflow(resp=True)
    flow.request = request
    flow.metadata.update({md.PROVIDER: "openai", md.FORMAT: "openai", md.MODEL: "gpt-4o-mini",
                          md.COST_USD: 0.000024, md.USAGE: {"input_tokens": 92, "output_tokens": 17}})

    start = time.process_time()
    for _ in range(n):
        token = presented_key(request)
        assert token is not None and await book.verify(token) is record
    check = (time.process_time() - start) / n * 1e3
    print(f"presented_key + cached verify: {check * 1e3:.2f} µs CPU per request")

    start, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        flow.id = str(i)
        token = presented_key(request)
        assert token is not None
        found = await book.verify(token)
        assert found is record
        book.asked(flow)
        refusal, _ = await book.admit(flow.id, book.budgets_of(found), book.estimate(flow) or 0.0)
        assert refusal is None
        await book.finished(flow)
    total, elapsed = (time.process_time() - start) / n * 1e3, (time.perf_counter() - wall) / n * 1e3
    where = "Redis" if redis else "database ledger, SQLite" if database else "in process"
    print(f"key check + admission on 3 budgets + settlement ({where}): {total * 1e3:.2f} µs CPU per request "
          f"(budget {BUDGET_MS * 1e3:.0f} µs: {'PASS' if total <= BUDGET_MS else 'MISS'})"
          + (f"; {elapsed:.2f} ms wall per request, one at a time" if database else ""))
    if redis:
        await book.shared.close()  # type: ignore[union-attr]
    book.done()
    tmp.cleanup()
    if not redis and not database:
        await whole_path(n // 2)


async def whole_path(n: int) -> None:
    """KeyCheck and KeySpend hooks as the gateway runs them, and the database reads they repeat."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/corral.db"
        database = dbmod.connect(url)
        token, _ = store.create(database, "bench", budget_usd=1e6, period="day")
        book = KeyBook(PricingService(CatalogService()))
        book.url, book.credentials = url, {"openai": ["sk-bench-provider-key"]}
        book.required = True
        cache_ttl, spend_ttl = book.cache_ttl, book.spend_ttl  # the defaults, for the reads below
        book.cache_ttl = book.spend_ttl = book.memory.ttl = 1e9  # the hooks alone first
        check, spend = KeyCheck(book, CatalogService()), KeySpend(book)
        alerts = BudgetAlerts(book, CollectorRegistry())
        alerts._url = url
        headers = {**SDK_HEADERS, "authorization": f"Bearer {token}"}

        def fresh_flow(i: int) -> http.HTTPFlow:
            flow = tflow.tflow()
            flow.id = str(i)
            flow.request = http.Request.make("POST", "http://127.0.0.1:8080/openai/v1/chat/completions",
                                             b'{"model": "gpt-4o-mini", "messages": []}', headers)
            flow.metadata.update({md.PROVIDER: "openai", md.FORMAT: "openai"})
            return flow

        answer = http.Response.make(200, b"{}")

        async def one(flow: http.HTTPFlow) -> None:
            await check.requestheaders(flow)
            flow.metadata[md.MODEL] = "gpt-4o-mini"  # the Router reads it between the hooks
            await check.request(flow)
            assert flow.response is None and flow.request.headers["authorization"] == "Bearer sk-bench-provider-key"
            flow.response = answer
            flow.metadata.update({md.COST_USD: 0.000024, md.USAGE: {"input_tokens": 92, "output_tokens": 17}})
            await spend.response(flow)
            flow.metadata[md.RECORDED] = True
            alerts.response(flow)

        await one(fresh_flow(-1))  # the first verify and spend read
        spent = 0.0
        for batch in range(0, n, 1000):  # flows built off the clock (mitmproxy parses each request), 1,000 at a time
            flows = [fresh_flow(i) for i in range(batch, min(n, batch + 1000))]
            start = time.process_time()
            for flow in flows:
                await one(flow)
            spent += time.process_time() - start
        hooks = spent / n * 1e3

        # A gateway repeats the database reads: the key every cache_ttl, the budget's sum every spend_ttl,
        # with the flows settled since the last read pending (the recorder has written them by then).
        record = await book.verify(token)
        assert record is not None
        book.memory._pending.clear()
        book.memory.clear()
        for i in range(int(RATE * spend_ttl)):
            settled = fresh_flow(n + i)
            await book.admit(settled.id, book.budgets_of(record), 0.000024)
            await book.settle(settled, 0.000024)
        rounds = 200
        key_id = record.id
        start = time.process_time()
        for _ in range(rounds):
            await alerts._pass(key_id)
        alert_ms = (time.process_time() - start) / rounds * 1e3
        await alerts.done()
        start = time.process_time()
        for _ in range(rounds):
            book._verified.clear()
            assert await book.verify(token) is not None
        verify_ms = (time.process_time() - start) / rounds * 1e3
        start = time.process_time()
        for _ in range(rounds):
            book.memory.clear()
            await book.states(book.budgets_of(record))
        spend_ms = (time.process_time() - start) / rounds * 1e3
        book.done()
        database.close()
    reads = verify_ms / (RATE * cache_ttl) + spend_ms / (RATE * spend_ttl) + alert_ms / (RATE * CHECK_INTERVAL)
    print(f"KeyCheck + KeySpend + BudgetAlerts hooks (SDK headers, credential swap, 1 budget, settlement): "
          f"{hooks * 1e3:.2f} µs CPU per request")
    print(f"budget alert check: {alert_ms * 1e3:.0f} µs every {CHECK_INTERVAL:g} s while the key is busy")
    print(f"database reads: key re-verified {verify_ms * 1e3:.0f} µs every {cache_ttl:g} s, budget sum "
          f"{spend_ms * 1e3:.0f} µs every {spend_ttl:g} s: {reads * 1e3:.2f} µs CPU per request at {RATE:g} req/s")
    whole = hooks + reads
    print(f"whole key path at {RATE:g} req/s: {whole * 1e3:.2f} µs CPU per request "
          f"(budget {BUDGET_MS * 1e3:.0f} µs: {'PASS' if whole <= BUDGET_MS else 'MISS'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", help="measure the shared ledger on this Redis (its keys are left to expire)")
    parser.add_argument("--database", action="store_true", help="measure the database ledger on a SQLite file")
    parser.add_argument("-n", type=int, default=100_000, help="requests per measurement (the whole path: half)")
    args = parser.parse_args()
    asyncio.run(main(n=args.n, redis=args.redis, database=args.database))
