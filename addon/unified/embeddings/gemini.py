"""Gemini embeddings: ``POST /v1beta/models/{model}:batchEmbedContents`` (one request per input), read
back from ``batchEmbedContents`` (``embeddings[].values``) or ``embedContent`` (``embedding.values``).

The Gemini API reports no token usage for embeddings (https://ai.google.dev/api/embeddings): the
usage is then unknown, NULL in the record and ``null`` for the client; a ``usageMetadata`` that a
version of the API does send is used."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from addon.unified.embeddings import EmbeddingsTranslation
from addon.unified.errors import openai_error_bytes

_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error"}


def path(model: str) -> str:
    return f"/v1beta/models/{quote(model, safe='-._')}:batchEmbedContents"


def to_native(body: Mapping[str, Any], model: str, texts: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        extra["outputDimensionality"] = body["dimensions"]
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in texts]}


def vectors(doc: Any) -> list[list[float]]:
    if "embeddings" in doc:
        return [e["values"] for e in doc["embeddings"]]
    return [doc["embedding"]["values"]]


def input_tokens(doc: Any) -> int | None:
    usage = doc.get("usageMetadata")
    count = usage.get("promptTokenCount") if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def error(status: int, body: bytes) -> bytes:
    """``{"error": {"code", "message", "status"}}`` in OpenAI's shape, message and status kept."""
    try:
        err = json.loads(body)["error"]
        message, code = str(err.get("message", "")), err.get("status")
    except (ValueError, TypeError, KeyError, AttributeError):
        message, code = body.decode("utf-8", "replace")[:2000] or f"upstream answered HTTP {status}", None
    kind = _KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return openai_error_bytes(message, kind, code=code)


ENTRY = EmbeddingsTranslation("gemini", path, to_native, vectors, input_tokens, error)
