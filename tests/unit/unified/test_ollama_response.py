"""Ollama /api/chat answers (JSON, NDJSON, errors) -> OpenAI's shapes."""

from __future__ import annotations

import json

import openai.types.chat as chat
from ollama._types import ChatResponse

from addon.unified.ollama_response import OllamaStreamTranslator, translate_whole
from tests.support import corpus

LINES = [
    {"model": "qwen3", "created_at": "t1", "message": {"role": "assistant", "content": "", "thinking": "hmm"},
     "done": False},
    {"model": "qwen3", "created_at": "t2", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": 1}}}, {"function": {"name": "g", "arguments": {}}}]},
     "done": False},
    {"model": "qwen3", "created_at": "t3", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 5},
]
NDJSON = b"".join(json.dumps(line).encode() + b"\n" for line in LINES)


def chunks(out: bytes) -> list:
    datas = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


def test_recorded_json_answer() -> None:
    exchange = corpus.load("ollama-chat-json-1")
    body = corpus.response_bytes(exchange)
    ChatResponse.model_validate_json(body)
    out = chat.ChatCompletion.model_validate_json(translate_whole(200, body))
    assert out.choices[0].message.content and out.choices[0].message.content.startswith("A joke about OpenTelemetry")
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (17, 66)  # as the meter reads them
    assert out.model == "llama3"


def test_recorded_ndjson_stream_split_anywhere() -> None:
    exchange = corpus.load("ollama-chat-stream-1")
    data = corpus.response_bytes(exchange)
    t = OllamaStreamTranslator(include_usage=True)
    got = chunks(b"".join(t.feed(data[i:i + 13]) for i in range(0, len(data), 13)) + t.finish_stream())
    assert got[-1] == "[DONE]"
    parsed = [chat.ChatCompletionChunk.model_validate(c) for c in got[:-1]]
    expected = "".join(json.loads(line)["message"]["content"] for line in data.splitlines() if line.strip())
    assert "".join(p.choices[0].delta.content or "" for p in parsed if p.choices) == expected
    assert parsed[-1].usage is not None
    assert (parsed[-1].usage.prompt_tokens, parsed[-1].usage.completion_tokens) == (17, 50)
    assert [p.choices[0].finish_reason for p in parsed if p.choices][-1] == "stop"


def test_stream_thinking_and_tool_calls() -> None:
    t = OllamaStreamTranslator(include_usage=False)
    got = chunks(t.feed(NDJSON) + t.finish_stream())
    parsed = [chat.ChatCompletionChunk.model_validate(c) for c in got[:-1]]
    deltas = [p.choices[0].delta for p in parsed]
    assert (deltas[1].model_extra or {})["reasoning_content"] == "hmm"
    calls = deltas[2].tool_calls or []
    assert [(c.index, c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        (0, "call_0", "f", '{"a": 1}'), (1, "call_1", "g", "{}")]
    assert parsed[-1].choices[0].finish_reason == "tool_calls"
    assert all(p.usage is None for p in parsed)


def test_whole_answer_with_tool_calls() -> None:
    doc = {**LINES[2], "message": {**LINES[1]["message"], "thinking": "hmm"}}
    out = json.loads(translate_whole(200, json.dumps(doc).encode()))
    message = out["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["f", "g"]
    assert "index" not in message["tool_calls"][0]
    assert message["reasoning_content"] == "hmm" and message["content"] is None
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(translate_whole(200, json.dumps({**doc, "done_reason": "length"}).encode()))[
        "choices"][0]["finish_reason"] == "length"


def test_errors() -> None:
    assert json.loads(translate_whole(404, b'{"error": "model \\"nope\\" not found, try pulling it first"}')) == {
        "error": {"message": 'model "nope" not found, try pulling it first', "type": "not_found_error",
                  "param": None, "code": None}}
    assert json.loads(translate_whole(500, b"boom"))["error"]["type"] == "server_error"
    t = OllamaStreamTranslator(include_usage=True)
    assert chunks(t.feed(b'{"error": "out of memory"}\n')) == [
        {"error": {"message": "out of memory", "type": "server_error", "param": None, "code": None}}]
