"""A flow's span attributes in the OpenTelemetry GenAI semantic conventions, plus Corral's ``corral.*``.

Plain functions of the flow and its metadata, with no OpenTelemetry import: the addon sets what they
return on the span. Attribute names follow semantic-conventions 1.37 (gen_ai.provider.name, with the
older gen_ai.system kept for collectors that still expect it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import http

from addon import metadata as md

AttributeValue = str | bool | int | float | list[str]

# Catalog names -> the conventions' well-known gen_ai.provider.name values; others keep their own name.
PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}
# Request body field -> attribute (the first of several spellings of the token cap wins).
REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)
CONTENT_LIMIT = 64 << 10  # characters of captured prompt or completion per attribute


def operation(path: str) -> str:
    """gen_ai.operation.name from the request path (the API the client called)."""
    p = path.split("?", 1)[0].lower()
    if "embed" in p:
        return "embeddings"
    if p.endswith("/completions") and not p.endswith("/chat/completions"):
        return "text_completion"
    if "generatecontent" in p:
        return "generate_content"
    return "chat"


def provider_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider, provider)


def server(upstream: str | None) -> tuple[str | None, int | None]:
    """server.address and server.port of the provider the flow went to (not the in-process relay)."""
    if not upstream:
        return None, None
    parts = urlsplit(upstream)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.hostname, port


def status(flow: http.HTTPFlow) -> int | None:
    """The status the client got; mitmproxy's own 502 when the upstream failed before any answer."""
    if flow.response is not None:
        return flow.response.status_code
    if flow.error is not None and not md.client_went_away(flow):
        return 502
    return None


def error_type(flow: http.HTTPFlow, code: int | None) -> str | None:
    """error.type: Corral's own error kind, else the HTTP status, else how the exchange broke off."""
    meta = flow.metadata
    if flow.response is not None and (kind := flow.response.headers.get("x-corral-error")):
        return kind
    if code is not None and code >= 400:
        return str(code)
    if flow.error is not None and not meta.get(md.COMPLETE):
        return "client_disconnected" if md.client_went_away(flow) else "upstream_error"
    if meta.get(md.RESPONSE_ERROR):
        return "provider_error"  # an error inside a 200 stream
    return None


def request_attributes(flow: http.HTTPFlow) -> dict[str, AttributeValue]:
    """What is known once the request body was read: set at the ``request`` hook, before the answer
    (whose model may differ) replaces ``corral.model``."""
    meta = flow.metadata
    out: dict[str, AttributeValue] = {}
    if isinstance(model := meta.get(md.MODEL), str):
        out["gen_ai.request.model"] = model
    out["gen_ai.request.stream"] = bool(meta.get(md.STREAM_REQUESTED))
    params = meta.get(md.REQUEST_PARAMS) or {}
    for field, name in REQUEST_PARAMS:
        if field in params and name not in out:
            out[name] = params[field]
    return out


def base_attributes(flow: http.HTTPFlow) -> dict[str, AttributeValue]:
    """What the routing decided: known when the span starts."""
    meta = flow.metadata
    provider = meta.get(md.PROVIDER) or "unknown"
    out: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation(flow.request.path),
        "gen_ai.provider.name": provider_name(provider),
        "gen_ai.system": provider_name(provider),
        "corral.provider": provider,
    }
    if meta.get(md.MODE):
        out["corral.mode"] = meta[md.MODE]
    return out


def response_attributes(flow: http.HTTPFlow) -> dict[str, AttributeValue]:
    """Everything known at the end of the flow."""
    meta = flow.metadata
    out: dict[str, AttributeValue] = {}
    address, port = server(meta.get(md.UPSTREAM))
    if address:
        out["server.address"] = address
    if port:
        out["server.port"] = port
    code = status(flow)
    if code is not None:
        out["http.response.status_code"] = code
    if etype := error_type(flow, code):
        out["error.type"] = etype
    if isinstance(model := meta.get(md.MODEL), str) and meta.get(md.USAGE) is not None:
        out["gen_ai.response.model"] = model  # only once a response was parsed: else it is the request's
    if meta.get(md.FINISH_REASON):
        out["gen_ai.response.finish_reasons"] = [meta[md.FINISH_REASON]]
    if meta.get(md.RESPONSE_ID):
        out["gen_ai.response.id"] = meta[md.RESPONSE_ID]
    usage = meta.get(md.USAGE) or {}
    for key, name in (("input_tokens", "gen_ai.usage.input_tokens"), ("output_tokens", "gen_ai.usage.output_tokens"),
                      ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
                      ("cache_creation_input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
                      ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens")):
        if isinstance(usage.get(key), int):
            out[name] = usage[key]
    corral = (
        ("corral.cost_usd", md.COST_USD), ("corral.cache", md.CACHE), ("corral.saved_cost_usd", md.SAVED_COST_USD),
        ("corral.retries", md.RETRIES), ("corral.ratelimit.wait_ms", md.WAIT_MS), ("corral.tenant", md.TENANT),
        ("corral.credential", md.CREDENTIAL), ("corral.fixture", md.FIXTURE),
        ("corral.gateway_error", md.GATEWAY_ERROR), ("corral.response_error", md.RESPONSE_ERROR),
    )
    for name, key in corral:
        value = meta.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[name] = value
    if meta.get(md.RATELIMIT):
        out["corral.ratelimit.limits"] = [str(x) for x in meta[md.RATELIMIT]]
    if md.STREAM in meta:
        out["corral.stream"] = bool(meta[md.STREAM])
    if md.COMPLETE in meta:
        out["corral.complete"] = bool(meta[md.COMPLETE])
    return out


def _clip(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT]


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):  # OpenAI / Anthropic content blocks
        texts = [c.get("text") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
        return [{"type": "text", "content": t} for t in texts]
    return []


def content_attributes(flow: http.HTTPFlow, request_json: Any) -> dict[str, AttributeValue]:
    """gen_ai.input.messages / gen_ai.output.messages as the conventions' JSON (role + parts), for
    ``capture_content = true`` only. Messages of the chat shape (OpenAI-compatible, Anthropic)."""
    out: dict[str, AttributeValue] = {}
    messages = request_json.get("messages") if isinstance(request_json, dict) else None
    if isinstance(messages, list):
        shaped = [{"role": m.get("role"), "parts": _parts(m.get("content"))} for m in messages if isinstance(m, dict)]
        out["gen_ai.input.messages"] = _clip(json.dumps(shaped, ensure_ascii=False))
    if isinstance(request_json, dict) and isinstance(request_json.get("system"), str):
        out["gen_ai.system_instructions"] = _clip(json.dumps([{"type": "text", "content": request_json["system"]}]))
    text = flow.metadata.get(md.TEXT)
    if isinstance(text, str) or flow.metadata.get(md.FINISH_REASON):  # a tool call only: no text part
        parts = [{"type": "text", "content": text}] if isinstance(text, str) else []
        message: dict[str, Any] = {"role": "assistant", "parts": parts}
        if flow.metadata.get(md.FINISH_REASON):
            message["finish_reason"] = flow.metadata[md.FINISH_REASON]
        out["gen_ai.output.messages"] = _clip(json.dumps([message], ensure_ascii=False))
    return out
