"""Every recorded exchange replayed through the gateway in reverse mode, over real sockets.

The client must get the recorded bytes unchanged, and the row must carry the tokens the corpus file
says the provider reported (``expect``), NULL where the provider reported none.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.reliability import reliability

# corpus "provider" -> catalog prefix. Bedrock is signed for its own host: explicit mode only.
PREFIX = {
    "openai": "openai", "azure-openai": "azure", "anthropic": "anthropic", "gemini": "gemini", "groq": "groq",
    "mistral": "mistral", "cohere": "cohere", "deepseek": "deepseek", "openrouter": "openrouter",
    "together": "together", "ollama": "ollama",
}
REVERSE_NAMES = [n for n in corpus.names() if corpus.load(n)["provider"] in PREFIX]
SUCCESS = [n for n in REVERSE_NAMES if corpus.load(n)["response"]["status"] < 400]
ERRORS = [n for n in REVERSE_NAMES if corpus.load(n)["response"]["status"] >= 400]


def replay(gateway: Gateway, name: str, tag: str) -> httpx.Response:
    ex = corpus.load(name)
    req = ex["request"]
    body = req.get("body")
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else b""
    headers = {"content-type": "application/json", "x-mock-exchange": name, "x-test-id": tag,
               "authorization": "Bearer sk-test-corpus-key", "accept-encoding": "identity"}
    url = gateway.base(PREFIX[ex["provider"]]) + corpus.request_path(ex)
    with httpx.Client(timeout=20) as client:
        return client.request(req["method"], url, content=content, headers=headers)


def test_corpus_covers_every_core_provider() -> None:
    assert {corpus.load(n)["provider"] for n in SUCCESS} >= {
        "openai", "anthropic", "gemini", "groq", "mistral", "deepseek", "openrouter", "together", "ollama"}


@pytest.mark.parametrize("name", SUCCESS)
@reliability(
    "upstream faults",
    "error object inside a 200 stream (OpenRouter)",
    "the stream unchanged",
    "row with the provider error",
)
def test_success_exchange_passes_unchanged_and_usage_is_recorded(
    gateway: Gateway, fresh_mock, tag: str, name: str
) -> None:
    ex = corpus.load(name)
    resp = replay(gateway, name, tag)
    assert resp.status_code == ex["response"]["status"]
    wire = corpus.response_bytes(ex)
    if ex.get("expect", {}).get("content_encoding") == "gzip" and ex["response"].get("body_base64"):
        assert resp.content == corpus.load(name)["response"]["body_text"].encode()  # httpx decoded it
    else:
        assert resp.content == wire
    row = gateway.row_for(tag)
    expect = ex["expect"]
    assert row["provider"] == PREFIX[ex["provider"]]
    assert row["mode"] == "reverse"
    assert row["status"] == ex["response"]["status"]
    assert bool(row["stream"]) == (expect["stream_format"] != "json")
    assert row["model"] == expect["model"]
    assert row["input_tokens"] == expect["input_tokens"]
    assert row["output_tokens"] == expect["output_tokens"]
    for key in ("cached_input_tokens", "reasoning_tokens", "cache_creation_input_tokens"):
        if key in expect:
            assert row[key] == expect[key], key
    assert row["complete"]
    if expect.get("in_stream_error"):  # an error inside a 200 stream is an error all the same
        assert row["error"] and "Token limit" in row["error"]
    else:
        assert row["error"] is None


@pytest.mark.parametrize("name", ERRORS)
def test_error_exchange_passes_unchanged_and_error_is_recorded(
    gateway: Gateway, fresh_mock, tag: str, name: str
) -> None:
    ex = corpus.load(name)
    resp = replay(gateway, name, tag)
    assert resp.status_code == ex["response"]["status"]
    assert resp.content == corpus.response_bytes(ex)
    row = gateway.row_for(tag)
    assert row["status"] == ex["response"]["status"]
    assert row["error"]
    message = ex["expect"].get("error_message") or ""
    assert message[:40] in row["error"]
    assert row["input_tokens"] is None and row["output_tokens"] is None
