"""``POST /v1/embeddings`` on the unified endpoint: the registry of embeddings translations, one entry per
wire family whose native embeddings API differs from OpenAI's (``gemini``, ``cohere``).

OpenAI-compatible providers get the request as is with ``model`` rewritten (``resolve``); a translated
family's module gives the native path and request, and reads vectors, usage and errors out of the
native answer, which ``openai_body`` turns into OpenAI's ``{"object": "list", "data": [...], "usage"}``.
The meter and the recorder see only the native exchange, so usage and cost are the native ones.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from addon.unified.errors import TranslationError, openai_error_bytes
from addon.unified.families import Translation
from addon.unified.routing import Target, UnknownModel, openai_chat_path
from providers.catalog import Catalog

PATH = "/v1/embeddings"
# OpenAI's embeddings request keys a translated family can honour; anything else is refused by name.
KEYS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


@dataclass(frozen=True)
class EmbeddingsTranslation:
    family: str
    path: Callable[[str], str]  # native model -> path after the provider's prefix
    # (OpenAI embeddings request, native model, texts) -> native request body; raises TranslationError.
    to_native: Callable[[Mapping[str, Any], str, list[str]], dict[str, Any]]
    vectors: Callable[[Any], list[list[float]]]  # native answer -> one vector per input, in order
    input_tokens: Callable[[Any], int | None]  # native answer -> input tokens, None when not reported
    error: Callable[[int, bytes], bytes]  # native error answer -> OpenAI's error JSON
    extra_keys: frozenset[str] = frozenset()  # request keys beyond OpenAI's the family takes (extra_body)


def _registry() -> dict[str, EmbeddingsTranslation]:
    from addon.unified.embeddings import cohere, gemini

    return {e.family: e for e in (gemini.ENTRY, cohere.ENTRY)}


EMBEDDINGS: dict[str, EmbeddingsTranslation] = _registry()


def resolve(catalog: Catalog, requested: object) -> Target:
    """Where ``"<provider>/<model>"``'s embeddings request goes."""
    if not isinstance(requested, str) or "/" not in requested:
        raise UnknownModel(f"corral: model {requested!r} must be '<provider>/<model>' (see GET /v1/models)")
    name, _, model = requested.partition("/")
    provider = catalog.get(name)
    if provider is None or not model:
        raise UnknownModel(f"corral: model {requested!r} cannot be routed"
                           + ("" if provider is not None else f": unknown provider {name!r}"))
    entry = EMBEDDINGS.get(provider.format)
    if entry is not None:
        return Target(provider, model, entry.path(model), provider.format)
    chat = openai_chat_path(provider)
    if provider.format in ("openai", "ollama") and chat is not None and chat.endswith("/chat/completions"):
        return Target(provider, model, chat.removesuffix("/chat/completions") + "/embeddings", None)
    raise UnknownModel(f"corral: the unified endpoint has no embeddings API for {name} ({provider.format} format)")


def texts(body: Mapping[str, Any], entry: EmbeddingsTranslation) -> list[str]:
    """The request's inputs as texts; what a translated family cannot take is refused by name."""
    unknown = sorted(set(body) - KEYS - entry.extra_keys)
    if unknown:
        raise TranslationError(f"{unknown[0]} is not supported for {entry.family} embeddings", unknown[0])
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise TranslationError(f"input must be a string or a list of strings for {entry.family} embeddings "
                               "(token arrays cannot be translated)", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise TranslationError("encoding_format must be \"float\" or \"base64\"", "encoding_format")
    return items


def openai_body(entry: EmbeddingsTranslation, status: int, body: bytes, model: str, encoding: str) -> bytes:
    """The native answer in OpenAI's embeddings shape (or error shape).

    ``usage`` is always there, as the OpenAI SDK's type has it; when the provider reports no token count
    (Gemini), both counts are ``null``: unknown, never a made-up 0 (the record has NULL too)."""
    if status >= 400:
        return body if _openai_error(body) else entry.error(status, body)
    try:
        doc = json.loads(body)
        vectors = entry.vectors(doc)
        tokens = entry.input_tokens(doc)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return openai_error_bytes(f"corral: the {entry.family} embeddings answer could not be read ({e})",
                                  "server_error")
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)} for i, v in enumerate(vectors)]
    return json.dumps({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).encode()


def _openai_error(body: bytes) -> bool:
    """An error in OpenAI's shape already: one Corral answered itself (a refused request, a limit)."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(err, dict) and "param" in err


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding != "base64":
        return vector
    # What OpenAI sends for encoding_format=base64 (the SDK's default): little-endian float32.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def as_translation(unified: Mapping[str, Any]) -> Translation:
    """The flow's embeddings translation in the shape UnifiedResponse uses (never a stream)."""
    entry = EMBEDDINGS[unified["translate"]]
    model, encoding = unified["native_model"], unified.get("encoding_format", "float")

    def no_stream(_include_usage: bool) -> Any:
        raise TypeError("embeddings answers are never streamed")

    return Translation(entry.family, lambda m, _s: entry.path(m), lambda b, m: entry.to_native(b, m, texts(b, entry)),
                       lambda status, body: openai_body(entry, status, body, model, encoding), no_stream,
                       stream_media="\x00")  # matches no media type: never taken for a stream
