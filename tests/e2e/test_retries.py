"""Retries and fallbacks, end to end: the real openai SDK (its own retries off) or httpx through a
gateway subprocess against scripted mock upstreams on loopback.

The waits, backoffs and timeouts themselves are tested in process on a fake clock
(tests/unit/relay/test_retrier.py); here the assertions are what the client got, what the upstream
received and what the row records (each attempt and the wait before the next), never elapsed time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

FALLBACK_KEY = "sk-fallback-key-never-recorded-4242"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


err = Reply.error


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    """This module's own upstream: scripted replies must not be taken by a request that another
    module's gateway is still sending to the session-wide mock."""
    with MockUpstream() as m:
        yield m


@pytest.fixture(scope="module")
def broken() -> Iterator[MockUpstream]:
    """A primary that always answers 500 (fallback tests)."""
    with MockUpstream() as m:
        m.default = err(500)
        yield m


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, broken: MockUpstream, tmp_path_factory, monkeypatch_module) -> Iterator[Gateway]:
    monkeypatch_module.setenv("CORRAL_TEST_FALLBACK_KEY", FALLBACK_KEY)
    config = {
        # Short waits; timeouts with room for a loaded machine (no test here waits for one).
        "retries": {"attempts": 3, "backoff": 0.01, "backoff_max": 0.05, "max_retry_after": 5,
                    "connect_timeout": 10, "ttfb_timeout": 20, "idle_timeout": 20},
        "retries.providers.deepseek": {"enabled": False},
        "providers.groq": {"upstream": broken.url},
    }
    # An array of inline tables is not what the harness writes to TOML: the JSON option says the same.
    fallbacks = {"groq": {"targets": [{"upstream": mock.url, "api_key_env": "CORRAL_TEST_FALLBACK_KEY"}]}}
    sets = [f"corral_fallbacks={json.dumps(fallbacks)}"]
    with Gateway(mock.url, config=config, sets=sets, workdir=tmp_path_factory.mktemp("retries")) as g:
        yield g


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def sdk(gw: Gateway, prefix: str, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base(prefix) + "/v1", api_key="sk-client-key", max_retries=0,
                         timeout=30, default_headers={"x-test-id": tag})


def attempts(row: dict) -> list[dict]:
    return json.loads(row["attempts"]) if row["attempts"] else []


