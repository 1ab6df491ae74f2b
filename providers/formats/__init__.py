"""Registry of wire-format families, keyed by family name."""

from __future__ import annotations

from providers.formats import anthropic, bedrock, cohere, gemini, ollama, openai
from providers.formats.base import Family

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        openai.FAMILY,
        anthropic.FAMILY,
        gemini.FAMILY,
        cohere.FAMILY,
        bedrock.FAMILY,
        ollama.FAMILY,
    )
}


def get_family(name: str) -> Family:
    """The handler for ``name``; KeyError for an unknown family."""
    return FAMILIES[name]


__all__ = ["FAMILIES", "get_family"]
