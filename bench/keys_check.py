"""CPU cost of a gateway key check on the hot path: find the key in the request, verify it from the
cache, then budget admission (a key, a team and a tag budget: estimate, check, reserve) and the
settlement after the response, in process (no Redis). Budget: <= 0.1 ms CPU per request.
With ``--redis URL`` the same through the shared ledger (two Lua scripts per request; the CPU is this
process's, the time in Redis and on the socket is not CPU here).

    .venv/bin/python -m bench.keys_check [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

from mitmproxy import http
from mitmproxy.test import tflow

from addon import metadata as md
from addon.keys import store
from addon.keys.book import KeyBook
from addon.keys.budgets import Budget
from addon.keys.check import presented_key
from addon.services import CatalogService, PricingService

KEY = "ck-0123abcd_" + "s" * 43
BUDGET_MS = 0.1


async def main(n: int = 100_000, redis: str | None = None) -> None:
    book = KeyBook(PricingService(CatalogService()))
    book.spend_ttl = book.memory.ttl = 1e9  # the database sum is cached: what every request but one a second pays

    async def read(budget, start, pending):
        return 0.0, set()
    book.memory.reader = read
    if redis:
        from addon.keys.ledger import RedisLedger
        book.shared = RedisLedger(redis, read)
        n = min(n, 10_000)
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

    start = time.process_time()
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
    total = (time.process_time() - start) / n * 1e3
    where = "Redis" if redis else "in process"
    print(f"key check + admission on 3 budgets + settlement ({where}): {total * 1e3:.2f} µs CPU per request "
          f"(budget {BUDGET_MS * 1e3:.0f} µs: {'PASS' if total <= BUDGET_MS else 'MISS'})")
    if book.shared is not None:
        await book.shared.close()
    book.done()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", help="measure the shared ledger on this Redis (its keys are left to expire)")
    asyncio.run(main(redis=parser.parse_args().redis))
