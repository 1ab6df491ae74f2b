"""Gemini answers (JSON, SSE, errors) -> OpenAI's shapes."""

from __future__ import annotations

import json

import openai.types.chat as chat
import pytest

from addon.unified.gemini_response import finish_reason, translate_whole, usage
from addon.unified.gemini_stream import GeminiStreamTranslator
from tests.support import corpus

SIGNATURE = "c2lnbmF0dXJl"
EVENTS = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}],
     "usageMetadata": {"promptTokenCount": 10}, "modelVersion": "gemini-x", "responseId": "r1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}, {"text": ""}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "g", "args": {}}}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 7, "cachedContentTokenCount": 4,
                       "thoughtsTokenCount": 3, "totalTokenCount": 20}},
]
STREAM = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in EVENTS)


def chunks(out: bytes) -> list:
    datas = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


def test_stream_translated_event_by_event_even_split_anywhere() -> None:
    t = GeminiStreamTranslator(include_usage=True)
    out = b"".join(t.feed(STREAM[i:i + 7]) for i in range(0, len(STREAM), 7))
    got = chunks(out + t.finish_stream())
    assert got[-1] == "[DONE]"
    parsed = [chat.ChatCompletionChunk.model_validate(c) for c in got[:-1]]
    deltas = [p.choices[0].delta for p in parsed if p.choices]
    assert deltas[0].role == "assistant"
    assert (deltas[1].model_extra or {})["reasoning_content"] == "hmm"
    assert deltas[2].content == "Hi"
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert [(c.index, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        (0, "f", '{"a": 1}'), (1, "g", "{}")]
    assert calls[0].model_extra["extra_content"] == {"google": {"thought_signature": SIGNATURE}}  # type: ignore[index]
    assert [p.choices[0].finish_reason for p in parsed if p.choices][-1] == "tool_calls"
    assert parsed[-1].choices == [] and parsed[-1].usage is not None
    assert parsed[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 3}}
    assert {p.id for p in parsed} == {"chatcmpl-r1"} and {p.model for p in parsed} == {"gemini-x"}


def test_stream_without_include_usage_and_one_cut_short() -> None:
    t = GeminiStreamTranslator(include_usage=False)
    got = chunks(t.feed(STREAM) + t.finish_stream())
    assert got[-1] == "[DONE]" and all(c == "[DONE]" or c["choices"] for c in got)
    cut = GeminiStreamTranslator(include_usage=True)
    partial = cut.feed(STREAM[:STREAM.index(b"data:", 10)]) + cut.finish_stream()
    assert b"[DONE]" not in partial, "no finishReason arrived: the stream did not end well"


def test_recorded_sse_stream() -> None:
    exchange = corpus.load("gemini-streamgeneratecontent-stream-1")
    t = GeminiStreamTranslator(include_usage=True)
    got = chunks(t.feed(corpus.response_bytes(exchange)) + t.finish_stream())
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got[:-1] if c["choices"])
    assert text == "The capital of France is Paris.\n"
    assert got[-2]["usage"]["prompt_tokens"] == exchange["expect"]["input_tokens"]
    assert got[-2]["usage"]["completion_tokens"] == exchange["expect"]["output_tokens"]


def test_error_event_inside_a_stream() -> None:
    t = GeminiStreamTranslator(include_usage=True)
    event = {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}
    got = chunks(t.feed(b"data: " + json.dumps(event).encode() + b"\n\n") + t.finish_stream())
    assert got == [{"error": {"message": "boom", "type": "server_error", "param": None, "code": "INTERNAL"}}]


def test_whole_answer_with_thoughts_and_calls() -> None:
    doc = {"candidates": [{"content": {"parts": [e for ev in EVENTS for e in ev["candidates"][0]["content"]["parts"]]},
                           "finishReason": "STOP", "index": 0}],
           "usageMetadata": EVENTS[2]["usageMetadata"], "modelVersion": "gemini-x", "responseId": "r1"}
    out = chat.ChatCompletion.model_validate_json(translate_whole(200, json.dumps(doc).encode()))
    message = out.choices[0].message
    assert message.content == "Hi"
    assert (message.model_extra or {})["reasoning_content"] == "hmm"
    assert [c.function.name for c in message.tool_calls or []] == ["f", "g"]  # type: ignore[union-attr]
    assert out.choices[0].finish_reason == "tool_calls"
    assert out.usage is not None and out.usage.completion_tokens == 10  # 7 + 3 thoughts


def test_recorded_json_answer_usage_counts_as_the_meter_does() -> None:
    exchange = corpus.load("gemini-generatecontent-json-1")
    out = json.loads(translate_whole(200, exchange["response"]["body_text"].encode()))
    expect = exchange["expect"]
    assert out["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert out["usage"]["completion_tokens"] == expect["output_tokens"] + expect["reasoning_tokens"]  # thoughts in
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == expect["reasoning_tokens"]
    assert out["usage"]["total_tokens"] == expect["total_tokens"]


def test_blocked_prompt_is_a_content_filter() -> None:
    out = json.loads(translate_whole(200, json.dumps({"promptFeedback": {"blockReason": "SAFETY"}}).encode()))
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("native", "calls", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", True, "content_filter"), ("OTHER", False, "stop"),
    (None, False, None),
])
def test_finish_reasons(native, calls, expected) -> None:
    assert finish_reason(native, calls) == expected


def test_usage_without_counts() -> None:
    assert usage({})["total_tokens"] == 0


@pytest.mark.parametrize("name", corpus.error_names("gemini"))
def test_recorded_errors_keep_message_and_status(name: str) -> None:
    exchange = corpus.load(name)
    status = exchange["response"]["status"]
    out = json.loads(translate_whole(status, corpus.response_bytes(exchange)))["error"]
    assert out["message"] == exchange["expect"]["error_message"]
    assert out["code"] == exchange["expect"]["error_type"]
    assert out["type"] == {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}[status]


def test_error_bodies_in_other_shapes() -> None:
    made = json.dumps({"error": {"message": "corral: x", "type": "invalid_request_error", "param": "n"}}).encode()
    assert translate_whole(400, made) == made
    assert json.loads(translate_whole(502, b"bad gateway"))["error"] == {
        "message": "bad gateway", "type": "server_error", "param": None, "code": None}
