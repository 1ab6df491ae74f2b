"""The unified endpoint: the real openai SDK at ``http://127.0.0.1:PORT/v1`` with ``model="<provider>/<model>"``.

The mock answers with recorded real Anthropic / Groq exchanges (../shared/corpus); the gateway must send
the mock a valid native request (checked against the anthropic SDK's own request types), hand the SDK
an OpenAI-shaped answer, and record the native exchange with its exact usage and cost.
"""

from __future__ import annotations

import json
import os
import typing

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

KEY = "sk-ant-unified-test-0123456789"


def client(gateway: Gateway, name: str, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-mock-exchange": name, "x-test-id": tag})


def native_request(mock) -> tuple[str, dict, dict]:
    """Path, JSON body and headers of the one request the mock got; the body validated against the
    anthropic SDK's request params (extra keys refused)."""
    assert mock.request_count == 1
    received = mock.requests[0]
    body = json.loads(received.body)
    params = MessageCreateParamsStreaming if body.get("stream") else MessageCreateParamsNonStreaming
    pydantic.TypeAdapter(params).validate_python(body, strict=True)
    assert set(body) <= set(typing.get_type_hints(params)), "keys the Messages API does not take"
    return received.path, body, received.headers


def recorded_text(name: str) -> str:
    """The text of a recorded Anthropic stream: its text_delta events, joined."""
    events = [json.loads(line[5:]) for line in corpus.response_bytes(corpus.load(name)).decode().splitlines()
              if line.startswith("data:")] if not corpus.load(name)["response"].get("body_base64") else []
    return "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")


def expect(name: str) -> dict:
    return corpus.load(name)["expect"]


