"""[telemetry]: spans of real SDK calls through a real gateway, as an OTLP/HTTP collector receives them.

The collector (tests/support/otlp_collector.py) decodes the exporter's protobuf; each test sends its own
``traceparent`` and finds its span by that trace id, which also proves the caller's trace is continued.
Every attribute is checked against the row the Recorder wrote for the same flow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import openai
import pytest

from tests.support.gateway import Gateway, new_tag, refused_port
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.otlp_collector import OTLPCollector, split, traceparent
from tests.support.waiting import until

SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def collector() -> Iterator[OTLPCollector]:
    with OTLPCollector() as c:
        yield c


@pytest.fixture(scope="module")
def traced(mock: MockUpstream, collector: OTLPCollector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "telemetry": {"otlp_endpoint": collector.url, "service_name": "corral-test"},
        "telemetry.headers": {"x-collector-token": "t0k"},
        "cache": {"enabled": True},  # every test sends its own messages: only the cache test repeats one
        'prices."mistral/gpt-4o-mini-2024-07-18"': {"input": 1.0, "output": 2.0},  # the mock's answer, priced
        "limits": [{"name": "groq-1rpm", "requests_per_minute": 1, "provider": "groq", "per": "credential"},
                   {"name": "together-1rps", "requests_per_second": 1, "provider": "together", "per": "credential",
                    "behaviour": "queue"}],
        "providers.deadend": {"custom": True, "upstream": f"http://127.0.0.1:{refused_port()}"},  # nothing listens
        "retries.providers.deadend": {"backoff": 0.01, "backoff_max": 0.02},
    }
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry"))
    # Export every 50 ms instead of every 5 s, so spans arrive while the test waits.
    gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        yield gw
    finally:
        gw.stop()


def client(gw: Gateway, tag: str, header: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-test-telemetry", max_retries=0,
                         default_headers={"x-test-id": tag, "traceparent": header})


def test_json_call_span_carries_the_genai_attributes_of_the_recorded_row(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-json-1")
    trace_id, parent, header = traceparent()
    answer = client(traced, tag, header).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Dragons?"}],
        max_tokens=50, temperature=0.2, top_p=0.9,
    )
    row = traced.row_for(tag)
    span, children = split(collector.trace(trace_id))

    assert span["parent_span_id"] == parent  # the caller's trace goes on through the gateway
    assert span["kind"] == SPAN_KIND_CLIENT
    assert span["name"] == "chat gpt-4o-mini"
    assert span["resource"]["service.name"] == "corral-test"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.response.model"] == row["model"] == answer.model
    assert a["gen_ai.response.id"] == answer.id
    assert a["gen_ai.response.finish_reasons"] == [answer.choices[0].finish_reason]
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] == answer.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == row["output_tokens"] == answer.usage.completion_tokens
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", fresh_mock.port)
    assert a["http.response.status_code"] == row["status"] == 200
    assert "error.type" not in a and span["status_code"] != STATUS_ERROR
    assert a["corral.cost_usd"] == pytest.approx(row["cost_usd"])
    assert a["corral.credential"] == row["credential"]
    assert a["corral.mode"] == row["mode"] == "reverse"
    assert a["corral.complete"] is True and a["corral.stream"] is False
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # capture_content is off
    # The span covers the exchange the row times: same timestamps.
    assert (span["end_ns"] - span["start_ns"]) / 1e6 == pytest.approx(row["duration_ms"], abs=0.01)
    assert collector.requests[-1]["x-collector-token"] == "t0k"  # [telemetry.headers] reach the collector

    # Children: the cache lookup (a miss), then the one upstream attempt, each within the flow's span.
    assert sorted(children) == ["POST", "corral.cache.lookup"]
    [lookup] = children["corral.cache.lookup"]
    assert lookup["attributes"] == {"corral.cache": "miss"} == {"corral.cache": row["cache"]}
    [attempt] = children["POST"]
    assert attempt["kind"] == SPAN_KIND_CLIENT and attempt["status_code"] != STATUS_ERROR
    assert attempt["attributes"] == {"http.request.method": "POST", "http.response.status_code": 200,
                                     "server.address": "127.0.0.1", "server.port": fresh_mock.port}
    assert span["start_ns"] <= lookup["start_ns"] <= lookup["end_ns"] <= attempt["start_ns"]
    assert attempt["start_ns"] < attempt["end_ns"] <= span["end_ns"]


def test_stream_span_has_time_to_first_token_and_the_stream_usage(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-stream-1")
    trace_id, parent, header = traceparent()
    stream = client(traced, tag, header).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    row = traced.row_for(tag)
    span, children = split(collector.trace(trace_id))
    a = span["attributes"]
    assert span["parent_span_id"] == parent
    assert a["gen_ai.request.stream"] is True and a["corral.stream"] is True
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] is not None
    assert a["gen_ai.usage.output_tokens"] == row["output_tokens"] is not None
    assert a["gen_ai.response.id"] == chunks[0].id
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert a["gen_ai.response.finish_reasons"] == finish[-1:]
    [event] = [e for e in span["events"] if e["name"] == "corral.first_token"]
    assert span["start_ns"] < event["time_ns"] <= span["end_ns"]
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx((event["time_ns"] - span["start_ns"]) / 1e9,
                                                                      abs=1e-6)
    assert a["gen_ai.response.time_to_first_chunk"] * 1000 == pytest.approx(row["ttfb_ms"], abs=0.01)
    # The attempt whose answer streamed lasts until the stream's end went to the client.
    [attempt] = children["POST"]
    assert attempt["attributes"]["http.response.status_code"] == 200
    assert attempt["start_ns"] < event["time_ns"] and attempt["end_ns"] == span["end_ns"]


def test_upstream_error_span_is_marked_failed(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-error-1")
    trace_id, _, header = traceparent()
    with pytest.raises(openai.APIStatusError) as caught:
        client(traced, tag, header).chat.completions.create(model="gpt-4o-mini",
                                                            messages=[{"role": "user", "content": f"error {tag}"}])
    row = traced.row_for(tag)
    span, _ = split(collector.trace(trace_id))
    a = span["attributes"]
    assert a["http.response.status_code"] == row["status"] == caught.value.status_code
    assert a["error.type"] == str(caught.value.status_code)
    assert span["status_code"] == STATUS_ERROR
    assert a["corral.response_error"] == row["error"]


def test_without_traceparent_the_span_starts_a_trace(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-json-1")
    answer = openai.OpenAI(base_url=traced.base("openai/v1"), api_key="sk-x", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"root {tag}"}])
    span = until(lambda: next((s for s in list(collector.spans)
                               if s["attributes"].get("gen_ai.response.id") == answer.id
                               and not s["parent_span_id"]), None))
    assert len(span["trace_id"]) == 32 and span["trace_id"] != "0" * 32
    assert fresh_mock.requests[-1].headers.get("traceparent") is None  # propagate_upstream is off


def sdk(gw: Gateway, prefix: str, tag: str, header: str, api_key: str = "sk-test-telemetry") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base(prefix), api_key=api_key, max_retries=0,
                         default_headers={"x-test-id": tag, "traceparent": header})


def test_cache_hit_span_says_hit_with_the_saved_cost(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-json-2")
    messages = [{"role": "user", "content": f"cache me {tag}"}]
    first_trace, _, first = traceparent()
    sdk(traced, "mistral/v1", new_tag(), first).chat.completions.create(model="mistral-small-latest",
                                                                         messages=messages)
    trace_id, _, header = traceparent()
    sdk(traced, "mistral/v1", tag, header).chat.completions.create(model="mistral-small-latest", messages=messages)
    row = traced.row_for(tag)
    miss, _ = split(collector.trace(first_trace))
    hit, hit_children = split(collector.trace(trace_id))
    assert miss["attributes"]["corral.cache"] == "miss" and hit["attributes"]["corral.cache"] == row["cache"] == "hit"
    a = hit["attributes"]
    assert a["gen_ai.provider.name"] == "mistral_ai"
    assert a["corral.cost_usd"] == row["cost_usd"] == 0
    assert a["corral.saved_cost_usd"] == pytest.approx(row["saved_cost_usd"])
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] == miss["attributes"]["gen_ai.usage.input_tokens"]
    assert fresh_mock.request_count == 1
    assert sorted(hit_children) == ["corral.cache.lookup"]  # a hit makes no upstream attempt
    [lookup] = hit_children["corral.cache.lookup"]
    assert lookup["attributes"]["corral.cache"] == "hit"
    assert hit["start_ns"] <= lookup["start_ns"] < lookup["end_ns"] <= hit["end_ns"]


def test_rate_limited_span_is_an_error_of_that_kind(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-json-2")
    key = "sk-ratelimit-" + new_tag()
    _, _, first = traceparent()
    sdk(traced, "groq/openai/v1", new_tag(), first, key).chat.completions.create(
        model="llama-3.1-8b-instant", messages=[{"role": "user", "content": f"one {tag}"}])
    trace_id, _, header = traceparent()
    with pytest.raises(openai.RateLimitError):
        sdk(traced, "groq/openai/v1", tag, header, key).chat.completions.create(
            model="llama-3.1-8b-instant", messages=[{"role": "user", "content": f"two {tag}"}])
    row = traced.row_for(tag)
    span, children = split(collector.trace(trace_id))
    a = span["attributes"]
    assert a["http.response.status_code"] == row["status"] == 429
    assert a["error.type"] == "rate_limited" and span["status_code"] == STATUS_ERROR
    assert a["corral.gateway_error"] == row["error"] and "groq-1rpm" in row["error"]
    assert "POST" not in children  # refused before anything went upstream


def test_queued_call_has_a_child_span_for_its_wait(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue("openai-chat-json-2", "openai-chat-json-2")
    key = "sk-queue-" + new_tag()
    _, _, first = traceparent()
    sdk(traced, "together/v1", new_tag(), first, key).chat.completions.create(
        model="meta-llama/Llama-3-8b", messages=[{"role": "user", "content": f"one {tag}"}])
    trace_id, _, header = traceparent()
    sdk(traced, "together/v1", tag, header, key).chat.completions.create(  # held until the next second
        model="meta-llama/Llama-3-8b", messages=[{"role": "user", "content": f"two {tag}"}])
    row = traced.row_for(tag)
    flow_span, children = split(collector.trace(trace_id))
    [wait] = children["corral.ratelimit.wait"]
    [attempt] = children["POST"]
    assert row["wait_ms"] > 0
    assert wait["attributes"]["corral.ratelimit.limits"] == ["together-1rps"]
    assert wait["end_ns"] <= attempt["start_ns"]  # held, then sent
    assert flow_span["attributes"]["corral.ratelimit.wait_ms"] == pytest.approx(row["wait_ms"])
    assert (wait["end_ns"] - wait["start_ns"]) / 1e6 == pytest.approx(row["wait_ms"], abs=0.01)
    assert flow_span["start_ns"] <= wait["start_ns"] and wait["end_ns"] <= flow_span["end_ns"]


def test_retried_call_has_a_child_span_per_attempt(
    traced: Gateway, fresh_mock: MockUpstream, collector: OTLPCollector, tag: str
) -> None:
    fresh_mock.enqueue(Reply.error(503, **{"retry-after": "0"}), "openai-chat-json-1")
    trace_id, _, header = traceparent()
    answer = client(traced, tag, header).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"retry {tag}"}])
    row = traced.row_for(tag)
    span, children = split(collector.trace(trace_id))
    a = span["attributes"]
    assert a["corral.retries"] == row["retries"] == 1
    assert a["http.response.status_code"] == row["status"] == 200 and "error.type" not in a
    assert a["gen_ai.response.id"] == answer.id
    first, second = children["POST"]
    recorded = json.loads(row["attempts"])
    assert [x["status"] for x in recorded] == [503, 200]
    assert first["attributes"] == {"http.request.method": "POST", "http.response.status_code": 503,
                                   "error.type": "503", "corral.attempt.wait_ms": recorded[0]["wait_ms"],
                                   "server.address": "127.0.0.1", "server.port": fresh_mock.port}
    assert first["status_code"] == STATUS_ERROR
    assert second["attributes"] == {"http.request.method": "POST", "http.response.status_code": 200,
                                    "http.request.resend_count": 1,
                                    "server.address": "127.0.0.1", "server.port": fresh_mock.port}
    assert span["start_ns"] < first["start_ns"] < first["end_ns"] <= second["start_ns"] < second["end_ns"]
    assert second["end_ns"] <= span["end_ns"]


def test_call_no_upstream_answered_has_its_failed_attempts(
    traced: Gateway, collector: OTLPCollector, tag: str
) -> None:
    trace_id, _, header = traceparent()
    with pytest.raises(openai.APIStatusError):
        sdk(traced, "deadend/v1", tag, header).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    row = traced.row_for(tag)
    span, children = split(collector.trace(trace_id))
    a = span["attributes"]
    assert a["corral.retries"] == row["retries"] > 0
    assert a["http.response.status_code"] == row["status"] == 502
    assert a["error.type"] == "upstream_unavailable"
    assert a["corral.gateway_error"] == row["error"]
    attempts = children["POST"]
    assert len(attempts) == row["retries"] + 1
    for attempt, recorded in zip(attempts, json.loads(row["attempts"]), strict=True):
        assert attempt["status_code"] == STATUS_ERROR and "http.response.status_code" not in attempt["attributes"]
        assert attempt["attributes"]["corral.attempt.error"] == recorded["error"]
        assert attempt["attributes"]["error.type"] == recorded["error"].split(":")[0]
        assert (attempt["attributes"]["server.address"], attempt["attributes"]["server.port"]) == (
            a["server.address"], a["server.port"])


def test_propagate_upstream_and_capture_content(
    mock: MockUpstream, fresh_mock: MockUpstream, collector: OTLPCollector, tmp_path_factory: pytest.TempPathFactory,
    tag: str,
) -> None:
    config = {"telemetry": {"otlp_endpoint": collector.url, "propagate_upstream": True, "capture_content": True}}
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry-content"))
    gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        fresh_mock.enqueue("openai-chat-json-2")  # answers "YES"
        trace_id, _, header = traceparent()
        answer = client(gw, tag, header).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Dragons?"}])
        span, _ = split(collector.trace(trace_id))
    finally:
        gw.stop()
    # The provider got the gateway span's context: same trace, the gateway's span as its parent.
    assert fresh_mock.requests[-1].headers["traceparent"] == f"00-{trace_id}-{span['span_id']}-01"
    a = span["attributes"]
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Dragons?"}]}]
    [out] = json.loads(a["gen_ai.output.messages"])
    assert out["role"] == "assistant" and out["finish_reason"] == answer.choices[0].finish_reason
    assert out["parts"] == [{"type": "text", "content": answer.choices[0].message.content}] == [
        {"type": "text", "content": "YES"}]
