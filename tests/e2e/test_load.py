"""Load without loss, and crash safety of the record.

The 20,000-request run is marked heavy (`make test-heavy`, a separate CI step).
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability

JSON_NAME = "openai-chat-json-2"
STREAM_NAME = "openai-chat-stream-1"


async def _hammer(gw: Gateway, total: int, concurrency: int) -> list[int]:
    bodies = {n: json.dumps(corpus.load(n)["request"]["body"]).encode() for n in (JSON_NAME, STREAM_NAME)}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    statuses: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                name = STREAM_NAME if i % 2 else JSON_NAME
                async with client.stream(
                    "POST", gw.base("openai") + "/v1/chat/completions", content=bodies[name],
                    headers={"content-type": "application/json", "x-mock-exchange": name,
                             "authorization": "Bearer sk-load"},
                ) as resp:
                    await resp.aread()
                    statuses.append(resp.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@reliability(
    "load and shutdown",
    "20,000 requests at concurrency 64, JSON and streams mixed",
    "20,000 answers",
    "exactly 20,000 rows, usage on all",
)
@pytest.mark.heavy
def test_20000_requests_at_concurrency_64_give_exactly_20000_rows(tmp_path) -> None:
    total = 20_000
    with MockUpstream(chunk_delay=0.0) as mock:
        gw = Gateway(mock.url, workdir=tmp_path).start()
        try:
            statuses = asyncio.run(_hammer(gw, total, 64))
        finally:
            gw.stop()
    assert statuses.count(200) == total
    counts = gw.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, "
        "SUM(CASE WHEN input_tokens IS NULL OR output_tokens IS NULL THEN 1 ELSE 0 END) AS missing FROM flows"
    )[0]
    assert counts["n"] == total and counts["ids"] == total
    assert counts["missing"] == 0, "the mock sent usage on every exchange"


@reliability(
    "load and shutdown",
    "SIGKILL, then restart on the same database",
    "the restarted gateway works",
    "database intact (WAL), integrity_check ok",
)
def test_after_sigkill_the_database_opens_cleanly_and_the_gateway_works(tmp_path) -> None:
    with MockUpstream(chunk_delay=0.0) as mock:
        mock.default = JSON_NAME
        gw = Gateway(mock.url, workdir=tmp_path).start()
        asyncio.run(_hammer(gw, 60, 8))  # several batches of the writer: a WAL with content to replay
        gw.wait_rows(lambda r: True, 60)
        gw.stop(signal.SIGKILL)
        gw.start()  # same database file, WAL left behind by the killed process
        try:
            assert asyncio.run(_hammer(gw, 20, 4)) == [200] * 20
            gw.wait_rows(lambda r: True, 80)
            if not gw.is_postgres:  # PostgreSQL recovers by itself; SQLite must replay its WAL
                integrity = gw.query("PRAGMA integrity_check")[0]
                assert list(integrity.values()) == ["ok"]
        finally:
            gw.stop()
