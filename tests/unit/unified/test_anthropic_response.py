"""Anthropic answers (JSON, SSE, errors) -> OpenAI's shapes."""

from __future__ import annotations

import json

from addon.unified.anthropic_response import translate_whole
from addon.unified.anthropic_stream import AnthropicStreamTranslator
from addon.unified.errors import from_anthropic


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def chunks(out: bytes) -> list:
    datas = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


STREAM = sse(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 1, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
    {"type": "message_stop"},
)


def test_stream_translated_event_by_event_even_split_anywhere() -> None:
    t = AnthropicStreamTranslator(include_usage=True)
    out = b"".join(t.feed(STREAM[i:i + 7]) for i in range(0, len(STREAM), 7)) + t.finish_stream()
    got = chunks(out)
    assert got[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in got[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert {"reasoning_content": "hmm"} in deltas and {"content": "Hi"} in deltas
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a": 1}'
    assert got[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert got[-2]["choices"] == []
    assert got[-2]["usage"] == {"prompt_tokens": 16, "completion_tokens": 7, "total_tokens": 23,
                                "prompt_tokens_details": {"cached_tokens": 5}}


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    t = AnthropicStreamTranslator(include_usage=False)
    got = chunks(t.feed(STREAM))
    assert all("usage" not in c for c in got if c != "[DONE]")


def test_stream_error_event_becomes_openai_error() -> None:
    t = AnthropicStreamTranslator(include_usage=False)
    out = t.feed(sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    assert chunks(out) == [{"error": {"message": "Overloaded", "type": "overloaded_error", "param": None,
                                      "code": None}}]


def test_whole_message() -> None:
    body = json.dumps({"type": "message", "id": "msg_1", "model": "claude-x", "stop_reason": "max_tokens",
                       "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "t", "name": "f",
                                                                      "input": {"x": 1}}],
                       "usage": {"input_tokens": 3, "output_tokens": 4}}).encode()
    out = json.loads(translate_whole(200, body))
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "a"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    assert out["usage"]["total_tokens"] == 7


def test_errors() -> None:
    native = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}'
    assert json.loads(from_anthropic(429, native)) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_error"}}
    already = b'{"error": {"message": "m", "type": "invalid_request_error", "param": "n", "code": null}}'
    assert from_anthropic(400, already) == already
    assert json.loads(from_anthropic(502, b"<html>bad gateway</html>"))["error"]["type"] == "server_error"
