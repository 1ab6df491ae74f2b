"""Which provider, native model and path a unified ``"<provider>/<model>"`` names."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from addon.unified import routing
from providers.catalog import Catalog

CATALOG = Catalog.load()


@pytest.mark.parametrize(("model", "provider", "native", "path", "translate"), [
    ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", "/v1/messages", "anthropic"),
    ("openai/gpt-4o-mini", "openai", "gpt-4o-mini", "/v1/chat/completions", None),
    ("groq/llama-3.1-8b-instant", "groq", "llama-3.1-8b-instant", "/openai/v1/chat/completions", None),
    ("openrouter/meta-llama/llama-3-8b", "openrouter", "meta-llama/llama-3-8b", "/api/v1/chat/completions", None),
    ("bedrock/us.amazon.nova-micro-v1:0", "bedrock", "us.amazon.nova-micro-v1:0",
     "/model/us.amazon.nova-micro-v1%3A0/converse", "bedrock"),
    ("cohere/command-a", "cohere", "command-a", "/v2/chat", "cohere"),
])
def test_resolve(model: str, provider: str, native: str, path: str, translate: str | None) -> None:
    target = routing.resolve(CATALOG, model)
    assert (target.provider.name, target.model, target.path, target.translate) == (provider, native, path, translate)


@pytest.mark.parametrize("model", ["gpt-4o", "nosuch/x", "anthropic/", None, "bedrock/", "vertex/gemini-2.5-flash"])
def test_unroutable(model: object) -> None:
    with pytest.raises(routing.UnknownModel):
        routing.resolve(CATALOG, model)


def test_models_body_lists_priced_models_of_reachable_providers() -> None:
    ids = [m["id"] for m in json.loads(routing.models_body(CATALOG))["data"]]
    assert "anthropic/claude-3-5-haiku-latest" in ids
    assert "bedrock/amazon.nova-micro-v1:0" in ids and "cohere/command-a" in ids
    # Gemini's family, but Vertex AI's paths name a project and location the request cannot give.
    assert "gemini/gemini-2.5-flash" in ids and not any(i.startswith("vertex/") for i in ids)


def test_place_key_moves_the_client_bearer_into_the_providers_style() -> None:
    headers = http.Headers(authorization="Bearer sk-1")
    routing.place_key(headers, CATALOG.get("anthropic"), None, True)  # type: ignore[arg-type]
    assert "authorization" not in headers and headers["x-api-key"] == "sk-1"
    assert headers["anthropic-version"] == routing.ANTHROPIC_VERSION
    configured = http.Headers(authorization="Bearer client-key")
    routing.place_key(configured, CATALOG.get("groq"), "gsk-configured", True)  # type: ignore[arg-type]
    assert configured["authorization"] == "Bearer gsk-configured"
    kept_out = http.Headers(authorization="Bearer client-key")
    routing.place_key(kept_out, CATALOG.get("groq"), None, False)  # type: ignore[arg-type]
    assert "authorization" not in kept_out
    bedrock = http.Headers(authorization="Bearer client-key")
    routing.place_key(bedrock, CATALOG.get("bedrock"), "ABSK-configured", False)  # type: ignore[arg-type]
    assert bedrock["authorization"] == "Bearer ABSK-configured"  # a Bedrock API key is a bearer token


def test_parse_keys() -> None:
    assert routing.parse_keys('{"anthropic": "env:ANTHROPIC_API_KEY"}', CATALOG) == {"anthropic": "ANTHROPIC_API_KEY"}
    assert routing.parse_keys("", CATALOG) == {}
    with pytest.raises(ValueError, match="unknown provider 'anthropics'"):
        routing.parse_keys('{"anthropics": "env:X"}', CATALOG)
    with pytest.raises(ValueError, match="never live in the file"):
        routing.parse_keys('{"anthropic": "sk-ant-literal"}', CATALOG)
