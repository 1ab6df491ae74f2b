"""A slow viewer query never stalls flows: while /api/analytics chews through a big range on a worker
thread, requests through the gateway keep their usual latency (generous relative bound, no timing
assertions on absolute speed)."""

from __future__ import annotations

import datetime
import sqlite3
import statistics
import threading
import time

import httpx

from tests.support.gateway import Gateway, free_port

ROWS = 120_000


def fill(path: str) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    con = sqlite3.connect(path)
    cols = ("id", "started_at", "mode", "provider", "method", "path", "model", "status", "stream", "duration_ms",
            "ttfb_ms", "input_tokens", "output_tokens", "cost_usd", "unpriced", "cache", "retries", "complete")
    rows = [(f"synthetic-{i}", str(now - datetime.timedelta(seconds=i)), "reverse", "openai", "POST", "/v1/x",
             "gpt-4o-mini", 200, 0, 100.0 + i % 50, 10.0, 10, 5, 0.0001, 0, "off", 0, 1) for i in range(ROWS)]
    con.executemany(f"INSERT INTO flows ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    con.commit()
    con.close()


def test_slow_analytics_does_not_stall_flows(mock, tmp_path) -> None:
    port = free_port()
    gw = Gateway(mock.url, workdir=tmp_path, config={"viewer": {"listen": f"127.0.0.1:{port}"}})
    with gw:
        pass  # first start creates the schema
    fill(str(tmp_path / "corral.db"))
    with gw:
        viewer = f"http://127.0.0.1:{port}/api/analytics"
        url = gw.base("openai") + "/v1/chat/completions"
        headers = {"x-mock-exchange": "openai-chat-json-1", "authorization": "Bearer sk-x"}
        with httpx.Client(timeout=30) as client:
            def one() -> float:
                t = time.perf_counter()
                assert (
                    client.post(url, json={"model": "gpt-4o-mini", "messages": []}, headers=headers).status_code == 200
                )
                return time.perf_counter() - t

            quiet = statistics.median(one() for _ in range(10))
            slow_query = {}

            def analytics() -> None:
                t = time.perf_counter()
                r = httpx.get(viewer, params={"since": "30d"}, timeout=120)
                slow_query["s"] = time.perf_counter() - t
                slow_query["requests"] = r.json()["total"]["requests"]

            worker = threading.Thread(target=analytics)
            worker.start()
            time.sleep(0.02)
            during = []
            while worker.is_alive() and len(during) < 30:
                during.append(one())
            worker.join()
    assert slow_query["requests"] >= ROWS
    assert during, "the analytics query finished before any flow could be timed"
    # If the query ran on the event loop, a flow sent meanwhile would wait for all of it.
    assert max(during) < max(0.5, slow_query["s"] / 2), (quiet, during, slow_query)
