"""The unified endpoint to Cohere v2 chat: the real openai SDK with ``model="cohere/<model>"``, the mock
answering with recorded real Cohere exchanges (../shared/corpus) or, where the corpus has no such case,
documented ones (tests/data/unified).

Every translated request the mock receives is validated against the cohere SDK's own request types (the
parameters of ``ClientV2.chat``; Fern's open enums are held to their listed values), and usage and cost
of a unified flow are compared with the same exchange made natively by the cohere SDK.
"""

from __future__ import annotations

import inspect
import json
import os
import typing

import cohere
import openai
import pydantic
import pytest

from tests.e2e.test_unified import KEY, client
from tests.support import corpus, doc_examples
from tests.support.gateway import Gateway
from tests.support.reliability import reliability

_CHAT_PARAMS = {name: p.annotation for name, p in inspect.signature(cohere.ClientV2.chat).parameters.items()
                if name not in ("self", "request_options")}


def _closed(annotation: typing.Any) -> typing.Any:
    """Fern writes enums as ``Union[Literal[...], Any]`` (open to future values): keep the listed ones."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and typing.Any in args:
        return typing.Union[tuple(a for a in args if a is not typing.Any)]  # noqa: UP007
    return annotation


def native_request(mock) -> tuple[dict, dict]:
    """Body and headers of the one request the mock got, validated against ClientV2.chat's parameters."""
    assert mock.request_count == 1
    received = mock.requests[0]
    assert received.path == "/v2/chat"
    body = json.loads(received.body)
    assert set(body) - {"stream"} <= set(_CHAT_PARAMS), "keys ClientV2.chat does not take"
    for key, value in body.items():
        if key == "stream":
            assert value is True
            continue
        validated = pydantic.TypeAdapter(_closed(_CHAT_PARAMS[key])).validate_python(value)
        for item in validated if isinstance(validated, list) else [validated]:
            if isinstance(item, pydantic.BaseModel):
                assert not item.model_extra, f"{key}: fields the SDK's types do not have: {item.model_extra}"
    return body, received.headers


def unified(gateway: Gateway, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-test-id": tag})


def test_json_text_translated_and_costed_like_native(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2chat-json-1"
    recorded = corpus.load(name)
    result = client(gateway, name, tag).chat.completions.create(
        model="cohere/command", temperature=0.3, top_p=0.75, max_completion_tokens=300, stop="\n\n\n", seed=42,
        frequency_penalty=0.1, presence_penalty=0,
        messages=[{"role": "developer", "content": "You are a pirate."},
                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy!"},
                  {"role": "user", "content": [{"type": "text", "text": "Tell me a joke, pirate style"}]}])
    recorded_answer = json.loads(recorded["response"]["body_text"])
    assert result.choices[0].message.content == recorded_answer["message"]["content"][0]["text"]
    assert result.choices[0].finish_reason == "stop"
    assert result.id == recorded_answer["id"] and result.model == "command"
    # The Meter prices billed units: the client sees the same numbers.
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (7, 88)  # type: ignore[union-attr]

    body, headers = native_request(fresh_mock)
    assert body == {"model": "command", "messages": [
        {"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy!"},
        {"role": "user", "content": [{"type": "text", "text": "Tell me a joke, pirate style"}]}],
        "max_tokens": 300, "stop_sequences": ["\n\n\n"], "temperature": 0.3, "p": 0.75, "seed": 42,
        "frequency_penalty": 0.1}
    assert headers["authorization"] == f"Bearer {KEY}"

    row = gateway.row_for(tag)
    assert (row["provider"], row["model"], row["gateway_path"]) == ("cohere", "command", "/cohere/v2/chat")
    native_tag = tag + "-native"
    cohere.ClientV2(api_key=KEY, base_url=gateway.url + "/cohere").chat(
        **{k: v for k, v in recorded["request"]["body"].items() if k != "stream"},
        request_options={"additional_headers": {"x-mock-exchange": name, "x-test-id": native_tag}})
    native = gateway.row_for(native_tag)
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column
    assert row["cost_usd"] > 0


def test_stream_text_with_usage(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2chat-stream-1"
    chunks = list(client(gateway, name, tag).chat.completions.create(
        model="cohere/command", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Tell me a joke, pirate style"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    events = [json.loads(line[5:]) for line in corpus.load(name)["response"]["body_text"].splitlines()
              if line.startswith("data: {")]
    assert text == "".join(e["delta"]["message"]["content"]["text"] for e in events if e["type"] == "content-delta")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 109)
    body, _headers = native_request(fresh_mock)
    assert body["stream"] is True and "stream_options" not in body
    row = gateway.row_for(tag)
    assert (row["stream"], row["complete"], row["input_tokens"], row["output_tokens"]) == (True, True, 7, 109)


def test_stream_parallel_tool_calls_reassembled_by_the_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2chat-tool-stream"
    fresh_mock.enqueue(doc_examples.reply(name))
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "gets the weather of a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
    with unified(gateway, tag).chat.completions.stream(
            model="cohere/command-a", tools=tools, tool_choice="required",  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Weather in Toronto and Madrid?"}]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []] == [
        ("get_weather_nsz5zm3w56q3", "get_weather", {"location": "Toronto"}),
        ("get_weather_rdwrdvp4wnw6", "get_weather", {"location": "Madrid"})]
    assert message.content == "I will search for the weather in Toronto and Madrid."  # the tool plan
    assert final.choices[0].finish_reason == "tool_calls"
    body, _headers = native_request(fresh_mock)
    assert body["tool_choice"] == "REQUIRED" and body["tools"] == tools
    row = gateway.row_for(tag)
    assert (row["input_tokens"], row["output_tokens"]) == (37, 44) and row["cost_usd"] > 0


def test_tool_results_images_and_a_named_tool(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2chat-tool-json"
    fresh_mock.enqueue(doc_examples.reply(name))
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    result = unified(gateway, tag).chat.completions.create(
        model="cohere/command-a", tools=[weather, other],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[
            {"role": "system", "content": "Answer with the tools."},
            {"role": "user", "content": [{"type": "text", "text": "Where is this?"},
                                         {"type": "image_url", "image_url": {"url": "https://example.com/cn.jpg",
                                                                             "detail": "low"}}]},
            {"role": "assistant", "tool_calls": [{"id": "get_weather_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"location": "Toronto"}'}}]},
            {"role": "tool", "tool_call_id": "get_weather_1", "content": "21C"},
            {"role": "user", "content": "And now?"}])
    call = (result.choices[0].message.tool_calls or [])[0]
    assert (call.id, json.loads(call.function.arguments)) == ("get_weather_1byjy32y4hvq", {"location": "Toronto"})
    assert result.choices[0].finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (37, 28)  # type: ignore[union-attr]
    body, _headers = native_request(fresh_mock)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]  # the one named: the same meaning
    assert body["tool_choice"] == "REQUIRED"
    assert body["messages"][1]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "https://example.com/cn.jpg", "detail": "low"}}
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"location": "Toronto"}'
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "get_weather_1", "content": "21C"}


@pytest.mark.parametrize(("response_format", "native"), [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "joke", "schema": {
        "type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"]}}},
     {"type": "json_object", "json_schema": {
         "type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"]}}),
])
def test_response_format(gateway: Gateway, fresh_mock, tag: str, response_format: dict, native: dict) -> None:
    client(gateway, "cohere-v2chat-json-1", tag).chat.completions.create(
        model="cohere/command", response_format=response_format,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "A joke as JSON"}])
    body, _headers = native_request(fresh_mock)
    assert body["response_format"] == native


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"frequency_penalty": 1.5}, "frequency_penalty"),
    ({"parallel_tool_calls": False, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
     "parallel_tool_calls"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
])
def test_what_cohere_cannot_honour_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str, kwargs: dict,
                                                        param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        unified(gateway, tag).chat.completions.create(model="cohere/command-a",
                                                      messages=[{"role": "user", "content": "hi"}], **kwargs)
    assert err.value.body["param"] == param  # type: ignore[index]
    assert fresh_mock.request_count == 0


