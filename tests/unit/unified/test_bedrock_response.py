"""Bedrock Converse answers (JSON, event streams, exceptions, errors) -> OpenAI's shapes."""

from __future__ import annotations

import base64
import json

import pytest

from addon.unified.bedrock_response import translate_whole
from addon.unified.bedrock_stream import BedrockStreamTranslator
from tests.support import corpus, doc_examples, eventstream


def chunks(out: bytes) -> list:
    datas = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


def translate(stream: bytes, include_usage: bool = True, step: int = 7) -> list:
    t = BedrockStreamTranslator(include_usage, "m1")
    return chunks(b"".join(t.feed(stream[i:i + step]) for i in range(0, len(stream), step)) + t.finish_stream())


def test_json_answer_with_reasoning_text_and_tool_use() -> None:
    doc = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig"}}},
        {"text": "Hi"}, {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 23, "cacheReadInputTokens": 8,
                  "cacheWriteInputTokens": 0}}
    out = json.loads(translate_whole(200, json.dumps(doc).encode(), "m1"))
    message = out["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Hi", "think")
    assert message["tool_calls"] == [{"id": "t1", "type": "function", "function": {"name": "f",
                                                                                  "arguments": "{\"a\": 1}"}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls" and out["model"] == "m1"
    assert out["usage"] == {"prompt_tokens": 18, "completion_tokens": 5, "total_tokens": 23,
                            "prompt_tokens_details": {"cached_tokens": 8}}


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("model_context_window_exceeded", "length"),
])
def test_stop_reasons(stop: str, finish: str) -> None:
    doc = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop, "usage": {}}
    assert json.loads(translate_whole(200, json.dumps(doc).encode()))["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(("status", "body", "kind"), [
    (400, b'{"message": "The provided model identifier is invalid."}', "invalid_request_error"),
    (403, b'{"Message": "User is not authorized"}', "permission_error"),
    (429, b'{"message": "Too many requests"}', "rate_limit_error"),
    (503, b"<html>busy</html>", "server_error"),
])
def test_errors_keep_the_message(status: int, body: bytes, kind: str) -> None:
    err = json.loads(translate_whole(status, body))["error"]
    assert err["type"] == kind
    assert err["message"] in body.decode()


def test_recorded_stream_split_anywhere() -> None:
    exchange = corpus.load("bedrock-converse-stream-1")
    got = translate(base64.b64decode(exchange["response"]["body_base64"]), step=13)
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert got[-1] == "[DONE]"
    assert got[-2]["usage"]["prompt_tokens"] == 52 and got[-2]["usage"]["completion_tokens"] == 36
    assert got[-3]["choices"][0]["finish_reason"] == "stop"
    assert all(c["model"] == "m1" for c in got[:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got[:-2])
    assert text.startswith("Why did the OpenTelemetry")


def test_tool_use_and_reasoning_deltas() -> None:
    got = translate(b"".join(doc_examples.frames("bedrock-converse-stream-tooluse")), include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in got if c != "[DONE]"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants the top songs of two stations."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                        "function": {"name": "top_song", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 1) == "{\"sign\": \"WKRP\"}"
    assert got[-1] == "[DONE]" and "usage" not in got[-2]  # the client did not ask for the usage chunk


def test_exception_frame_becomes_an_error_event() -> None:
    stream = eventstream.event("messageStart", {"role": "assistant"}) + eventstream.exception(
        "throttlingException", "Too many tokens")
    got = translate(stream)
    assert got[-1] == {"error": {"message": "Too many tokens", "type": "rate_limit_error", "param": None,
                                 "code": "throttlingException"}}


def test_stream_cut_short_gets_no_done_and_a_broken_one_an_error() -> None:
    start = eventstream.event("messageStart", {"role": "assistant"})
    assert "[DONE]" not in translate(start)
    stop = eventstream.event("messageStop", {"stopReason": "end_turn"})
    assert translate(start + stop)[-1] == "[DONE]"  # no metadata event: usage unknown, so no usage chunk
    broken = translate(start + b"\x00" * 16)
    assert "event stream broke" in broken[-1]["error"]["message"]
