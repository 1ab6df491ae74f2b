"""Response cache through the real SDKs: a repeated call is answered by Corral without any upstream
request, byte-equivalent for the SDK, and only ever for the same credential and the same request.

Every test puts its tag into the request body (``user`` / ``metadata``), so tests never share entries.
"""

from __future__ import annotations

import json
import threading

import anthropic
import httpx
import openai
import pytest

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

KEY = "sk-test-cache-0123456789"
OTHER_KEY = "sk-test-cache-other-9876"


@pytest.fixture
def cgw(cache_gateway: Gateway) -> Gateway:
    return cache_gateway  # the cache on for everything (tests/conftest.py)


def dump(obj) -> object:
    return obj.model_dump(exclude_none=False) if hasattr(obj, "model_dump") else obj


def openai_call(gw: Gateway, name: str, tag: str, key: str = KEY, **changes):
    body = {**corpus.load(name)["request"]["body"], "user": tag, **changes}
    client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=key, max_retries=0, timeout=20)
    result = client.chat.completions.create(**body, extra_headers={"x-mock-exchange": name})
    return [dump(c) for c in result] if body.get("stream") else dump(result)


def anthropic_call(gw: Gateway, name: str, tag: str):
    body = dict(corpus.load(name)["request"]["body"])
    core = {k: body.pop(k) for k in ("model", "messages", "max_tokens", "stream") if k in body}
    client = anthropic.Anthropic(base_url=gw.base("anthropic"), api_key="sk-ant-cache-0123", max_retries=0, timeout=20)
    result = client.messages.create(
        **core, metadata={"user_id": tag}, extra_body=body, extra_headers={"x-mock-exchange": name}
    )
    return [dump(e) for e in result] if core.get("stream") else dump(result)


def cache_rows(gw: Gateway, tag: str, count: int) -> list[str]:
    rows = gw.wait_rows(lambda r: tag in (r.get("request_body") or ""), count)
    return [r["cache"] for r in rows]


def raw_post(
    gw: Gateway, body: bytes, headers: dict[str, str] | None = None, name: str = "openai-chat-json-1"
) -> httpx.Response:
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {KEY}", "x-mock-exchange": name,
            **(headers or {})}
    with httpx.Client(timeout=20) as client:
        return client.post(gw.base("openai") + "/v1/chat/completions", content=body, headers=hdrs)


# --- hits and misses ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["openai-chat-json-1", "openai-chat-stream-2"])
def test_openai_second_identical_call_is_a_hit(cgw: Gateway, fresh_mock, tag: str, name: str) -> None:
    first = openai_call(cgw, name, tag)
    assert fresh_mock.request_count == 1
    second = openai_call(cgw, name, tag)
    assert second == first  # what the SDK parsed is the same, streams included
    assert fresh_mock.request_count == 1, "a hit must not reach the upstream"
    assert cache_rows(cgw, tag, 2) == ["miss", "hit"]
    hit = cgw.wait_rows(lambda r: tag in (r.get("request_body") or "") and r["cache"] == "hit")[0]
    expect = corpus.load(name)["expect"]
    assert hit["input_tokens"] == expect["input_tokens"] and hit["output_tokens"] == expect["output_tokens"]
    assert hit["cost_usd"] == 0 and hit["saved_cost_usd"] > 0
    assert bool(hit["stream"]) == bool(corpus.load(name)["request"]["body"].get("stream"))


@pytest.mark.parametrize("name", ["anthropic-messages-json-1", "anthropic-messages-stream-1"])
def test_anthropic_second_identical_call_is_a_hit(cgw: Gateway, fresh_mock, tag: str, name: str) -> None:
    first = anthropic_call(cgw, name, tag)
    second = anthropic_call(cgw, name, tag)
    assert second == first
    assert fresh_mock.request_count == 1
    assert cache_rows(cgw, tag, 2) == ["miss", "hit"]


