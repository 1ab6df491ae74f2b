"""OpenAI chat request -> Anthropic Messages request."""

from __future__ import annotations

import pytest

from addon.unified.anthropic_request import DEFAULT_MAX_TOKENS, to_anthropic
from addon.unified.errors import TranslationError


def test_system_developer_and_turns() -> None:
    out = to_anthropic({"model": "anthropic/x", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]}, "claude-x")
    assert out["model"] == "claude-x"
    assert out["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "No emoji."}]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS


def test_parameters_mapped() -> None:
    out = to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50,
                        "max_tokens": 10, "temperature": 0.5, "top_p": 0.9, "stop": "END", "stream": True,
                        "stream_options": {"include_usage": True}, "seed": 7, "user": "u1"}, "m")
    assert out["max_tokens"] == 50  # max_completion_tokens wins, as in OpenAI
    assert (out["temperature"], out["top_p"], out["stop_sequences"], out["stream"]) == (0.5, 0.9, ["END"], True)
    assert out["metadata"] == {"user_id": "u1"}
    assert "seed" not in out and "stream_options" not in out


def test_tools_calls_and_results() -> None:
    out = to_anthropic({"model": "m", "tool_choice": "required", "parallel_tool_calls": False, "tools": [
        {"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Oslo"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "cold"},
            {"role": "tool", "tool_call_id": "c2", "content": "warm"},
        ]}, "m")
    assert out["tools"] == [{"name": "get", "description": "d", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assistant, results = out["messages"][1], out["messages"][2]
    assert [b["input"] for b in assistant["content"]] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert results["role"] == "user"  # both tool results in one user turn
    assert [(b["tool_use_id"], b["content"]) for b in results["content"]] == [("c1", "cold"), ("c2", "warm")]


def test_named_tool_choice() -> None:
    out = to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}],
                        "tool_choice": {"type": "function", "function": {"name": "f"}}}, "m")
    assert out["tool_choice"] == {"type": "tool", "name": "f"}


def test_images_url_and_base64() -> None:
    out = to_anthropic({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]}, "m")
    blocks = out["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "url", "url": "https://example.test/cat.png"}
    assert blocks[2]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def test_json_schema_becomes_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    out = to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}}, "m")
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    plain = to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "response_format": {"type": "text"}}, "m")
    assert "output_config" not in plain


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 1.5}, "temperature"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"messages": []}, "messages"),
])
def test_refused_with_the_parameter_named(extra: dict, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}, "m")
    assert err.value.param == param
