"""The unified endpoint to Gemini: the real openai SDK at ``/v1`` with ``model="gemini/<model>"``.

The mock answers with recorded real Gemini exchanges (../shared/corpus) and, for what the corpus lacks
(function calls, structured output, a 503), with answers written after Google's documentation
(tests/data/gemini/README.md). Every request the mock gets must be what google-genai itself would send
(tests/support/gemini_types.py); the SDK (and the npm ``openai`` package's stream helper) must get
OpenAI's shapes; the record keeps the native exchange with its exact usage and cost.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import openai
import pydantic
import pytest
from google import genai
from google.genai import types

from tests.e2e.test_run import node_sdks as _node_sdks  # noqa: F401  (fixture: the npm openai package)
from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.gemini_types import assert_valid_request
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

KEY = "AIza-unified-gemini-test-0123456789"
DATA = Path(__file__).resolve().parents[1] / "data" / "gemini"
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082")).decode()
TOOLS = [{"type": "function", "function": {
    "name": "get_current_temperature", "description": "Gets the current temperature for a given location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


def gemini_client(gateway: Gateway, name: str, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-mock-exchange": name, "x-test-id": tag})


def documented(name: str) -> Reply:
    """An answer from tests/data/gemini, streamed in its events when it is SSE."""
    data = json.loads((DATA / f"{name}.json").read_text())
    body = data["body_text"].encode()
    if data["status"] < 400 and "event-stream" not in data["headers"]["content-type"]:
        types.GenerateContentResponse.model_validate_json(body)  # a well-formed answer, per Google's SDK
    chunks = corpus.split_stream(body, "sse") if "event-stream" in data["headers"]["content-type"] else None
    return Reply(data["status"], dict(data["headers"]), body, chunks=chunks)


def native_request(mock, model: str, index: int = 0) -> tuple[str, dict, dict]:
    """Path, JSON body and headers of a request the mock got; the body checked against google-genai."""
    received = mock.requests[index]
    body = json.loads(received.body)
    assert_valid_request(body, model)
    return received.path, body, received.headers


def test_json_text_with_system_message(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "gemini-generatecontent-json-2"
    result = gemini_client(gateway, name, tag).chat.completions.create(
        model="gemini/gemini-2.5-flash", temperature=0.2, max_completion_tokens=500, seed=7, stop=["END"],
        messages=[{"role": "system", "content": "You are a chatbot."}, {"role": "user", "content": "Hello!"}])
    choice = result.choices[0]
    assert choice.message.content == "Hello! How can I help you today?"
    assert choice.finish_reason == "stop"
    assert result.model == "gemini-2.5-flash"
    usage = result.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 43, 52)  # 34 thoughts
    assert usage.completion_tokens_details.reasoning_tokens == 34  # type: ignore[union-attr]

    path, body, headers = native_request(fresh_mock, "gemini-2.5-flash")
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert body["systemInstruction"] == {"parts": [{"text": "You are a chatbot."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello!"}]}]
    assert body["generationConfig"] == {"temperature": 0.2, "seed": 7, "maxOutputTokens": 500,
                                        "stopSequences": ["END"]}
    assert headers["x-goog-api-key"] == KEY and "authorization" not in headers

    row = gateway.row_for(tag)
    assert (row["provider"], row["model"]) == ("gemini", "gemini-2.5-flash")
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (9, 9, 34)
    assert row["gateway_path"] == "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    assert "translated to gemini" in row["corral_changes"]
    assert json.loads(row["response_body"])["responseId"]  # the native answer is what the record keeps


@pytest.mark.parametrize(("name", "model"), [("gemini-generatecontent-json-1", "gemini-2.5-flash"),
                                           ("gemini-streamgeneratecontent-stream-1", "gemini-2.0-flash")])
def test_unified_usage_and_cost_equal_the_native_call(gateway: Gateway, fresh_mock, tag: str, name: str,
                                                      model: str) -> None:
    """The same recorded bytes (gzip JSON; SSE) answer a unified call and google-genai's own call: the same
    request goes out, and the rows have the same figures."""
    stream = "stream" in name
    prompt = corpus.load(name)["request"]["body"]["contents"][0]["parts"][0]["text"]
    result = gemini_client(gateway, name, tag).chat.completions.create(
        model="gemini/" + model, stream=stream, stream_options={"include_usage": True} if stream else None,
        messages=[{"role": "user", "content": prompt}])
    usage = list(result)[-1].usage if stream else result.usage  # type: ignore[union-attr, arg-type]
    native_tag = tag + "-native"
    google = genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=gateway.url + "/gemini", api_version="v1beta",
        headers={"x-mock-exchange": name, "x-test-id": native_tag}))
    if stream:
        list(google.models.generate_content_stream(model=model, contents=prompt))
    else:
        google.models.generate_content(model=model, contents=prompt)
    unified, native = gateway.row_for(tag), gateway.row_for(native_tag)
    for column in ("model", "stream", "input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens",
                   "cost_usd"):
        assert unified[column] == native[column], column
    assert unified["cost_usd"] > 0
    assert usage is not None
    # The row keeps Gemini's own counts; the client's completion includes the thoughts (OpenAI's convention).
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        unified["input_tokens"], unified["output_tokens"] + (unified["reasoning_tokens"] or 0))
    assert fresh_mock.requests[0].path == fresh_mock.requests[1].path
    assert json.loads(fresh_mock.requests[0].body) == json.loads(fresh_mock.requests[1].body)


def test_stream_text_with_usage(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "gemini-streamgeneratecontent-stream-1"
    chunks = list(gemini_client(gateway, name, tag).chat.completions.create(
        model="gemini/gemini-2.0-flash-exp", stream=True, stream_options={"include_usage": True}, temperature=0,
        messages=[{"role": "system", "content": "You are a helpful chatbot."},
                  {"role": "user", "content": "What is the capital of France?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris.\n"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (13, 8, 21)
    path, body, _headers = native_request(fresh_mock, "gemini-2.0-flash-exp")
    assert path == "/v1beta/models/gemini-2.0-flash-exp:streamGenerateContent?alt=sse"
    assert body == corpus.load(name)["request"]["body"] | {"systemInstruction": {"parts": [
        {"text": "You are a helpful chatbot."}]}}
    row = gateway.row_for(tag)
    assert row["stream"] and row["complete"]
    assert (row["input_tokens"], row["output_tokens"]) == (13, 8)


def test_stream_parallel_tool_calls_reassembled_by_the_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    """Gemini sends each function call whole: the SDK's stream helper rebuilds both, with the thoughts."""
    fresh_mock.enqueue(documented("streamgeneratecontent-calls"))
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with c.chat.completions.stream(
            model="gemini/gemini-2.5-flash", tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
            reasoning_effort="low", messages=[{"role": "user", "content": "Temperature in London and Paris?"}]) as s:
        final = s.get_final_completion()
    message = final.choices[0].message
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_current_temperature", {"location": "London"}), ("get_current_temperature", {"location": "Paris"})]
    assert len({c.id for c in calls}) == 2
    assert final.choices[0].finish_reason == "tool_calls"
    assert "I will call the function once per city" in message.reasoning_content  # type: ignore[attr-defined]
    assert final.usage is None  # not asked for
    _path, body, _headers = native_request(fresh_mock, "gemini-2.5-flash")
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == TOOLS[0]["function"]["parameters"]
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    row = gateway.row_for(tag)
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (62, 30, 98)

    # The next turn: the calls and their results go back, the signature where Gemini 3 needs it.
    fresh_mock.reset()
    fresh_mock.enqueue("gemini-generatecontent-json-2")
    history = [{"role": "user", "content": "Temperature in London and Paris?"},
               message.model_dump(exclude_none=True, exclude={"parsed"}),
               {"role": "tool", "tool_call_id": calls[0].id, "content": '{"celsius": 12}'},
               {"role": "tool", "tool_call_id": calls[1].id, "content": "15 degrees"}]
    c.chat.completions.create(model="gemini/gemini-2.5-flash", tools=TOOLS, messages=history)  # type: ignore[arg-type]
    _path, body, _headers = native_request(fresh_mock, "gemini-2.5-flash")
    model_turn, results = body["contents"][1], body["contents"][2]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["thoughtSignature"] == "Y29ycmFsIHRlc3QgdGhvdWdodCBzaWduYXR1cmUgMDE="
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_current_temperature", "response": {"celsius": 12}}},
        {"functionResponse": {"name": "get_current_temperature", "response": {"output": "15 degrees"}}}]}