def test_anthropic_json_with_tool_call(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "anthropic-messages-json-1"
    tools = [{"type": "function", "function": {
        "name": "calculator", "description": "Evaluates arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]
    result = client(gateway, name, tag).chat.completions.create(
        model="anthropic/claude-3-5-haiku-20241022", tools=tools, max_tokens=4096,  # type: ignore[arg-type]
        messages=[{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "15 * 8?"}])
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll help you calculate 15 * 8 using the calculator tool."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "15 * 8"}
    assert result.usage.prompt_tokens == expect(name)["input_tokens"]  # type: ignore[union-attr]
    assert result.usage.completion_tokens == expect(name)["output_tokens"]  # type: ignore[union-attr]

    path, body, headers = native_request(fresh_mock)
    assert path == "/v1/messages"
    assert body["model"] == "claude-3-5-haiku-20241022"
    assert body["system"] == [{"type": "text", "text": "Use the tools."}]
    assert body["tools"][0]["input_schema"]["properties"] == {"expression": {"type": "string"}}
    assert headers["x-api-key"] == KEY and "authorization" not in headers
    assert headers["anthropic-version"]

    row = gateway.row_for(tag)
    assert (row["provider"], row["model"], row["path"]) == ("anthropic", expect(name)["model"], "/v1/messages")
    assert (row["input_tokens"], row["output_tokens"]) == (430, 73)
    assert row["gateway_path"] == "/anthropic/v1/messages"  # the native request through the native prefix
    assert "translated to anthropic" in row["corral_changes"]
    assert json.loads(row["request_body"])["model"] == "claude-3-5-haiku-20241022"  # the native request
    assert json.loads(row["response_body"])["type"] == "message"  # and the native answer


def test_unified_cost_equals_native_cost(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "anthropic-messages-json-3"
    client(gateway, name, tag).chat.completions.create(
        model="anthropic/claude-sonnet-4-5", messages=[{"role": "user", "content": "The quick brown fox"}])
    unified = gateway.row_for(tag)
    native_tag = tag + "-native"
    anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=KEY, max_retries=0).messages.create(
        **corpus.load(name)["request"]["body"], extra_headers={"x-mock-exchange": name, "x-test-id": native_tag})
    native = gateway.row_for(native_tag)
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert unified[column] == native[column], column
    assert unified["cost_usd"] > 0


def test_anthropic_stream_text_with_usage(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "anthropic-messages-stream-1"
    chunks = list(client(gateway, name, tag).chat.completions.create(
        model="anthropic/claude-haiku-4-5-20251001", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say just hello"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == recorded_text(name)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 4)
    _path, body, _headers = native_request(fresh_mock)
    assert body["stream"] is True and "stream_options" not in body
    row = gateway.row_for(tag)
    assert row["stream"] and row["complete"]
    assert (row["input_tokens"], row["output_tokens"]) == (10, 4)
    assert row["cost_usd"] > 0


def test_anthropic_stream_tool_calls_reassembled_by_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    """A gzip stream of two tool_use blocks: the SDK's own stream helper rebuilds both calls."""
    name = "anthropic-messages-stream-2"
    tools = [{"type": "function", "function": {"name": "pelican_name_generator", "description": "",
                                               "parameters": {"type": "object", "properties": {}}}}]
    with client(gateway, name, tag).chat.completions.stream(
            model="anthropic/claude-haiku-4-5-20251001", tools=tools,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Two names for a pet pelican"}]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["pelican_name_generator", "pelican_name_generator"]
    assert all(c.id.startswith("toolu_") for c in calls)
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is None  # the client did not ask for the usage chunk
    row = gateway.row_for(tag)
    assert (row["input_tokens"], row["output_tokens"]) == (542, 62)


def test_anthropic_error_raises_the_sdk_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "anthropic-messages-error-2"
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway, name, tag).chat.completions.create(
            model="anthropic/claude-sonet-4-5", messages=[{"role": "user", "content": "hello"}])
    assert err.value.status_code == 404
    assert err.value.body["message"] == "model: claude-sonet-4-5"  # type: ignore[index]
    assert err.value.body["type"] == "not_found_error"  # type: ignore[index]
    assert gateway.row_for(tag)["status"] == 404


@reliability(
    "bad client input",
    "unified request with a parameter the provider cannot honour (n > 1 for Anthropic, ...)",
    "400 in OpenAI's error shape with `param` naming it (openai.BadRequestError); nothing sent upstream",
    "row: status 400, error naming the parameter",
)
def test_untranslatable_parameter_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway, "anthropic-messages-json-3", tag).chat.completions.create(
            model="anthropic/claude-sonnet-4-5", n=2, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["param"] == "n"  # type: ignore[index]
    assert fresh_mock.request_count == 0
    row = gateway.row_for(tag)
    assert row["status"] == 400 and "n other than 1" in row["error"]


def test_openai_compatible_provider_passes_through(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "groq-chat-json-1"
    recorded = corpus.load(name)["request"]["body"]
    result = client(gateway, name, tag).chat.completions.create(**{**recorded, "model": "groq/" + recorded["model"]})
    assert result.usage.prompt_tokens == expect(name)["input_tokens"]  # type: ignore[union-attr]
    received = fresh_mock.requests[0]
    assert received.path == "/openai/v1/chat/completions"
    assert json.loads(received.body)["model"] == recorded["model"]
    assert received.headers["authorization"] == f"Bearer {KEY}"
    row = gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == ("groq", 18, 43)


def test_unknown_provider_is_a_404_in_openai_shape(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway, "x", tag).chat.completions.create(model="nosuch/model", messages=[{"role": "user",
                                                                                              "content": "hi"}])
    assert "unknown provider 'nosuch'" in err.value.message
    assert fresh_mock.request_count == 0


def test_models_lists_catalog_models(gateway: Gateway) -> None:
    models = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0).models.list()
    ids = {m.id for m in models}
    assert "anthropic/claude-3-5-haiku-latest" in ids
    assert any(i.startswith("groq/") for i in ids)
    assert httpx.post(gateway.url + "/v1/models").status_code == 405


@pytest.mark.parametrize("name", ["anthropic-messages-json-3", "anthropic-messages-stream-2"])
def test_cache_hit_is_translated_like_the_miss(cache_gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    """The cache keys on and keeps the native exchange; a hit is translated for the client like the miss."""
    stream = name.endswith("stream-2")

    def call():
        result = client(cache_gateway, name, tag).chat.completions.create(
            model="anthropic/claude-haiku-4-5", user=tag, stream=stream,
            messages=[{"role": "user", "content": "Two names for a pet pelican"}])
        if stream:
            return [c.model_dump(exclude={"created"}) for c in result]  # type: ignore[union-attr]
        return result.model_dump(exclude={"created"})  # type: ignore[union-attr]

    first, second = call(), call()
    assert second == first
    assert fresh_mock.request_count == 1, "a hit must not reach the upstream"
    rows = cache_gateway.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 2)
    assert sorted(r["cache"] for r in rows) == ["hit", "miss"]
    native = json.loads(fresh_mock.requests[0].body)
    assert native["metadata"] == {"user_id": tag}


@reliability(
    "upstream faults",
    "429 from a translated provider behind the unified endpoint",
    "retried as [retries] says; then the 429 in OpenAI's shape (openai.RateLimitError), Retry-After kept",
    "row: status 429, retries counted",
)
def test_rate_limit_is_retried_then_raised_as_rate_limit_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}).encode()
    limited = Reply(429, {"content-type": "application/json", "retry-after": "0"}, body)
    fresh_mock.enqueue(limited, limited, limited)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="anthropic/claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body == {"message": "slow down", "type": "rate_limit_error", "param": None,
                              "code": "rate_limit_error"}
    assert err.value.response.headers["retry-after"] == "0"
    assert fresh_mock.request_count == 3  # Corral's retries apply to unified flows as to native ones
    assert gateway.row_for(tag)["retries"] == 2


def test_configured_provider_key_replaces_the_clients(mock, tmp_path, tag: str) -> None:
    """[unified] keys: the provider gets the gateway's key from the environment, never the client's token."""
    mock.reset()
    keys = json.dumps({"anthropic": "env:CORRAL_TEST_ANTHROPIC_KEY"})  # [unified] keys = { anthropic = "env:..." }
    gw = Gateway(mock.url, config={"unified": {"forward_client_key": False}}, sets=[f"corral_unified_keys={keys}"],
                 workdir=tmp_path)
    gw.start(env={**os.environ, "CORRAL_TEST_ANTHROPIC_KEY": "sk-ant-from-gateway"})
    try:
        client(gw, "anthropic-messages-json-3", tag).chat.completions.create(
            model="anthropic/claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
        client(gw, "groq-chat-json-1", tag).chat.completions.create(
            model="groq/llama3-8b-8192", messages=[{"role": "user", "content": "hi"}])
    finally:
        gw.stop()
    to_anthropic, to_groq = mock.requests[0].headers, mock.requests[1].headers
    assert to_anthropic["x-api-key"] == "sk-ant-from-gateway" and "authorization" not in to_anthropic
    assert "authorization" not in to_groq and "x-api-key" not in to_groq  # no key configured, none forwarded


def test_chunked_overloaded_error_on_a_stream_request(gateway: Gateway, fresh_mock, tag: str) -> None:
    """An error body sent chunked (so the meter tees it instead of holding it) is translated whole at its end."""
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    overloaded = Reply(529, {"content-type": "application/json", "retry-after": "0"}, chunks=[body[:20], body[20:]])
    fresh_mock.enqueue(overloaded, overloaded, overloaded)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="anthropic/claude-haiku-4-5", stream=True,
                                  messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 529
    assert err.value.body == {"message": "Overloaded", "type": "server_error", "param": None,
                              "code": "overloaded_error"}
    assert gateway.row_for(tag)["status"] == 529


def test_openai_compatible_stream_passes_through_with_usage_recorded(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "groq-chat-stream-1"
    recorded = corpus.load(name)["request"]["body"]
    chunks = list(client(gateway, name, tag).chat.completions.create(
        **{**recorded, "model": "groq/" + recorded["model"]}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(fresh_mock.requests[0].body)["model"] == recorded["model"]
    row = gateway.row_for(tag)
    assert (row["provider"], row["stream"], row["complete"]) == ("groq", True, True)
    assert (row["input_tokens"], row["output_tokens"]) == (18, 73)
    assert row["gateway_path"] == "/groq/openai/v1/chat/completions"


def test_malformed_request_is_a_400_not_forwarded(gateway: Gateway, fresh_mock, tag: str) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}",
                                                                         "x-test-id": tag},
                          json={"model": "anthropic/claude-haiku-4-5", "messages": ["not an object"]})
    assert response.status_code == 400
    assert "not an OpenAI chat completions request" in response.json()["error"]["message"]
    assert fresh_mock.request_count == 0
