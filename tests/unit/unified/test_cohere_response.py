"""Cohere v2 chat answers (JSON, SSE, errors) -> OpenAI's shapes."""

from __future__ import annotations

import json

import pytest

from addon.unified.cohere_response import translate_whole
from addon.unified.cohere_stream import CohereStreamTranslator
from tests.support import corpus, doc_examples


def chunks(out: bytes) -> list:
    datas = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


def translate(stream: bytes, include_usage: bool = True, step: int = 11) -> list:
    t = CohereStreamTranslator(include_usage, "command-a")
    return chunks(b"".join(t.feed(stream[i:i + step]) for i in range(0, len(stream), step)) + t.finish_stream())


def test_json_answer_usage_is_billed_units() -> None:
    body = corpus.response_bytes(corpus.load("cohere-v2chat-json-1"))
    out = json.loads(translate_whole(200, body, "command"))
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 88, "total_tokens": 95}
    assert out["model"] == "command" and out["choices"][0]["finish_reason"] == "stop"


def test_tool_plan_thinking_and_tool_calls() -> None:
    doc = {"id": "x", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "tool_plan": "I will call f.", "content": [{"type": "thinking", "thinking": "hm"}],
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "usage": {"tokens": {"input_tokens": 3, "output_tokens": 4}}}
    out = json.loads(translate_whole(200, json.dumps(doc).encode(), "m"))
    message = out["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("I will call f.", "hm")
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"]["prompt_tokens"] == 3  # raw tokens only when no billed units are reported


@pytest.mark.parametrize(("native", "finish"), [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
    ("ERROR", "error"), ("TIMEOUT", "error"),
])
def test_finish_reasons(native: str, finish: str) -> None:
    doc = {"id": "x", "finish_reason": native, "message": {"content": [{"type": "text", "text": "t"}]}}
    out = json.loads(translate_whole(200, json.dumps(doc).encode()))
    assert out["choices"][0]["finish_reason"] == finish and "usage" not in out  # unknown usage: none


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (401, "authentication_error"),
                                              (404, "not_found_error"), (429, "rate_limit_error"),
                                              (500, "server_error")])
def test_errors_keep_the_message(status: int, kind: str) -> None:
    err = json.loads(translate_whole(status, b'{"id": "1", "message": "no good"}'))["error"]
    assert (err["message"], err["type"]) == ("no good", kind)


def test_recorded_stream_split_anywhere() -> None:
    got = translate(corpus.response_bytes(corpus.load("cohere-v2chat-stream-1")))
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert got.count("[DONE]") == 1 and got[-1] == "[DONE]"  # Cohere's own [DONE] is not passed on twice
    assert got[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 109, "total_tokens": 116}
    assert got[-3]["choices"][0]["finish_reason"] == "stop"


def test_tool_call_stream() -> None:
    got = translate(doc_examples.load("cohere-v2chat-tool-stream")["response"]["sse"].encode(), include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in got if c != "[DONE]" and c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "I will search for the weather in Toronto and Madrid."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [c["id"] for c in calls if "id" in c] == ["get_weather_nsz5zm3w56q3", "get_weather_rdwrdvp4wnw6"]
    args = "".join(c["function"]["arguments"] for c in calls if c["index"] == 1)
    assert json.loads(args) == {"location": "Madrid"}
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls" and got[-1] == "[DONE]"


def test_thinking_deltas_and_error_event() -> None:
    stream = (b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":'
              b'{"thinking":"hmm"}}}}\n\nevent: error\ndata: {"type":"error","message":"overloaded"}\n\n')
    got = translate(stream)
    assert got[0]["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert got[1] == {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}
