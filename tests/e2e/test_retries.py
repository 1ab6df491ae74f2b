"""Retries, timeouts and fallbacks, end to end: the real openai SDK (its own retries off) or httpx through a
gateway subprocess against scripted mock upstreams on loopback.

Waits are kept short by configuration; timing assertions are relative facts ("waited at least what the
provider asked for"), never speed targets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

# Wall-clock timing on a shared 2-core machine: a failure is re-run up to twice before it counts
# (a real defect fails all three runs).
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)

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
def down() -> Iterator[MockUpstream]:
    """An upstream whose port is known but which is not listening (connection refused)."""
    m = MockUpstream()
    m.start()
    m.stop()
    yield m
    m.close()


@pytest.fixture(scope="module")
def gw(
    mock: MockUpstream, broken: MockUpstream, down: MockUpstream, tmp_path_factory, monkeypatch_module
) -> Iterator[Gateway]:
    monkeypatch_module.setenv("CORRAL_TEST_FALLBACK_KEY", FALLBACK_KEY)
    config = {
        "retries": {"attempts": 3, "backoff": 0.05, "backoff_max": 0.2, "max_retry_after": 5,
                    "connect_timeout": 1, "ttfb_timeout": 1, "idle_timeout": 1},
        "retries.providers.mistral": {"attempts": 20, "backoff": 0.1, "backoff_max": 0.2},
        "retries.providers.deepseek": {"enabled": False},
        "providers.groq": {"upstream": broken.url},
        "providers.mistral": {"upstream": down.url},
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
    fresh_mock.enqueue(err(429, **{"retry-after": "1"}), Reply.from_exchange("openai-chat-json-1"))
    started = time.monotonic()
    raw = sdk(gw, "openai", tag).chat.completions.with_raw_response.create(**CHAT)
    elapsed = time.monotonic() - started
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message
    assert raw.headers["x-corral-retries"] == "1"
    assert elapsed >= 1.0
    row = gw.row_for(tag)
    assert row["status"] == 200 and row["retries"] == 1
    tries = attempts(row)
    assert [a["status"] for a in tries] == [429, 200]
    assert tries[0]["wait_ms"] == 1000
    assert row["upstream"] == fresh_mock.url and row["host"] == "127.0.0.1"
    assert row["input_tokens"] is not None  # the meter parsed the final answer, not the 429


def test_each_failure_retry_after_is_read_afresh(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(err(429, **{"retry-after": "1"}), err(503, **{"retry-after-ms": "2000"}),
                       Reply.from_exchange("openai-chat-json-2"))
    started = time.monotonic()
    completion = sdk(gw, "openai", tag).chat.completions.create(**CHAT)
    assert completion.choices
    assert time.monotonic() - started >= 3.0
    received = [r.time for r in fresh_mock.requests]
    assert received[1] - received[0] >= 1.0 and received[2] - received[1] >= 2.0
    row = gw.row_for(tag)
    assert [a["wait_ms"] for a in attempts(row)] == [1000, 2000, None]
    assert row["retries"] == 2


def test_503_twice_then_a_stream_arrives_streamed(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    stream = Reply.from_exchange("openai-chat-stream-1", chunk_delay=0.25)
    fresh_mock.enqueue(err(503), err(503), stream)
    arrivals: list[float] = []
    body = b""
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("openai") + "/v1/chat/completions",
                           json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                           headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            assert resp.headers["x-corral-retries"] == "2"
            for chunk in resp.iter_raw():
                arrivals.append(time.monotonic())
                body += chunk
    assert body == stream.wire_body()
    # Five 0.25 s gaps upstream: had the relay buffered, everything would arrive at once.
    assert len(arrivals) >= 4 and arrivals[-1] - arrivals[0] >= 0.75
    row = gw.row_for(tag)
    assert row["stream"] and row["complete"] and row["retries"] == 2
    assert [a["status"] for a in attempts(row)] == [503, 503, 200]


def test_connection_refused_then_upstream_comes_back(
    gw: Gateway, fresh_mock: MockUpstream, down: MockUpstream, tag: str
) -> None:
    down.reset()
    down.default = Reply.from_exchange("openai-chat-json-1")
    timer = threading.Timer(0.8, down.start)
    timer.start()
    try:
        completion = sdk(gw, "mistral", tag).chat.completions.create(**CHAT)
    finally:
        timer.join()
        down.stop()
    assert completion.choices
    row = gw.row_for(tag)
    tries = attempts(row)
    assert row["status"] == 200 and row["retries"] >= 1
    assert tries[0]["status"] is None and "ConnectError" in tries[0]["error"]
    assert tries[-1]["status"] == 200


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
    fresh_mock.enqueue(err(429, **{"retry-after": "2"}), Reply.from_exchange("openai-chat-json-1"))
    with httpx.Client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT, headers={"x-test-id": tag})
    row = gw.row_for(tag)
    assert row["error"] and row["retries"] == 0
    time.sleep(2.5)  # past the Retry-After: a relay still waiting would send attempt 2 now
    assert fresh_mock.request_count == 1


def test_ttfb_timeout_is_retried(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(Reply.from_exchange("openai-chat-json-1", delay_before_headers=5),
                       Reply.from_exchange("openai-chat-json-2"))
    started = time.monotonic()
    completion = sdk(gw, "openai", tag).chat.completions.create(**CHAT)
    assert completion.choices
    assert time.monotonic() - started < 4.5  # did not sit out the 5 s stall
    tries = attempts(gw.row_for(tag))
    assert "ttfb_timeout" in tries[0]["error"] and tries[1]["status"] == 200


def test_ttfb_timeout_on_every_attempt_is_a_504(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    slow = Reply.from_exchange("openai-chat-json-1", delay_before_headers=3)
    fresh_mock.enqueue(slow, slow, slow)
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT, headers={"x-test-id": tag})
    assert resp.status_code == 504
    assert resp.headers["x-corral-error"] == "upstream_timeout"
    assert resp.json()["error"]["message"]  # the provider's own error shape
    row = gw.row_for(tag)
    assert row["retries"] == 2 and "ttfb_timeout" in row["error"]


def test_idle_stream_is_cut_cleanly_and_recorded(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    stalled = Reply.from_exchange("openai-chat-stream-1", fault="stall_mid_stream", stall=10)
    fresh_mock.enqueue(stalled)
    started = time.monotonic()
    got = b""
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("openai") + "/v1/chat/completions",
                           json={**CHAT, "stream": True}, headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in resp.iter_raw():
                    got += chunk
    assert got == stalled.chunks[0]  # the bytes so far, then the connection ended
    assert time.monotonic() - started < 8
    row = gw.row_for(tag)
    assert "idle_timeout" in row["error"] and not row["complete"]
    assert fresh_mock.request_count == 1  # a stream that began is never retried


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
    assert not any(name.startswith(("x-corral", "corral-")) for name in sent.headers)
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
    the relay chunk by chunk (first chunk at the client long before the last is sent)."""
    reply = Reply.from_exchange("openai-chat-stream-1", chunk_delay=0.3)
    fresh_mock.enqueue(reply)
    started = time.monotonic()
    arrivals = []
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("openai") + "/v1/chat/completions", json=CHAT,  # no "stream"
                           headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            body = b""
            for chunk in resp.iter_raw():
                arrivals.append(time.monotonic() - started)
                body += chunk
    assert body == reply.wire_body()
    sending_time = 0.3 * (len(reply.chunks) - 1)
    assert arrivals[0] < sending_time / 2, (arrivals[0], sending_time)
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


def test_ttfb_of_an_inline_answer_is_when_the_upstream_head_came(
    gw: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    fresh_mock.enqueue(Reply(200, {"content-type": "application/json"},
                             chunks=[b'{"id": "x", "object": "chat.completion", ', b'"choices": []}'], chunk_delay=0.6))
    with httpx.Client(timeout=30) as client:
        assert client.post(gw.base("openai") + "/v1/chat/completions", json=CHAT,
                           headers={"x-test-id": tag}).status_code == 200
    row = gw.row_for(tag)
    assert row["ttfb_ms"] < 400 and row["duration_ms"] >= 550, (row["ttfb_ms"], row["duration_ms"])
