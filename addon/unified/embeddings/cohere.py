"""Cohere embeddings: ``POST /v2/embed`` (https://docs.cohere.com/reference/embed).

Cohere needs an ``input_type`` OpenAI has no field for: ``search_document`` unless the client sends
one (``extra_body={"input_type": "search_query"}``). Vectors come back as ``embeddings.float``; usage is
``meta.billed_units.input_tokens``, what Cohere bills (and what the meter records)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from addon.unified.embeddings import EmbeddingsTranslation
from addon.unified.errors import TranslationError, openai_error_bytes

INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error"}


def to_native(body: Mapping[str, Any], model: str, texts: list[str]) -> dict[str, Any]:
    input_type = body.get("input_type", "search_document")
    if input_type not in INPUT_TYPES:
        raise TranslationError(f"input_type must be one of {', '.join(INPUT_TYPES)} for cohere", "input_type")
    native: dict[str, Any] = {"model": model, "texts": texts, "input_type": input_type, "embedding_types": ["float"]}
    if body.get("dimensions") is not None:
        native["output_dimension"] = body["dimensions"]
    return native


def vectors(doc: Any) -> list[list[float]]:
    embeddings = doc["embeddings"]
    return embeddings["float"] if isinstance(embeddings, dict) else embeddings  # v1: a plain list


def input_tokens(doc: Any) -> int | None:
    units = (doc.get("meta") or {}).get("billed_units") or {}
    count = units.get("input_tokens")
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def error(status: int, body: bytes) -> bytes:
    """``{"id", "message"}`` in OpenAI's shape, the message kept."""
    try:
        message = str(json.loads(body)["message"])
    except (ValueError, TypeError, KeyError):
        message = body.decode("utf-8", "replace")[:2000] or f"upstream answered HTTP {status}"
    kind = _KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return openai_error_bytes(message, kind)


ENTRY = EmbeddingsTranslation("cohere", lambda model: "/v2/embed", to_native, vectors, input_tokens, error,
                              extra_keys=frozenset({"input_type"}))
