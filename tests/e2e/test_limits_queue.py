"""Queueing limits end to end: a held request goes through and says how long it was held, another
tenant is not held behind a busy one, a client that gives up while queued is never sent upstream,
and a wait beyond max_wait is a native 429.

The pace and order of a queue are tested in process on a fake clock (tests/unit/limits/test_limiter.py);
here the assertions are what the clients got, what reached the upstream and what the rows record,
never elapsed time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.waiting import until

LIMITS = [
    {"name": "per-tenant", "requests_per_second": 2, "provider": "openai", "per": "tenant",
     "behaviour": "queue", "max_wait": 10},
    {"name": "short-wait", "requests_per_minute": 1, "provider": "groq", "per": "tenant",
     "behaviour": "queue", "max_wait": 1},
]
PATHS = {"openai": "/v1/chat/completions", "groq": "/openai/v1/chat/completions"}


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {"limits": LIMITS, "limits_settings": {"tenant_header": True}}
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("limits-queue")) as g:
        send(g, "warm-up", "warm-up")  # the first flow pays for lazy imports: not the held ones
        yield g


def send(gw: Gateway, tenant: str, tag: str, prefix: str = "openai", timeout: float = 30) -> httpx.Response:
    return httpx.post(
        gw.base(prefix) + PATHS[prefix], json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-corral-tenant": tenant, "x-test-id": tag, "x-mock-exchange": "openai-chat-json-1",
                 "authorization": "Bearer sk-shared-key"},
        timeout=timeout,
    )


def upstream_count(mock: MockUpstream, tag: str) -> int:
    return sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag)


def bucket(gw: Gateway, tenant: str, limit: str = "per-tenant") -> dict:
    report = httpx.get(gw.url + "/_corral/limits").json()
    found = next(lim for lim in report["limits"] if lim["name"] == limit)
    empty = {"queued": 0, "windows": [{"used": 0}]}
    return next((b for b in found["buckets"] if b["key"] == f"tenant={tenant}"), empty)


def in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    results: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


def test_a_held_request_goes_through_and_says_how_long_it_was_held(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant = uuid.uuid4().hex
    calls = [in_background(lambda i=i: send(gw, tenant, f"{tag}-{i}")) for i in range(3)]  # two slots a second
    for thread, _ in calls:
        thread.join(30)
    answers = {f"{tag}-{i}": results[0] for i, (_, results) in enumerate(calls)}
    assert [r.status_code for r in answers.values()] == [200, 200, 200]
    held = 0
    for name, answer in answers.items():
        waited = gw.row_for(name)["wait_ms"]
        header = answer.headers.get("x-corral-ratelimit-wait-ms")
        assert (header is None) == (waited is None)  # told exactly when it was held, and for how long
        held += waited is not None
        assert waited is None or int(header) == round(waited)
        assert upstream_count(mock, name) == 1
    assert held >= 1


def test_unrelated_tenant_is_not_held_behind_a_busy_one(gw: Gateway, tag: str) -> None:
    busy = uuid.uuid4().hex
    threads = [in_background(lambda: send(gw, busy, tag))[0] for _ in range(4)]
    until(lambda: bucket(gw, busy)["queued"] >= 2)  # the busy tenant has a queue now
    resp = send(gw, uuid.uuid4().hex, tag + "-other")
    for t in threads:
        t.join(30)
    assert resp.status_code == 200
    assert "x-corral-ratelimit-wait-ms" not in resp.headers  # not held at all
    assert gw.row_for(tag + "-other")["wait_ms"] is None


def test_client_that_leaves_while_queued_is_never_sent_upstream(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant = uuid.uuid4().hex
    assert send(gw, tenant, tag).status_code == 200
    assert send(gw, tenant, tag).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        send(gw, tenant, tag + "-gone", timeout=0.3)  # queued for ~1 s; the client gives up first
    # The row is written once the limiter has dropped the flow: it can never go upstream after that.
    row = gw.row_for(tag + "-gone")
    assert "client disconnected while queued" in row["error"]
    assert row["wait_ms"] and row["wait_ms"] > 0
    assert upstream_count(mock, tag + "-gone") == 0 and upstream_count(mock, tag) == 2
    state = bucket(gw, tenant)
    assert state["windows"][0]["used"] <= 2 and state["queued"] == 0  # it took no slot and left the queue


def test_queue_longer_than_max_wait_is_rejected(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    tenant = uuid.uuid4().hex
    assert send(gw, tenant, tag, prefix="groq").status_code == 200
    resp = send(gw, tenant, tag, prefix="groq")  # the next slot is a minute away; max_wait is 1 s
    assert resp.status_code == 429
    assert resp.json()["error"]["message"].startswith("rate limited by corral")
    assert 50 <= int(resp.headers["retry-after"]) <= 60
    assert resp.headers["x-corral-ratelimit-name"] == "short-wait"
    assert "x-corral-ratelimit-wait-ms" not in resp.headers  # refused at once, never queued
    assert upstream_count(mock, tag) == 1
    row = gw.wait_rows(lambda r: tag in (r.get("request_headers") or "") and r["status"] == 429)[0]
    assert row["error"].startswith("rate limited by corral")
