"""Embeddings translations: where a request goes, the native request, and the native answer in OpenAI's shape."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from addon.unified import embeddings
from addon.unified.embeddings import EMBEDDINGS, cohere, gemini
from addon.unified.errors import TranslationError
from addon.unified.routing import UnknownModel
from providers.catalog import Catalog

CATALOG = Catalog.load()


@pytest.mark.parametrize(("model", "path", "translate"), [
    ("openai/text-embedding-3-small", "/v1/embeddings", None),
    ("mistral/mistral-embed", "/v1/embeddings", None),
    ("ollama/nomic-embed-text", "/v1/embeddings", None),
    ("gemini/gemini-embedding-001", "/v1beta/models/gemini-embedding-001:batchEmbedContents", "gemini"),
    ("cohere/embed-v4.0", "/v2/embed", "cohere"),
])
def test_resolve(model: str, path: str, translate: str | None) -> None:
    target = embeddings.resolve(CATALOG, model)
    assert (target.path, target.translate) == (path, translate)


@pytest.mark.parametrize("model", ["anthropic/claude-haiku-4-5", "text-embedding-3-small", "nosuch/x"])
def test_unreachable(model: str) -> None:
    with pytest.raises(UnknownModel):
        embeddings.resolve(CATALOG, model)


def test_gemini_request_one_entry_per_input_with_dimensions() -> None:
    body = {"model": "gemini/gemini-embedding-001", "input": ["a", "b"], "dimensions": 8}
    native = gemini.to_native(body, "gemini-embedding-001", embeddings.texts(body, gemini.ENTRY))
    assert native == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]}


def test_cohere_request_defaults_input_type_and_refuses_unknown_ones() -> None:
    body = {"model": "cohere/embed-v4.0", "input": "a"}
    assert cohere.to_native(body, "embed-v4.0", ["a"]) == {
        "model": "embed-v4.0", "texts": ["a"], "input_type": "search_document", "embedding_types": ["float"]}
    with pytest.raises(TranslationError) as err:
        cohere.to_native({**body, "input_type": "image"}, "embed-v4.0", ["a"])
    assert err.value.param == "input_type"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [[1, 2]]}, "input"),
    ({"input": []}, "input"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a", "input_type": "search_query"}, "input_type"),  # Cohere's key: not Gemini's
])
def test_what_gemini_cannot_take_is_refused_by_name(body: dict, param: str) -> None:
    with pytest.raises(TranslationError) as err:
        embeddings.texts({"model": "gemini/x", **body}, gemini.ENTRY)
    assert err.value.param == param


def test_base64_vectors_are_little_endian_float32_as_openai_sends_them() -> None:
    answer = json.dumps({"embeddings": [{"values": [0.5, -1.0]}]}).encode()
    out = json.loads(embeddings.openai_body(gemini.ENTRY, 200, answer, "gemini-embedding-001", "base64"))
    assert struct.unpack("<2f", base64.b64decode(out["data"][0]["embedding"])) == (0.5, -1.0)
    assert out["usage"] == {"prompt_tokens": None, "total_tokens": None}  # not reported: unknown, not 0
    assert out["model"] == "gemini-embedding-001" and out["object"] == "list"


def test_gemini_usage_is_used_when_reported_and_embed_content_is_read_too() -> None:
    answer = json.dumps({"embedding": {"values": [1.0]}, "usageMetadata": {"promptTokenCount": 3}}).encode()
    out = json.loads(embeddings.openai_body(gemini.ENTRY, 200, answer, "m", "float"))
    assert out["data"] == [{"object": "embedding", "index": 0, "embedding": [1.0]}]
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize(("entry", "status", "body", "kind", "message"), [
    (gemini.ENTRY, 429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}},
     "rate_limit_error", "quota"),
    (cohere.ENTRY, 400, {"id": "x", "message": "invalid texts"}, "invalid_request_error", "invalid texts"),
])
def test_errors_keep_status_kind_and_message(entry, status: int, body: dict, kind: str, message: str) -> None:
    out = json.loads(embeddings.openai_body(entry, status, json.dumps(body).encode(), "m", "float"))["error"]
    assert (out["type"], out["message"]) == (kind, message)


def test_an_answer_corral_made_in_openais_shape_is_kept() -> None:
    made = json.dumps({"error": {"message": "m", "type": "invalid_request_error", "param": "input", "code": None}})
    assert embeddings.openai_body(gemini.ENTRY, 400, made.encode(), "m", "float") == made.encode()


def test_registry_names_each_family_once() -> None:
    assert set(EMBEDDINGS) == {"gemini", "cohere"}
