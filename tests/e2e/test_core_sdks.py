"""The real provider SDKs through the gateway: they must get exactly what they get from the upstream
directly (the same mock exchange), JSON and streaming, and the row must carry the usage.

Each call is made twice with the same SDK code: once with base_url at the mock (direct), once with
base_url at the gateway; only the URL differs, as for a user.
"""

from __future__ import annotations

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.support import corpus
from tests.support.gateway import Gateway

KEY = "sk-test-sdk-0123456789"


def recorded_body(name: str) -> dict:
    return dict(corpus.load(name)["request"]["body"])


def headers(name: str, tag: str) -> dict[str, str]:
    return {"x-mock-exchange": name, "x-test-id": tag}


def dump(obj) -> object:
    return obj.model_dump(exclude_none=False) if hasattr(obj, "model_dump") else obj


def assert_row_usage(gateway: Gateway, tag: str, name: str) -> dict:
    row = gateway.row_for(tag)
    expect = corpus.load(name)["expect"]
    assert row["input_tokens"] == expect["input_tokens"]
    assert row["output_tokens"] == expect["output_tokens"]
    assert row["model"] == expect["model"]
    assert row["complete"]
    return row


# --- OpenAI ---------------------------------------------------------------------------------

def _openai(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)


OPENAI_CHAT = ["openai-chat-json-1", "openai-chat-json-2", "openai-chat-stream-1", "openai-chat-stream-2"]


@pytest.mark.parametrize("name", OPENAI_CHAT)
def test_openai_chat_completions(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    body = recorded_body(name)

    def call(base: str, extra: dict[str, str]):
        result = _openai(base).chat.completions.create(**body, extra_headers=extra)
        return [dump(c) for c in result] if body.get("stream") else dump(result)

    direct = call(fresh_mock.url + "/v1", headers(name, "direct"))
    via = call(gateway.base("openai") + "/v1", headers(name, tag))
    assert via == direct
    row = assert_row_usage(gateway, tag, name)
    assert bool(row["stream"]) == bool(body.get("stream"))
    assert row["cost_usd"] is not None and row["cost_usd"] > 0


@pytest.mark.parametrize("name", ["openai-responses-json-1", "openai-responses-stream-1", "openai-responses-stream-2"])
def test_openai_responses(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    body = recorded_body(name)

    def call(base: str, extra: dict[str, str]):
        result = _openai(base).responses.create(**body, extra_headers=extra)
        return [dump(e) for e in result] if body.get("stream") else dump(result)

    assert call(gateway.base("openai") + "/v1", headers(name, tag)) == call(fresh_mock.url + "/v1", headers(name, "d"))
    assert_row_usage(gateway, tag, name)


@pytest.mark.parametrize("name", ["openai-embeddings-json-1", "openai-embeddings-json-2"])
def test_openai_embeddings(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    body = recorded_body(name)

    def call(base: str, extra: dict[str, str]):
        return dump(_openai(base).embeddings.create(**body, extra_headers=extra))

    assert call(gateway.base("openai") + "/v1", headers(name, tag)) == call(fresh_mock.url + "/v1", headers(name, "d"))
    row = gateway.row_for(tag)
    assert row["input_tokens"] == corpus.load(name)["expect"]["input_tokens"]
    assert row["output_tokens"] is None  # embeddings report no output count: NULL, never 0


def test_openai_error_reaches_sdk_as_its_own_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "openai-chat-error-1"
    with pytest.raises(openai.APIStatusError) as direct:
        _openai(fresh_mock.url + "/v1").chat.completions.create(
            model="x", messages=[], extra_headers=headers(name, "d")
        )
    with pytest.raises(openai.APIStatusError) as via:
        _openai(gateway.base("openai") + "/v1").chat.completions.create(
            model="x", messages=[], extra_headers=headers(name, tag)
        )
    assert type(via.value) is type(direct.value)
    assert via.value.status_code == direct.value.status_code
    assert via.value.body == direct.value.body
    assert gateway.row_for(tag)["error"]


# --- Anthropic ------------------------------------------------------------------------------

ANTHROPIC = ["anthropic-messages-json-1", "anthropic-messages-json-2", "anthropic-messages-stream-1",
             "anthropic-messages-stream-2", "anthropic-messages-stream-3"]


@pytest.mark.parametrize("name", ANTHROPIC)
def test_anthropic_messages(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    body = recorded_body(name)

    core = {k: body.pop(k) for k in ("model", "messages", "max_tokens", "stream") if k in body}

    def call(base: str, extra: dict[str, str]):
        client = anthropic.Anthropic(base_url=base, api_key="sk-ant-test-0123", max_retries=0, timeout=20)
        result = client.messages.create(**core, extra_body=body, extra_headers=extra)
        return [dump(e) for e in result] if core.get("stream") else dump(result)

    assert call(gateway.base("anthropic"), headers(name, tag)) == call(fresh_mock.url, headers(name, "d"))
    row = assert_row_usage(gateway, tag, name)
    expect = corpus.load(name)["expect"]
    assert row["cache_creation_input_tokens"] == expect.get("cache_creation_input_tokens")
    assert row["cached_input_tokens"] == expect.get("cache_read_input_tokens")


# --- Gemini (google-genai) ------------------------------------------------------------------

def _gemini_dump(obj) -> dict:
    """google-genai exposes the HTTP response headers; Corral adds its own ``x-corral-*`` ones
    (``x-corral-cache: off``), which are not part of the provider's answer."""
    data = obj.model_dump()
    headers = (data.get("sdk_http_response") or {}).get("headers")
    if isinstance(headers, dict):
        data["sdk_http_response"]["headers"] = {
            k: v for k, v in headers.items() if not k.lower().startswith("x-corral-")
        }
    return data


def _genai(base: str, extra: dict[str, str]) -> genai.Client:
    return genai.Client(api_key="AIza-test-0123456789", http_options=types.HttpOptions(base_url=base, headers=extra))


@pytest.mark.parametrize("name", ["gemini-generatecontent-json-1", "gemini-generatecontent-json-2"])
def test_gemini_generate_content(gateway: Gateway, fresh_mock, tag: str, name: str) -> None:
    model = corpus.request_path(corpus.load(name)).split("/models/")[1].split(":")[0]

    def call(base: str, extra: dict[str, str]):
        client = _genai(base, extra)  # keep a reference: a collected Client closes its HTTP client
        return _gemini_dump(client.models.generate_content(model=model, contents="hello"))

    assert call(gateway.base("gemini"), headers(name, tag)) == call(fresh_mock.url, headers(name, "d"))
    assert_row_usage(gateway, tag, name)


def test_gemini_stream_generate_content(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "gemini-streamgeneratecontent-stream-1"

    def call(base: str, extra: dict[str, str]):
        client = _genai(base, extra)
        return [
            _gemini_dump(c)
            for c in client.models.generate_content_stream(model="gemini-2.0-flash-exp", contents="hello")
        ]

    assert call(gateway.base("gemini"), headers(name, tag)) == call(fresh_mock.url, headers(name, "d"))
    row = assert_row_usage(gateway, tag, name)
    assert row["stream"]
    # The key travelled as x-goog-api-key: only its fingerprint is recorded.
    assert "AIza-test" not in (row["request_headers"] or "")
