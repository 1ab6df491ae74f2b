"""OpenAI chat request -> Gemini generateContent body, checked against google-genai's own request builder."""

from __future__ import annotations

import pytest

from addon.unified.errors import TranslationError
from addon.unified.gemini_request import path, to_gemini
from tests.support.gemini_types import assert_valid_request

MODEL = "gemini-2.5-flash"
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'},
        "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}}


def translate(**body) -> dict:
    out = to_gemini({"model": "gemini/" + MODEL, **body}, MODEL)
    assert_valid_request(out, MODEL)
    return out


def test_paths() -> None:
    assert path(MODEL, False) == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert path(MODEL, True) == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    out = translate(messages=[{"role": "system", "content": "a"}, {"role": "developer", "content": [
        {"type": "text", "text": "b"}]}, {"role": "user", "content": "hi"}])
    assert out["systemInstruction"] == {"parts": [{"text": "a"}, {"text": "b"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_multi_turn_with_parallel_calls_and_their_results() -> None:
    second = {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
    out = translate(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "calling", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"r": 2}'},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "plain"}]},
        {"role": "user", "content": "and?"}])
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["contents"][1]["parts"] == [
        {"text": "calling"}, {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2lnbmF0dXJl"},
        {"functionCall": {"name": "g", "args": {}}}]
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"r": 2}}},
        {"functionResponse": {"name": "g", "response": {"output": "plain"}}}, {"text": "and?"}]


def test_generation_config_and_response_formats() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False}
    out = translate(messages=[{"role": "user", "content": "hi"}], temperature=1.5, top_p=0.9, max_tokens=5,
                    max_completion_tokens=50, stop="END", seed=1, presence_penalty=0.5, frequency_penalty=0.1,
                    response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema,
                                                                            "strict": True}},
                    reasoning_effort="none")
    assert out["generationConfig"] == {
        "temperature": 1.5, "topP": 0.9, "seed": 1, "frequencyPenalty": 0.1, "presencePenalty": 0.5,
        "maxOutputTokens": 50, "stopSequences": ["END"], "responseMimeType": "application/json",
        "responseJsonSchema": schema, "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}
    json_object = translate(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tools_and_tool_choice(choice, config) -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "strict": True,
                                               "parameters": {"type": "object", "properties": {}}}},
             {"type": "function", "function": {"name": "g"}}]
    out = translate(messages=[{"role": "user", "content": "hi"}], tools=tools, tool_choice=choice,
                    parallel_tool_calls=True)
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "f", "description": "d", "parametersJsonSchema": {"type": "object", "properties": {}}},
        {"name": "g"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_media_parts() -> None:
    out = translate(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/image"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]}])
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
        {"fileData": {"fileUri": "https://x.test/a.png?size=2", "mimeType": "image/png"}},
        {"fileData": {"fileUri": "https://x.test/image"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}]


def test_dropped_parameters_change_nothing() -> None:
    base = translate(messages=[{"role": "user", "content": "hi"}])
    assert translate(messages=[{"role": "user", "content": "hi"}], user="u", store=False, n=1, logprobs=False,
                     metadata={"a": "b"}, service_tier="auto", stream_options={"include_usage": True},
                     response_format={"type": "text"}) == base


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"parallel_tool_calls": False}, "parallel_tool_calls"), ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"1": 2}}, "logit_bias"), ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"), ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
])
def test_what_gemini_cannot_honour_is_refused_naming_it(extra, param) -> None:
    with pytest.raises(TranslationError) as err:
        to_gemini({"model": "gemini/x", "messages": [{"role": "user", "content": "hi"}], **extra}, MODEL)
    assert err.value.param == param
