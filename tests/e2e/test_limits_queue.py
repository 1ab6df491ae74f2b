"""Queueing limits: held flows go in arrival order at the window's pace, other tenants are not slowed,
and a client that gives up while queued is never sent upstream."""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

# Wall-clock timing on a shared 2-core machine: a failure is re-run up to twice before it counts
# (a real defect fails all three runs).
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)

RATE = 2  # requests per second per tenant
LIMITS = [
    {"name": "per-tenant", "requests_per_second": RATE, "provider": "openai", "per": "tenant",
     "behaviour": "queue", "max_wait": 10},
    {"name": "short-wait", "requests_per_minute": 1, "provider": "groq", "per": "tenant",
     "behaviour": "queue", "max_wait": 1},
    {"name": "tight-wait", "requests_per_second": 2, "provider": "mistral", "per": "tenant",
     "behaviour": "queue", "max_wait": 1.2},
]
PATHS = {"openai": "/v1/chat/completions", "groq": "/openai/v1/chat/completions", "mistral": "/v1/chat/completions"}


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {"limits": LIMITS, "limits_settings": {"tenant_header": True}}
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("limits-queue")) as g:
        send(g, "warm-up", "warm-up")  # the first flow pays for lazy imports; ordering tests must not
        yield g


def send(gw: Gateway, tenant: str, tag: str, prefix: str = "openai", timeout: float = 30) -> httpx.Response:
    return httpx.post(
        gw.base(prefix) + PATHS[prefix], json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-corral-tenant": tenant, "x-test-id": tag, "x-mock-exchange": "openai-chat-json-1",
                 "authorization": "Bearer sk-shared-key"},
        timeout=timeout,
    )


def upstream_times(mock: MockUpstream, tag: str) -> list[tuple[str, float]]:
    return [(r.headers.get("x-seq", ""), r.time) for r in list(mock.requests) if r.headers.get("x-test-id") == tag]


def test_queued_requests_go_in_order_at_the_window_pace(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant, n = uuid.uuid4().hex, 6
    results: dict[int, tuple[int, float, str | None]] = {}
    start = time.monotonic()

    def one(i: int) -> None:
        resp = httpx.post(
            gw.base("openai") + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []},
            headers={"x-corral-tenant": tenant, "x-test-id": tag, "x-seq": str(i),
                     "x-mock-exchange": "openai-chat-json-1"}, timeout=30)
        results[i] = (resp.status_code, time.monotonic() - start, resp.headers.get("x-corral-ratelimit-wait-ms"))

    def arrived() -> int:  # requests the gateway has taken in: sent upstream or queued
        report = httpx.get(gw.url + "/_corral/limits").json()
        limit = next(lim for lim in report["limits"] if lim["name"] == "per-tenant")
        queued = sum(b["queued"] for b in limit["buckets"] if b["key"] == f"tenant={tenant}")
        return len(upstream_times(mock, tag)) + queued

    threads = []
    for i in range(n):  # each starts once the previous one is in: the arrival order is certain
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while arrived() < i + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert all(results[i][0] == 200 for i in range(n)), results
    rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), n)
    admitted, waited = {}, {}  # seq -> when the gateway let it go (arrival + time held), time held
    for row in rows:
        seq = next(v for k, v in json.loads(row["request_headers"]) if k.lower() == "x-seq")
        started = datetime.datetime.fromisoformat(str(row["started_at"])).replace(tzinfo=datetime.UTC).timestamp()
        admitted[int(seq)] = started + (row["wait_ms"] or 0) / 1000
        waited[int(seq)] = row["wait_ms"]
    for seq, held in waited.items():  # the client is told how long it was held, and only then
        header = results[seq][2]
        assert (header is None) == (held is None), (seq, header, held)
        assert header is None or abs(int(header) - held) <= 1
    assert any(held for held in waited.values())
    order = sorted(admitted, key=admitted.get)
    assert order == list(range(n)), (order, admitted)  # first come, first served
    upstream_order = [int(seq) for seq, _ in sorted(upstream_times(mock, tag), key=lambda a: a[1])]
    assert sorted(upstream_order) == list(range(n))
    for i in range(RATE, n):
        # Moving window of 1 s: request i goes when request i - RATE's hit expires; not before, and
        # not much later (generous bound for a loaded machine).
        gap = admitted[i] - admitted[i - RATE]
        assert 0.97 <= gap <= 1.8, (i, admitted)
    assert waited[0] is None  # went at once
    assert waited[n - 1] is not None and waited[n - 1] >= 200, waited  # queued ones say how long


