"""The unified endpoint to Ollama's native /api/chat: the real openai SDK, the mock answering with the
recorded Ollama exchanges, the request checked against the ollama package's own types. Also: a translated
stream (Ollama's NDJSON, Gemini's SSE) reaches the client chunk by chunk, never buffered."""

from __future__ import annotations

import json
import threading

import ollama
import openai
import pytest
from ollama._types import ChatRequest

from tests.e2e.test_unified import client
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply


def native_request(mock) -> dict:
    received = mock.requests[0]
    assert received.path == "/api/chat"
    body = json.loads(received.body)
    assert ChatRequest.model_validate(body).model_dump(exclude_none=True, mode="json") == body
    return body


def test_json(gateway: Gateway, fresh_mock, tag: str) -> None:
    result = client(gateway, "ollama-chat-json-1", tag).chat.completions.create(
        model="ollama/llama3", temperature=0.1, max_tokens=100,
        messages=[{"role": "user", "content": "Tell me a joke about OpenTelemetry"}])
    assert result.choices[0].message.content and "OpenTelemetry" in result.choices[0].message.content
    assert result.usage is not None and (result.usage.prompt_tokens, result.usage.completion_tokens) == (17, 66)
    body = native_request(fresh_mock)
    assert body["stream"] is False and body["options"] == {"temperature": 0.1, "num_predict": 100}
    row = gateway.row_for(tag)
    assert (row["provider"], row["model"], row["input_tokens"], row["output_tokens"]) == ("ollama", "llama3", 17, 66)
    assert row["gateway_path"] == "/ollama/api/chat"


def test_ndjson_stream_becomes_sse_chunks(gateway: Gateway, fresh_mock, tag: str) -> None:
    chunks = list(client(gateway, "ollama-chat-stream-1", tag).chat.completions.create(
        model="ollama/llama3", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Tell me a joke about OpenTelemetry"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Why did the OpenTelemetry")
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (17, 50)
    assert native_request(fresh_mock)["stream"] is True
    row = gateway.row_for(tag)
    assert row["stream"] and row["complete"] and (row["input_tokens"], row["output_tokens"]) == (17, 50)


def test_tool_choice_ollama_cannot_honour_is_refused(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway, "ollama-chat-json-1", tag).chat.completions.create(
            model="ollama/llama3", tool_choice="required", messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f"}}])
    assert err.value.body["param"] == "tool_choice"  # type: ignore[index]
    assert fresh_mock.request_count == 0


@pytest.mark.parametrize(("name", "model", "first"), [("ollama-chat-stream-1", "ollama/llama3", "Why"),
                                                      ("gemini-streamgeneratecontent-stream-1",
                                                       "gemini/gemini-2.0-flash-exp", "The")])
def test_translated_stream_is_not_buffered(gateway: Gateway, fresh_mock, tag: str, name: str, model: str,
                                           first: str) -> None:
    """The upstream holds the rest of its stream until the client has the first translated chunk."""
    hold = threading.Event()
    fresh_mock.enqueue(Reply.from_exchange(name, hold=hold))
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=20,
                      default_headers={"x-test-id": tag})
    try:
        stream = iter(c.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "x"}]))
        texts = [next(stream).choices[0].delta.content, next(stream).choices[0].delta.content]
    finally:
        hold.set()
    assert texts == ["", first]
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)


@pytest.mark.parametrize("name", ["ollama-chat-json-1", "ollama-chat-stream-1"])
def test_unified_usage_equals_the_native_call(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    """The same recorded bytes answer a unified call and the ollama package's own: same request, same row."""
    stream = "stream" in name
    messages = [{"role": "user", "content": "Tell me a joke about OpenTelemetry"}]
    result = client(gateway, name, tag).chat.completions.create(model="ollama/llama3", stream=stream,
                                                                messages=messages)  # type: ignore[arg-type]
    if stream:
        list(result)  # type: ignore[arg-type]
    native_tag = tag + "-native"
    native = ollama.Client(host=gateway.url + "/ollama", headers={"x-mock-exchange": name, "x-test-id": native_tag})
    answer = native.chat(model="llama3", messages=messages, stream=stream)
    if stream:
        list(answer)  # type: ignore[arg-type]
    unified, native_row = gateway.row_for(tag), gateway.row_for(native_tag)
    for column in ("model", "stream", "input_tokens", "output_tokens", "cost_usd"):
        assert unified[column] == native_row[column], column
    assert unified["input_tokens"] == 17
    sent = [json.loads(r.body) for r in fresh_mock.requests]
    assert sent[0]["messages"] == sent[1]["messages"] and sent[0]["stream"] == sent[1]["stream"] == stream