def test_429_retry_after_is_honoured_and_sdk_gets_200(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(err(429, **{"retry-after-ms": "300"}), Reply.from_exchange("openai-chat-json-1"))
    raw = sdk(gw, "openai", tag).chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message
    assert raw.headers["x-corral-retries"] == "1"
    row = gw.row_for(tag)
    assert row["status"] == 200 and row["retries"] == 1
    tries = attempts(row)
    assert [a["status"] for a in tries] == [429, 200]
    assert tries[0]["wait_ms"] == 300  # exactly what the provider asked for
    assert row["upstream"] == fresh_mock.url and row["host"] == "127.0.0.1"
    assert row["input_tokens"] is not None  # the meter parsed the final answer, not the 429


def read_held_stream(resp: httpx.Response, hold: threading.Event) -> bytes:
    """The body of a stream whose upstream sends its rest only once we hold its first bytes."""
    body = b""
    for chunk in resp.iter_raw():
        body += chunk
        hold.set()
    return body


def test_503_twice_then_a_stream_arrives_streamed(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    hold = threading.Event()
    stream = Reply.from_exchange("openai-chat-stream-1", hold=hold)
    fresh_mock.enqueue(err(503), err(503), stream)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("openai") + "/v1/chat/completions",
                           json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                           headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            assert resp.headers["x-corral-retries"] == "2"
            body = read_held_stream(resp, hold)  # had the relay buffered, the first bytes never came
    assert hold.is_set() and body == stream.wire_body()
    row = gw.row_for(tag)
    assert row["stream"] and row["complete"] and row["retries"] == 2
    assert [a["status"] for a in attempts(row)] == [503, 503, 200]


def test_fallback_answers_when_primary_keeps_failing(
    gw: Gateway, fresh_mock: MockUpstream, broken: MockUpstream, tag: str
) -> None:
    broken.reset()
    fresh_mock.enqueue(Reply.from_exchange("openai-chat-json-1"))
    raw = sdk(gw, "groq", tag).chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-corral-upstream"] == fresh_mock.url
    assert broken.request_count == 3  # primary: all attempts used first
    sent = fresh_mock.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {FALLBACK_KEY}"  # the fallback's own key
    assert sent.headers["host"] == fresh_mock.url.split("//")[1]
    row = gw.row_for(tag)
    assert row["upstream"] == fresh_mock.url and row["retries"] == 3
    assert [a["upstream"] for a in attempts(row)] == [broken.url] * 3 + [fresh_mock.url]
    dump = json.dumps(gw.query("SELECT * FROM flows"), default=str)
    assert FALLBACK_KEY not in dump and FALLBACK_KEY not in gw.log()


def test_retry_after_above_the_cap_reaches_the_client_unchanged(
    gw: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    reply = err(429, **{"retry-after": "120", "x-ratelimit-reset-requests": "2m"})
    fresh_mock.enqueue(reply, Reply.from_exchange("openai-chat-json-1"))
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT, headers={"x-test-id": tag})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "120" and resp.headers["x-ratelimit-reset-requests"] == "2m"
    assert resp.content == reply.body
    assert fresh_mock.request_count == 1
    row = gw.row_for(tag)
    assert row["status"] == 429 and row["retries"] == 0


def test_client_that_leaves_during_the_wait_ends_the_retries(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(err(429, **{"retry-after": "4"}), Reply.from_exchange("openai-chat-json-1"))
    with httpx.Client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT, headers={"x-test-id": tag})
    # The row is written once the flow is over: the wait ended with the client, not with the Retry-After.
    row = gw.row_for(tag)
    assert "client disconnected" in row["error"] and row["retries"] == 0
    assert [a["status"] for a in attempts(row)] == [429]
    assert fresh_mock.request_count == 1


def test_nothing_is_retried_after_the_first_byte(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(Reply.from_exchange("openai-chat-stream-1", fault="reset_mid_stream"),
                       Reply.from_exchange("openai-chat-stream-1"))
    with httpx.Client(timeout=30) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("POST", gw.base("openai") + "/v1/chat/completions",
                               json={**CHAT, "stream": True}, headers={"x-test-id": tag}) as resp:
                for _ in resp.iter_raw():
                    pass
    assert fresh_mock.request_count == 1
    assert gw.row_for(tag)["error"]


def test_request_and_response_pass_the_relay_exactly(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    reply = Reply.from_exchange("openai-chat-json-1")  # gzip body: raw bytes must pass untouched
    fresh_mock.enqueue(reply)
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role":"user","content":"exact \\u00e9"}]}'
    headers = {"x-test-id": tag, "authorization": "Bearer sk-exact", "x-custom": "A b  c",
               "content-type": "application/json", "accept-encoding": "gzip"}
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.base("openai") + "/v1/chat/completions?api-version=2024-01&x=1",
                           content=body, headers=headers)
    assert resp.status_code == 200 and resp.headers["content-encoding"] == "gzip"
    assert resp.headers["x-request-id"] == reply.headers["x-request-id"]
    assert resp.headers.get_list("set-cookie") == reply.headers["set-cookie"]
    assert resp.json()["object"] == "chat.completion"
    sent = fresh_mock.requests[-1]
    assert (sent.method, sent.path, sent.body) == ("POST", "/v1/chat/completions?api-version=2024-01&x=1", body)
    assert sent.headers["authorization"] == "Bearer sk-exact" and sent.headers["x-custom"] == "A b  c"
    # Corral's own headers stay behind, but for its loop marker (addon/request_guard.py).
    assert not any(name.startswith(("x-corral", "corral-")) for name in sent.headers if name != "corral-hop")
    assert len(sent.headers["corral-hop"]) == 12
    assert "x-corral-retries" not in resp.headers and "x-corral-upstream" not in resp.headers  # first answer: untouched
    row = gw.row_for(tag)
    assert "corral-relay-job" not in row["request_headers"] and row["retries"] == 0


def test_retries_disabled_passes_failures_through(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(err(503), Reply.from_exchange("openai-chat-json-1"))
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.base("deepseek") + "/chat/completions", json=CHAT, headers={"x-test-id": tag})
    assert resp.status_code == 503 and "x-corral-retries" not in resp.headers
    assert fresh_mock.request_count == 1
    assert gw.row_for(tag)["attempts"] is None  # not relayed at all


# --- the inline path: a POST without "stream": true is answered in the request hook -------------------


def test_a_stream_answering_a_non_stream_request_is_still_streamed(
    gw: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    """The inline path must not buffer: an SSE answer to a request that did not ask for one goes through
    the relay chunk by chunk (the client holds the first chunk before the upstream sends the rest)."""
    hold = threading.Event()
    reply = Reply.from_exchange("openai-chat-stream-1", hold=hold)
    fresh_mock.enqueue(reply)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("openai") + "/v1/chat/completions", json=CHAT,  # no "stream"
                           headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            body = read_held_stream(resp, hold)
    assert body == reply.wire_body()
    row = gw.row_for(tag)
    assert row["stream"] and row["complete"] and row["input_tokens"] is not None


@reliability(
    "upstream faults",
    "reset inside a JSON (non-stream) body",
    "a 502 in the provider's error shape (never a truncated document)",
    "row: status 502, error 'response body broke off'",
)
def test_json_body_cut_by_the_upstream_is_a_clean_provider_error(
    gw: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    """Nothing of a buffered answer reached the client yet: a body the upstream breaks off becomes a
    502 in the provider's shape, not a truncated JSON document."""
    fresh_mock.enqueue(Reply(200, {"content-type": "application/json"}, chunks=[b'{"id": "x", ', b'"choices": []}'],
                             fault="reset_mid_stream"))
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT, headers={"x-test-id": tag})
    assert resp.status_code == 502 and resp.headers["x-corral-error"] == "upstream_unavailable"
    assert resp.json()["error"]["message"].startswith("corral: upstream failed")
    assert fresh_mock.request_count == 1  # the upstream took the request: not sent twice
    row = gw.row_for(tag)
    assert row["status"] == 502 and "broke off" in row["error"]
