"""``POST /v1/embeddings`` on the unified endpoint: the real openai SDK with ``model="<provider>/<model>"``.

OpenAI is answered from recorded exchanges (../shared/corpus); Gemini and Cohere, which the corpus has no
successful embeddings call of, from their documentation's examples (tests/data/unified_embeddings/README.md).
The SDK asks for base64 vectors unless told otherwise: translated vectors must decode to the native ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from google.genai import types

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply

KEY = "sk-unified-embeddings-0123456789"
# EmbedContentRequest's fields (https://ai.google.dev/api/embeddings#EmbedContentRequest).
GEMINI_EMBED_REQUEST_KEYS = {"model", "content", "taskType", "title", "outputDimensionality"}
DATA = Path(__file__).resolve().parents[1] / "data" / "unified_embeddings"


def documented(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def documented_reply(name: str) -> Reply:
    response = documented(name)["response"]
    return Reply(response["status"], response["headers"], response["body_text"].encode())


def client(gateway: Gateway, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-test-id": tag})


def test_openai_embeddings_pass_through_with_native_usage_and_cost(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "openai-embeddings-json-1"
    recorded = corpus.load(name)["request"]["body"]
    fresh_mock.enqueue(name)
    result = client(gateway, tag).embeddings.create(model="openai/text-embedding-3-small", input=recorded["input"],
                                                    dimensions=128)
    assert len(result.data) == 1 and len(result.data[0].embedding) == 128  # the SDK decoded the base64 vector
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (4, 4)
    received = fresh_mock.requests[0]
    assert received.path == "/v1/embeddings"
    assert json.loads(received.body) == {**recorded, "model": "text-embedding-3-small"}
    row = gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"], row["gateway_path"]) == ("openai", 4, "/openai/v1/embeddings")

    native_tag = tag + "-native"
    openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key=KEY, max_retries=0).embeddings.create(
        **recorded, extra_headers={"x-mock-exchange": name, "x-test-id": native_tag})
    native = gateway.row_for(native_tag)
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column
    assert row["cost_usd"] > 0


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_gemini_embeddings_are_translated_both_ways(gateway: Gateway, fresh_mock, tag: str, encoding: str) -> None:
    name = "gemini-batchembedcontents-json-1"
    fresh_mock.enqueue(documented_reply(name))
    texts = ["What is the meaning of life?", "How much wood would a woodchuck chuck?"]
    extra = {"encoding_format": encoding} if encoding == "float" else {}  # the SDK's default is base64
    result = client(gateway, tag).embeddings.create(model="gemini/gemini-embedding-001", input=texts,
                                                    **extra)  # type: ignore[arg-type]
    assert [d.embedding for d in result.data] == [pytest.approx([0.1, 0.2, 0.3, 0.4]),
                                                  pytest.approx([0.5, 0.6, 0.7, 0.8])]
    assert result.model == "gemini-embedding-001"
    # Gemini reports no usage for embeddings: unknown, never 0.
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (None, None)

    received = fresh_mock.requests[0]
    assert received.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert json.loads(received.body) == documented(name)["request"]["body"]  # the documented request, exactly
    for request in json.loads(received.body)["requests"]:  # and valid for Gemini's own types
        assert set(request) <= GEMINI_EMBED_REQUEST_KEYS
        types.Content.model_validate(request["content"])  # the google-genai SDK's type: unknown keys refused
    assert received.headers["x-goog-api-key"] == KEY and "authorization" not in received.headers
    row = gateway.row_for(tag)
    assert (row["provider"], row["model"], row["status"]) == ("gemini", "gemini-embedding-001", 200)
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (None, None, None)
    assert (row["requested_model"], row["model_alias"]) == ("gemini/gemini-embedding-001", None)
    assert json.loads(row["response_body"])["embeddings"][0]["values"] == [0.1, 0.2, 0.3, 0.4]  # the native answer


def test_cohere_embeddings_are_translated_with_billed_usage(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2embed-json-1"
    fresh_mock.enqueue(documented_reply(name))
    result = client(gateway, tag).embeddings.create(model="cohere/embed-v4.0", input=["hello", "goodbye"],
                                                    extra_body={"input_type": "classification"})
    assert len(result.data) == 2 and result.data[1].embedding == pytest.approx([0.042480469, -0.01739502,
                                                                                 0.020446777, -0.016967773])
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)
    received = fresh_mock.requests[0]
    assert received.path == "/v2/embed"
    assert json.loads(received.body) == documented(name)["request"]["body"]
    assert received.headers["authorization"] == f"Bearer {KEY}"
    row = gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"]) == ("cohere", 2)

    native_tag = tag + "-native"  # the same exchange sent natively: the same usage recorded
    fresh_mock.enqueue(documented_reply(name))
    httpx.post(gateway.url + "/cohere/v2/embed", json=documented(name)["request"]["body"],
               headers={"authorization": f"Bearer {KEY}", "x-test-id": native_tag})
    native = gateway.row_for(native_tag)
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column


def test_cohere_error_keeps_status_and_message(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "cohere-v2embed-error-1"
    fresh_mock.enqueue(name)
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway, tag).embeddings.create(model="cohere/nonexistent", input="Hello, world!")
    assert err.value.body["message"] == corpus.load(name)["expect"]["error_message"]  # type: ignore[index]
    assert gateway.row_for(tag)["status"] == 404


def test_token_array_input_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway, tag).embeddings.create(model="gemini/gemini-embedding-001", input=[[1, 2, 3]])
    assert err.value.body["param"] == "input"  # type: ignore[index]
    assert fresh_mock.request_count == 0


def test_a_provider_without_embeddings_is_a_404(gateway: Gateway, fresh_mock, tag: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway, tag).embeddings.create(model="anthropic/claude-haiku-4-5", input="hi")
    assert "no embeddings API for anthropic" in err.value.message
    assert fresh_mock.request_count == 0


def test_cache_hit_is_translated_like_the_miss(cache_gateway: Gateway, fresh_mock, tag: str) -> None:
    """The cache keys on and keeps the native Gemini exchange; a hit is translated for the client the same way."""
    fresh_mock.enqueue(documented_reply("gemini-batchembedcontents-json-1"))

    def call() -> list[list[float]]:
        result = client(cache_gateway, tag).embeddings.create(model="gemini/gemini-embedding-001",
                                                              input=[tag, "How much wood would a woodchuck chuck?"])
        return [d.embedding for d in result.data]

    first, second = call(), call()
    assert second == first and len(first) == 2
    assert fresh_mock.request_count == 1, "a hit must not reach the upstream"
    rows = cache_gateway.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 2)
    assert sorted(r["cache"] for r in rows) == ["hit", "miss"]
