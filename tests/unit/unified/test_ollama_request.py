"""OpenAI chat request -> Ollama /api/chat body, checked against the ollama package's own request types."""

from __future__ import annotations

import pytest
from ollama._types import ChatRequest

from addon.unified.errors import TranslationError
from addon.unified.ollama_request import path, to_ollama


def translate(**body) -> dict:
    out = to_ollama({"model": "ollama/llama3", **body}, "llama3")
    # ollama's ChatRequest drops what it does not know: what survives the round trip is all there was.
    assert ChatRequest.model_validate(out).model_dump(exclude_none=True, mode="json") == out
    return out


def test_path() -> None:
    assert path("llama3", True) == path("llama3", False) == "/api/chat"


def test_messages_tools_and_results() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    out = translate(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is"}, {
            "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "a": {"type": "integer"}}}}}], tool_choice="auto")
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is", "images": ["iVBORw0KGgo="]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "42", "tool_name": "f"}]
    assert out["tools"][0]["function"]["name"] == "f"
    assert out["stream"] is False  # Ollama streams unless told not to


def test_options_format_and_think() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    out = translate(messages=[{"role": "user", "content": "hi"}], stream=True, temperature=0.3, top_p=0.5, seed=4,
                    max_tokens=9, stop=["a", "b"], frequency_penalty=0.2, presence_penalty=0.1,
                    response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
                    reasoning_effort="high")
    assert out["options"] == {"temperature": 0.3, "top_p": 0.5, "seed": 4, "frequency_penalty": 0.2,
                              "presence_penalty": 0.1, "num_predict": 9, "stop": ["a", "b"]}
    assert out["format"] == schema and out["think"] == "high" and out["stream"] is True
    assert translate(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"},
                     reasoning_effort="none") | {} == {
        "model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False, "format": "json",
        "think": False}


def test_tool_choice_none_sends_no_tools() -> None:
    out = translate(messages=[{"role": "user", "content": "hi"}], tool_choice="none",
                    tools=[{"type": "function", "function": {"name": "f"}}])
    assert "tools" not in out


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 3}, "n"), ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"), ({"logprobs": True}, "logprobs"),
    ({"modalities": ["audio"]}, "modalities"), ({"reasoning_effort": "minimal"}, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
     "messages[0].content[0].image_url"),
])
def test_what_ollama_cannot_honour_is_refused_naming_it(extra, param) -> None:
    with pytest.raises(TranslationError) as err:
        to_ollama({"model": "ollama/x", "messages": [{"role": "user", "content": "hi"}], **extra}, "x")
    assert err.value.param == param