def test_unrelated_tenant_is_not_delayed(gw: Gateway, tag: str) -> None:
    busy = uuid.uuid4().hex
    threads = [threading.Thread(target=send, args=(gw, busy, tag)) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the busy tenant now has a queue about 3 s long
    t0 = time.monotonic()
    resp = send(gw, uuid.uuid4().hex, tag)
    other = time.monotonic() - t0
    for t in threads:
        t.join(30)
    assert resp.status_code == 200
    assert other < 0.7, f"an unrelated tenant waited {other:.2f}s behind a busy one"


def test_client_that_leaves_while_queued_is_never_sent_upstream(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant = uuid.uuid4().hex
    assert send(gw, tenant, tag).status_code == 200
    assert send(gw, tenant, tag).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        send(gw, tenant, tag + "-gone", timeout=0.3)  # queued for ~1 s; the client gives up first
    time.sleep(1.5)  # past the moment it would have been let through
    assert len(upstream_times(mock, tag)) == 2
    report = httpx.get(gw.url + "/_corral/limits").json()
    limit = next(lim for lim in report["limits"] if lim["name"] == "per-tenant")
    bucket = next(b for b in limit["buckets"] if b["key"] == f"tenant={tenant}")
    assert bucket["windows"][0]["used"] == 0 and bucket["queued"] == 0  # it took no slot and left the queue
    assert upstream_times(mock, tag + "-gone") == []
    row = gw.row_for(tag + "-gone")
    assert "client disconnected while queued" in row["error"]
    assert row["wait_ms"] and row["wait_ms"] >= 200


def test_queue_longer_than_max_wait_is_rejected(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant = uuid.uuid4().hex
    assert send(gw, tenant, tag, prefix="groq").status_code == 200
    t0 = time.monotonic()
    resp = send(gw, tenant, tag, prefix="groq")  # the next slot is a minute away; max_wait is 1 s
    assert time.monotonic() - t0 < 5
    assert resp.status_code == 429
    assert resp.json()["error"]["message"].startswith("rate limited by corral")
    assert 50 <= int(resp.headers["retry-after"]) <= 60
    assert resp.headers["x-corral-ratelimit-name"] == "short-wait"
    assert len(upstream_times(mock, tag)) == 1
    row = gw.wait_rows(lambda r: tag in (r.get("request_headers") or "") and r["status"] == 429)[0]
    assert row["error"].startswith("rate limited by corral")


def test_queued_then_timed_out_is_rejected_with_its_wait_recorded(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant, results = uuid.uuid4().hex, []
    threads = [
        threading.Thread(target=lambda: results.append(send(gw, tenant, tag, prefix="mistral"))) for _ in range(6)
    ]
    for t in threads:
        t.start()
        time.sleep(0.03)
    for t in threads:
        t.join(30)
    statuses = sorted(r.status_code for r in results)
    # 2/s with max_wait 1.2 s: 4 fit when the 6 arrive together; on a loaded machine the arrivals
    # spread out and a 5th may fit. Never all of them, and what passed is exactly what went upstream.
    passed = statuses.count(200)
    assert 4 <= passed <= 5 and statuses.count(429) == 6 - passed, statuses
    assert len(upstream_times(mock, tag)) == passed
    rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 6)
    rejected = [r for r in rows if r["status"] == 429]
    assert len(rejected) == 6 - passed
    for row in rejected:  # they queued first, then gave up at max_wait's horizon
        assert row["error"].startswith("rate limited by corral")
        assert row["wait_ms"] is not None and row["wait_ms"] >= 500
    late = [r for r in results if r.status_code == 429]
    assert all(int(r.headers["x-corral-ratelimit-wait-ms"]) >= 500 for r in late)  # the client is told too