def test_stream_hit_is_byte_identical_and_labelled(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = json.dumps({**corpus.load("openai-chat-stream-2")["request"]["body"], "user": tag}).encode()
    first = raw_post(cgw, body, name="openai-chat-stream-2")
    second = raw_post(cgw, body, name="openai-chat-stream-2")
    assert first.headers["x-corral-cache"] == "miss" and second.headers["x-corral-cache"] == "hit"
    assert second.content == first.content and second.headers["content-type"] == first.headers["content-type"]
    assert fresh_mock.request_count == 1


@reliability(
    "isolation",
    "same prompt, different API key",
    "a cache miss: answered by the provider",
    "cache=miss; zero cross-credential hits",
)
def test_different_credential_misses(cgw: Gateway, fresh_mock, tag: str) -> None:
    openai_call(cgw, "openai-chat-json-1", tag)
    openai_call(cgw, "openai-chat-json-1", tag, key=OTHER_KEY)
    assert fresh_mock.request_count == 2
    assert cache_rows(cgw, tag, 2) == ["miss", "miss"]


def test_different_temperature_misses(cgw: Gateway, fresh_mock, tag: str) -> None:
    openai_call(cgw, "openai-chat-json-1", tag, temperature=0.2)
    openai_call(cgw, "openai-chat-json-1", tag, temperature=0.3)
    assert fresh_mock.request_count == 2
    openai_call(cgw, "openai-chat-json-1", tag, temperature=0.2)
    assert fresh_mock.request_count == 2


def test_stream_and_non_stream_are_separate_entries(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = {**corpus.load("openai-chat-json-1")["request"]["body"], "user": tag}
    raw_post(cgw, json.dumps({**body, "stream": False}).encode())
    resp = raw_post(cgw, json.dumps({**body, "stream": True}).encode(), name="openai-chat-stream-1")
    assert resp.headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_reordered_keys_and_whitespace_hit(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = {**corpus.load("openai-chat-json-1")["request"]["body"], "user": tag}
    first = raw_post(cgw, json.dumps(body).encode())
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=3).encode()
    assert reordered != json.dumps(body).encode()
    second = raw_post(cgw, reordered)
    assert second.headers["x-corral-cache"] == "hit"
    assert second.content == first.content
    assert fresh_mock.request_count == 1


# --- never cached ---------------------------------------------------------------------------

def _body(tag: str, name: str = "openai-chat-stream-2") -> bytes:
    return json.dumps({**corpus.load(name)["request"]["body"], "user": tag}).encode()


def test_error_is_not_cached(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = _body(tag, "openai-chat-json-1")
    assert raw_post(cgw, body, name="openai-chat-error-1").status_code >= 400
    resp = raw_post(cgw, body)
    assert resp.status_code == 200 and resp.headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_error_inside_200_stream_is_not_cached(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = _body(tag, "openai-chat-json-1")
    for _ in range(2):
        assert raw_post(cgw, body, name="openrouter-chat-stream-2").status_code == 200
    assert fresh_mock.request_count == 2
    assert cache_rows(cgw, tag, 2) == ["miss", "miss"]


def test_aborted_stream_is_not_cached(cgw: Gateway, fresh_mock, tag: str) -> None:
    hold = threading.Event()  # the stream stays mid-way until the client has left
    fresh_mock.enqueue(Reply.from_exchange("openai-chat-stream-2", hold=hold))
    body = _body(tag)
    with httpx.Client(timeout=20) as client:
        req = client.build_request("POST", cgw.base("openai") + "/v1/chat/completions", content=body, headers={
            "content-type": "application/json", "authorization": f"Bearer {KEY}"})
        resp = client.send(req, stream=True)
        next(resp.iter_raw())
        resp.close()  # the client goes away mid-stream
    try:
        cgw.wait_rows(lambda r: tag in (r.get("request_body") or ""))
    finally:
        hold.set()
    assert raw_post(cgw, body, name="openai-chat-stream-2").headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_truncated_stream_is_not_cached(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = _body(tag)
    fresh_mock.enqueue(Reply.from_exchange("openai-chat-stream-2", fault="reset_mid_stream"))
    with httpx.Client(timeout=20) as client:
        try:
            client.post(cgw.base("openai") + "/v1/chat/completions", content=body,
                        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        except httpx.HTTPError:
            pass  # the client sees the stream break off
    cgw.wait_rows(lambda r: tag in (r.get("request_body") or ""))
    assert raw_post(cgw, body, name="openai-chat-stream-2").headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


# --- persistence ----------------------------------------------------------------------------

def test_entry_survives_a_restart(cgw: Gateway, fresh_mock, tag: str) -> None:
    first = openai_call(cgw, "openai-chat-stream-2", tag)
    assert fresh_mock.request_count == 1
    cgw.stop()  # SIGTERM: the entry is in the database, not only in this process's memory
    cgw.start()
    assert openai_call(cgw, "openai-chat-stream-2", tag) == first
    assert fresh_mock.request_count == 1
    assert cache_rows(cgw, tag, 2) == ["miss", "hit"]
