"""Catalog data for the unified endpoint: which provider and native model a ``"<provider>/<model>"``
names, where its chat request goes, and the model list ``GET /v1/models`` answers with."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from addon.unified.families import TRANSLATIONS
from providers.catalog import Catalog, Provider

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/v1/embeddings"
ENDPOINTS = frozenset({CHAT_PATH, MODELS_PATH, EMBEDDINGS_PATH})



@dataclass(frozen=True)
class Target:
    provider: Provider
    model: str  # the provider's own name for the model
    path: str  # path after the provider's prefix
    translate: str | None  # family the request is translated to; None: OpenAI-compatible, passed through


class UnknownModel(LookupError):
    pass


def openai_chat_path(provider: Provider) -> str | None:
    """Where an OpenAI-shaped chat completions request goes on ``provider`` (catalog ``chat_path``), or
    None when it has no such endpoint (its native API must be translated)."""
    if provider.chat_path is not None:
        return provider.chat_path
    return "/v1/chat/completions" if provider.format == "openai" else None


# Providers of a translated family whose native path the family's translation cannot build: Vertex AI
# names a project and location in every model path (and takes an OAuth token, not a key).
UNREACHABLE = {"vertex": "its paths name a Google Cloud project and location"}


def reachable(provider: Provider) -> bool:
    """The unified endpoint can send a chat request to ``provider``."""
    if provider.name in UNREACHABLE:
        return False
    return provider.format in TRANSLATIONS or openai_chat_path(provider) is not None


def resolve(catalog: Catalog, requested: object, stream: bool = False) -> Target:
    if not isinstance(requested, str) or "/" not in requested:
        raise UnknownModel(f"corral: model {requested!r} must be '<provider>/<model>' (see GET /v1/models)")
    name, _, model = requested.partition("/")
    provider = catalog.get(name)
    if provider is None or not model:
        known = "" if provider is not None else f": unknown provider {name!r}"
        raise UnknownModel(f"corral: model {requested!r} cannot be routed{known}; use '<provider>/<model>' "
                           "with a provider from `corral providers`")
    if name in UNREACHABLE:
        raise UnknownModel(f"corral: the unified endpoint cannot reach {name} models ({UNREACHABLE[name]}); "
                           f"use its native prefix /{provider.prefix}/")
    translation = TRANSLATIONS.get(provider.format)
    if translation is not None:
        return Target(provider, model, translation.path(model, stream), provider.format)
    path = openai_chat_path(provider)
    if path is None:
        raise UnknownModel(f"corral: the unified endpoint cannot reach {name} models yet ({provider.format} "
                           f"format); use its native prefix /{provider.prefix}/")
    return Target(provider, model, path, None)


def models_body(catalog: Catalog, aliases: Iterable[Any] = ()) -> bytes:
    """OpenAI's model list: the model aliases and groups (``[models.<alias>]``, owned by "corral"), then
    every model the price table knows for each provider the unified endpoint reaches."""
    data: list[dict[str, Any]] = [{"id": g.alias, "object": "model", "created": 0, "owned_by": "corral",
                                   "targets": list(g.targets), "strategy": g.strategy} for g in aliases]
    for provider in catalog:
        if not reachable(provider):
            continue
        pricing_id = provider.genai_prices_id
        for model in _priced_models(pricing_id) if pricing_id else ():
            data.append({"id": f"{provider.name}/{model}", "object": "model", "created": 0,
                         "owned_by": provider.name})
    return json.dumps({"object": "list", "data": data}).encode()


@functools.lru_cache(maxsize=128)
def _priced_models(pricing_id: str) -> tuple[str, ...]:
    from genai_prices import data  # a large table: loaded on the first /v1/models only

    for entry in data.providers:
        if entry.id == pricing_id:
            return tuple(m.id for m in entry.models)
    return ()


# Where the key goes for each auth style (a bearer token is "Bearer <key>"). A SigV4 provider (Bedrock)
# takes its API keys as a bearer token too: the gateway signs nothing, so that is the key it can use.
_KEY_HEADERS = {"bearer": "authorization", "x-api-key": "x-api-key", "api-key": "api-key",
                "x-goog-api-key": "x-goog-api-key", "sigv4": "authorization"}
_BEARER_AUTH = ("bearer", "sigv4")
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def parse_keys(raw: str, catalog: Catalog) -> dict[str, str]:
    """``[unified] keys = { anthropic = "env:ANTHROPIC_API_KEY" }`` -> {provider: env var name}."""
    table = json.loads(raw or "{}") if isinstance(raw, str) else raw
    if not isinstance(table, dict):
        raise ValueError("[unified] keys must be a table { <provider> = \"env:<VAR>\" }")
    out = {}
    for name, ref in table.items():
        if name not in catalog:
            raise ValueError(f"[unified] keys: unknown provider {name!r}")
        if not isinstance(ref, str) or not ref.startswith("env:") or len(ref) < 5:
            raise ValueError(f"[unified] keys.{name} must be \"env:<VARIABLE>\" (keys never live in the file)")
        out[name] = ref[4:]
    return out


def place_key(headers, provider: Provider, key: str | None, forward_client_key: bool) -> None:
    """Put the provider's key where its API reads it. ``key``: the configured one; without it the
    client's bearer token is moved there when ``forward_client_key`` is set, else none is sent."""
    if key is None and forward_client_key:
        bearer = headers.get("authorization", "")
        key = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
    for name in _CREDENTIAL_HEADERS:
        headers.pop(name, None)
    target = _KEY_HEADERS.get(provider.auth)
    if key and target:
        headers[target] = f"Bearer {key}" if provider.auth in _BEARER_AUTH else key
    if provider.format == "anthropic" and "anthropic-version" not in headers:
        headers["anthropic-version"] = ANTHROPIC_VERSION


ANTHROPIC_VERSION = "2023-06-01"