def test_not_found_error_raises_not_found(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2embed-error-1"  # a recorded Cohere 404 (for embed; chat answers unknown models alike)
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway, name, tag).chat.completions.create(model="cohere/nonexistent",
                                                           messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["message"] == corpus.load(name)["expect"]["error_message"]  # type: ignore[index]
    assert err.value.body["type"] == "not_found_error"  # type: ignore[index]


@reliability(
    "upstream faults",
    "Cohere 429 / 500 behind the unified endpoint",
    "retried as [retries] says; then OpenAI's error shape (RateLimitError / InternalServerError), message kept",
    "row: the status, retries counted",
)
@pytest.mark.parametrize(("name", "error", "status"), [
    ("cohere-v2chat-ratelimit-error", openai.RateLimitError, 429),
    ("cohere-v2chat-server-error", openai.InternalServerError, 500),
])
def test_rate_limit_and_server_error_retried_then_raised(gateway: Gateway, fresh_mock, tag: str, name: str,
                                                         error: type, status: int) -> None:
    answer = doc_examples.reply(name)
    fresh_mock.enqueue(answer, answer, answer)
    with pytest.raises(error) as err:
        unified(gateway, tag).chat.completions.create(model="cohere/command-a",
                                                      messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == status
    assert err.value.body["message"] == doc_examples.load(name)["response"]["body"]["message"]
    assert err.value.response.headers["retry-after"] == "0"
    assert fresh_mock.request_count == 3
    assert gateway.row_for(tag)["status"] == status


def test_configured_keys_for_bedrock_and_cohere(mock, tmp_path, tag: str) -> None:
    """[unified] keys: Bedrock gets its API key (AWS_BEARER_TOKEN_BEDROCK) as a bearer token, Cohere its
    own; the client's token goes to neither."""
    mock.reset()
    keys = json.dumps({"bedrock": "env:AWS_BEARER_TOKEN_BEDROCK", "cohere": "env:CO_API_KEY"})
    gw = Gateway(mock.url, config={"unified": {"forward_client_key": False}}, sets=[f"corral_unified_keys={keys}"],
                 workdir=tmp_path)
    gw.start(env={**os.environ, "AWS_BEARER_TOKEN_BEDROCK": "ABSK-bedrock-from-gateway", "CO_API_KEY": "co-key"})
    try:
        client(gw, "bedrock-converse-json-1", tag).chat.completions.create(
            model="bedrock/meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "hi"}])
        client(gw, "cohere-v2chat-json-1", tag).chat.completions.create(
            model="cohere/command", messages=[{"role": "user", "content": "hi"}])
    finally:
        gw.stop()
    assert mock.requests[0].headers["authorization"] == "Bearer ABSK-bedrock-from-gateway"
    assert mock.requests[1].headers["authorization"] == "Bearer co-key"
