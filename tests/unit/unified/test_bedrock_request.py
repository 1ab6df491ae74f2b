"""OpenAI chat requests -> Bedrock Converse requests, and what is refused naming the parameter."""

from __future__ import annotations

import json

import pytest

from addon.unified.bedrock_request import path, to_bedrock
from addon.unified.errors import TranslationError

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object"}}}


def test_path_escapes_the_whole_model_id() -> None:
    assert path("meta.llama3-2-1b-instruct-v1:0", False) == "/model/meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert path("arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0", True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0/converse-stream")


def test_system_developer_and_inference_config() -> None:
    body = to_bedrock({"messages": [{"role": "system", "content": "a"},
                                    {"role": "developer", "content": [{"type": "text", "text": "b"}]}, *USER],
                       "max_completion_tokens": 10, "max_tokens": 99, "temperature": 0.2, "top_p": 0.5,
                       "stop": "END", "seed": 1, "stream": True, "stream_options": {"include_usage": True}},
                      "m")
    assert body == {"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                    "system": [{"text": "a"}, {"text": "b"}],
                    "inferenceConfig": {"maxTokens": 10, "temperature": 0.2, "topP": 0.5, "stopSequences": ["END"]}}


def test_turns_alternate_and_tool_results_ride_in_the_user_turn() -> None:
    body = to_bedrock({"messages": [
        *USER,
        {"role": "assistant", "content": "let me", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ], "tools": [TOOL]}, "m")
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"text": "let me"}, {"toolUse": {"toolUseId": "c1", "name": "f", "input": {"x": 1}}},
        {"toolUse": {"toolUseId": "c2", "name": "f", "input": {}}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "one"}]}},
        {"toolResult": {"toolUseId": "c2", "content": [{"text": "two"}]}}]}


def test_base64_image_becomes_bytes_block() -> None:
    body = to_bedrock({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,QUJD"}}]}]}, "m")
    assert body["messages"][0]["content"] == [{"image": {"format": "jpeg", "source": {"bytes": "QUJD"}}}]


@pytest.mark.parametrize(("url", "param"), [
    ("https://example.com/a.png", "messages[0].content[0].image_url"),
    ("data:image/tiff;base64,QUJD", "messages[0].content[0].image_url"),
])
def test_image_urls_bedrock_cannot_take_are_refused(url: str, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        to_bedrock({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}, "m")
    assert err.value.param == param


@pytest.mark.parametrize(("choice", "native"), [
    (None, None), ("auto", {"auto": {}}), ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "f"}}, {"tool": {"name": "f"}}),
])
def test_tools_and_tool_choice(choice, native) -> None:
    body = to_bedrock({"messages": USER, "tools": [TOOL], "tool_choice": choice, "parallel_tool_calls": True}, "m")
    spec = {"toolSpec": {"name": "f", "description": "does f", "inputSchema": {"json": {"type": "object"}}}}
    assert body["toolConfig"] == ({"tools": [spec]} if native is None else {"tools": [spec], "toolChoice": native})


def test_tool_choice_none_drops_the_tools_unless_the_conversation_used_them() -> None:
    assert "toolConfig" not in to_bedrock({"messages": USER, "tools": [TOOL], "tool_choice": "none"}, "m")
    used = [*USER, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "x"}]
    with pytest.raises(TranslationError) as err:
        to_bedrock({"messages": used, "tools": [TOOL], "tool_choice": "none"}, "m")
    assert err.value.param == "tool_choice"


def test_user_goes_to_request_metadata_and_json_schema_to_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = to_bedrock({"messages": USER, "user": "u1", "response_format": {
        "type": "json_schema", "json_schema": {"name": "n", "description": "d", "schema": schema}}}, "m")
    assert body["requestMetadata"] == {"user": "u1"}
    definition = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert (json.loads(definition["schema"]), definition["name"], definition["description"]) == (schema, "n", "d")
    assert "outputConfig" not in to_bedrock({"messages": USER, "response_format": {"type": "text"}}, "m")


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 1}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"), ({"presence_penalty": 1}, "presence_penalty"),
    ({"reasoning_effort": "high"}, "reasoning_effort"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_refused_naming_the_parameter(extra: dict, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        to_bedrock({"messages": USER, **extra}, "m")
    assert err.value.param == param