def test_json_parallel_calls_and_named_tool_choice(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(documented("generatecontent-parallel-calls"))
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    result = c.chat.completions.create(
        model="gemini/gemini-2.5-flash", tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_current_temperature"}},
        messages=[{"role": "user", "content": "Turn this place into a party!"}])
    calls = result.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["power_disco_ball", "start_music", "dim_lights"]
    assert json.loads(calls[2].function.arguments) == {"brightness": 0.5}
    assert result.choices[0].finish_reason == "tool_calls"
    _path, body, _headers = native_request(fresh_mock, "gemini-2.5-flash")
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                            "allowedFunctionNames": ["get_current_temperature"]}}


def test_images_inline_and_by_url(gateway: Gateway, fresh_mock, tag: str) -> None:
    gemini_client(gateway, "gemini-generatecontent-json-2", tag).chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/pelican.jpg"}}]}])
    _path, body, _headers = native_request(fresh_mock, "gemini-2.5-flash")
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"fileUri": "https://example.com/pelican.jpg", "mimeType": "image/jpeg"}}]


class Recipe(pydantic.BaseModel):
    recipe_name: str
    ingredients: list[str]


def test_json_schema_response_parsed_by_the_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(documented("generatecontent-json-schema"))
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    result = c.chat.completions.parse(model="gemini/gemini-2.5-flash", response_format=Recipe,
                                      messages=[{"role": "user", "content": "A cookie recipe"}])
    parsed = result.choices[0].message.parsed
    assert parsed == Recipe(recipe_name="Chocolate Chip Cookies",
                            ingredients=["flour", "butter", "sugar", "chocolate chips"])
    assert result.usage is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 16  # type: ignore[union-attr]
    _path, body, _headers = native_request(fresh_mock, "gemini-2.5-flash")
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == openai.lib._pydantic.to_strict_json_schema(Recipe)
    row = gateway.row_for(tag)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (31, 16, 24)


