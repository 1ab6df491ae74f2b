"""OpenAI chat requests -> Cohere v2 chat requests, and what is refused naming the parameter."""

from __future__ import annotations

import pytest

from addon.unified.cohere_request import to_cohere
from addon.unified.errors import TranslationError

USER = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("f", "g")]


def test_parameters_renamed_and_kept() -> None:
    body = to_cohere({"messages": USER, "max_tokens": 5, "temperature": 0.1, "top_p": 0.9, "seed": 3,
                      "stop": ["a", "b"], "frequency_penalty": 0.2, "presence_penalty": 0, "stream": True,
                      "stream_options": {"include_usage": True}, "user": "u", "n": 1}, "command-a")
    assert body == {"model": "command-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                    "stop_sequences": ["a", "b"], "temperature": 0.1, "p": 0.9, "seed": 3, "frequency_penalty": 0.2,
                    "stream": True}


def test_messages_of_every_role() -> None:
    body = to_cohere({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "see"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]}, "m")
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "see"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]


@pytest.mark.parametrize(("choice", "names", "native"), [
    (None, ["f", "g"], None), ("auto", ["f", "g"], None), ("required", ["f", "g"], "REQUIRED"),
    ("none", ["f", "g"], "NONE"), ({"type": "function", "function": {"name": "g"}}, ["g"], "REQUIRED"),
])
def test_tool_choice(choice, names: list[str], native: str | None) -> None:
    body = to_cohere({"messages": USER, "tools": TOOLS, "tool_choice": choice}, "m")
    assert [t["function"]["name"] for t in body["tools"]] == names
    assert body.get("tool_choice") == native


@pytest.mark.parametrize(("fmt", "native"), [
    ({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
     {"type": "json_object", "json_schema": {"type": "object"}}),
])
def test_response_format(fmt: dict, native: dict | None) -> None:
    assert to_cohere({"messages": USER, "response_format": fmt}, "m").get("response_format") == native


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 3}, "n"), ({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"frequency_penalty": -0.5}, "frequency_penalty"), ({"presence_penalty": 2}, "presence_penalty"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "h"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0]"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{"}}]}]}, "messages[0]"),
])
def test_refused_naming_the_parameter(extra: dict, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        to_cohere({"messages": USER, **extra}, "m")
    assert err.value.param == param
