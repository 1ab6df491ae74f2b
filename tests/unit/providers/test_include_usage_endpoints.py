"""Where Corral may add stream_options.include_usage: exactly the endpoints whose published request
schema has it, for every provider and every operation of the OpenAI and Anthropic API descriptions
(tests/data/openapi). The end-to-end proof that nothing is added elsewhere is tests/e2e/test_fidelity.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from providers.catalog import Catalog, CatalogError

OPENAPI = Path(__file__).resolve().parents[2] / "data" / "openapi"
CATALOG = Catalog.load()


def endpoints(name: str) -> list[dict]:
    return json.loads((OPENAPI / f"{name}.endpoints.json").read_text())


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_the_descriptions_are_the_full_surface() -> None:
    openai, anthropic = endpoints("openai"), endpoints("anthropic")
    assert len(openai) > 250 and len(anthropic) > 90
    assert {(e["method"], e["path"]) for e in openai if e["include_usage"]} == {
        ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
    }
    # The traps of issue 17: stream without this option, or a stream_options of another shape.
    streamed = {e["path"] for e in openai if e["stream"] and not e["include_usage"]}
    assert {"/v1/responses", "/v1/threads/runs", "/v1/threads/{thread_id}/runs", "/v1/images/generations",
            "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"} <= streamed


@pytest.mark.parametrize("provider", [p.name for p in CATALOG if p.format == "openai"])
def test_openai_compatible_providers_take_it_only_where_openai_does(provider: str) -> None:
    p = CATALOG.get(provider)
    assert p is not None
    wrong = [(e["method"], e["path"]) for e in endpoints("openai")
             if e["method"] == "POST" and CATALOG.takes_include_usage(p, concrete(e["path"])) != e["include_usage"]]
    assert wrong == []


def test_anthropic_endpoints_never_take_it() -> None:
    p = CATALOG.get("anthropic")
    assert p is not None
    assert [e["path"] for e in endpoints("anthropic") if CATALOG.takes_include_usage(p, concrete(e["path"]))] == []
    # Its OpenAI compatibility endpoint is chat completions, which has the option.
    assert CATALOG.takes_include_usage(p, "/v1/chat/completions")


def test_vendor_paths_and_overrides() -> None:
    azure = CATALOG.get("azure")
    assert azure is not None
    assert CATALOG.takes_include_usage(azure, "/openai/deployments/gpt/chat/completions?api-version=2025-01-01")
    assert not CATALOG.takes_include_usage(azure, "/openai/deployments/gpt/responses?api-version=2025-01-01")
    gemini = CATALOG.get("gemini")
    assert gemini is not None
    assert CATALOG.takes_include_usage(gemini, "/v1beta/openai/chat/completions")
    assert not CATALOG.takes_include_usage(gemini, "/v1beta/models/g:streamGenerateContent")
    custom = Catalog.load(
        {"custom": {"custom": True, "upstream": "http://127.0.0.1:1", "include_usage_paths": ["/generate"]}}
    )
    c = custom.get("custom")
    assert c is not None
    assert custom.takes_include_usage(c, "/v1/generate") and not custom.takes_include_usage(c, "/v1/chat/completions")
    with pytest.raises(CatalogError, match="include_usage_paths"):
        Catalog.load({"custom": {"custom": True, "upstream": "http://127.0.0.1:1", "include_usage_paths": "chat"}})