def test_not_found_raises_the_sdk_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        gemini_client(gateway, "gemini-generatecontent-error-2", tag).chat.completions.create(
            model="gemini/gemini-3.6-flahs", messages=[{"role": "user", "content": "hello"}])
    assert err.value.body["message"].startswith("models/gemini-3.6-flahs is not found")  # type: ignore[index]
    assert err.value.body["code"] == "NOT_FOUND"  # type: ignore[index]
    assert gateway.row_for(tag)["status"] == 404


def test_bad_key_on_a_stream_request_raises_bad_request(gateway: Gateway, fresh_mock, tag: str) -> None:
    """A 400 served as text/event-stream (recorded so) is an error document, not a stream."""
    with pytest.raises(openai.BadRequestError) as err:
        gemini_client(gateway, "gemini-streamgeneratecontent-error-1", tag).chat.completions.create(
            model="gemini/gemini-2.0-flash-exp", stream=True, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body == {"message": "API key not valid. Please pass a valid API key.",  # type: ignore[comparison-overlap]
                              "type": "invalid_request_error", "param": None, "code": "INVALID_ARGUMENT"}


@reliability(
    "upstream faults",
    "429 from Gemini behind the unified endpoint",
    "retried as [retries] says; then the 429 in OpenAI's shape (openai.RateLimitError), Retry-After kept",
    "row: status 429, retries counted",
)
def test_rate_limit_is_retried_then_raised(gateway: Gateway, fresh_mock, tag: str) -> None:
    limited = Reply.from_exchange("gemini-generatecontent-error-1")
    limited.headers["retry-after"] = "0"
    fresh_mock.enqueue(limited, limited, limited)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="gemini/gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert err.value.body["message"].startswith("Resource exhausted.")  # type: ignore[index]
    assert err.value.response.headers["retry-after"] == "0"
    assert fresh_mock.request_count == 3
    assert gateway.row_for(tag)["retries"] == 2


def test_overloaded_is_a_server_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    overloaded = documented("generatecontent-error-503")
    overloaded.headers["retry-after"] = "0"
    fresh_mock.enqueue(overloaded, overloaded, overloaded)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="gemini/gemini-2.5-flash", stream=True,
                                  messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503
    assert err.value.body == {"message": "The model is overloaded. Please try again later.",  # type: ignore[comparison-overlap]
                              "type": "server_error", "param": None, "code": "UNAVAILABLE"}


def test_parameter_gemini_cannot_honour_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gemini_client(gateway, "gemini-generatecontent-json-2", tag).chat.completions.create(
            model="gemini/gemini-2.5-flash", tools=TOOLS, parallel_tool_calls=False,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["param"] == "parallel_tool_calls"  # type: ignore[index]
    assert fresh_mock.request_count == 0


@pytest.mark.parametrize("name", ["gemini-generatecontent-json-1", "gemini-streamgeneratecontent-stream-1"])
def test_cache_hit_is_translated_like_the_miss(cache_gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    stream = "stream" in name

    def call():
        result = gemini_client(cache_gateway, name, tag).chat.completions.create(
            model="gemini/gemini-2.5-flash", stream=stream, messages=[{"role": "user", "content": tag}])
        if stream:
            return [c.model_dump(exclude={"created"}) for c in result]  # type: ignore[union-attr]
        return result.model_dump(exclude={"created"})  # type: ignore[union-attr]

    first, second = call(), call()
    assert second == first
    assert fresh_mock.request_count == 1, "a hit must not reach the upstream"


NODE_STREAM_JS = """
import OpenAI from "openai";
const [baseURL, apiKey, tag, body] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000, defaultHeaders: { "x-test-id": tag } });
const final = await client.chat.completions.stream(JSON.parse(body)).finalChatCompletion();
console.log(JSON.stringify(final));
"""


def test_node_openai_stream_helper_reassembles_gemini_tool_calls(gateway: Gateway, fresh_mock, tag: str,
                                                                 _node_sdks: Path) -> None:  # noqa: F811
    """The npm ``openai`` package's own stream helper, as a Node app would use the unified endpoint."""
    fresh_mock.enqueue(documented("streamgeneratecontent-calls"))
    script = _node_sdks / "unified-gemini-stream.mjs"
    script.write_text(NODE_STREAM_JS)
    body = {"model": "gemini/gemini-2.5-flash", "tools": TOOLS, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Temperature in London and Paris?"}]}
    proc = subprocess.run(["node", str(script), gateway.url + "/v1", KEY, tag, json.dumps(body)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads(proc.stdout)
    calls = final["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"location": "London"}, {"location": "Paris"}]
    assert final["choices"][0]["finish_reason"] == "tool_calls"
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (62, 128)  # thoughts in
    native_request(fresh_mock, "gemini-2.5-flash")
