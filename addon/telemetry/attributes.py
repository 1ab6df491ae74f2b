"""A flow's span attributes in the OpenTelemetry GenAI semantic conventions, plus Corral's ``corral.*``.

Plain functions of a ``Record``, the snapshot the addon takes of a finished flow on the event loop
(a shallow copy of its metadata and a few fields of the flow): they run in the export thread, with no
OpenTelemetry import. Attribute names follow semantic-conventions 1.37 (gen_ai.provider.name, with the
older gen_ai.system kept for collectors that still expect it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
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


@dataclasses.dataclass(slots=True)
class Record:
    """What the export thread needs of one finished flow: plain values, never the flow itself (its
    bodies must not wait in the export queue)."""

    context: Any  # addon.telemetry.context.SpanIds
    path: str
    method: str
    meta: dict[str, Any]  # a shallow copy of flow.metadata at the end of the flow
    start_ns: int
    end_ns: int
    request_model: str | None = None  # corral.model when the request hook ran
    response_status: int | None = None
    corral_error: str | None = None  # the x-corral-error header of Corral's own answers
    error: str | None = None  # flow.error.msg
    client_gone: bool = False
    first_ns: int | None = None  # the first response byte to the client
    request_body: bytes | None = None  # capture_content only


def header_values(fields: Any, *names: bytes) -> list[str | None]:
    """The first value of each header in ``names`` (lower case), from the raw header fields in one
    pass: mitmproxy's ``Headers.get`` costs more than the rest of a flow's snapshot."""
    out: list[str | None] = [None] * len(names)
    for key, value in fields:
        if len(key) in (11, 10, 14):  # traceparent, tracestate, x-corral-error: the only names asked for
            lowered = key.lower()
            if lowered in names:
                i = names.index(lowered)
                if out[i] is None:
                    out[i] = value.decode("latin-1")
    return out


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def record(flow: http.HTTPFlow, ids: Any, start_ns: int, request_model: str | None, capture: bool) -> Record:
    """The snapshot of a finished flow (on the event loop: only copies, nothing computed)."""
    req, resp, err = flow.request, flow.response, flow.error
    end = (resp.timestamp_end if resp is not None and resp.timestamp_end else None) or (
        err.timestamp if err is not None else None) or time.time()
    meta = flow.metadata
    first = meta.get(md.FIRST_BYTE_AT)
    rec = Record(
        ids, req.path, req.method, dict(meta), start_ns, _ns(end), request_model,
        response_status=resp.status_code if resp is not None else None,
        corral_error=header_values(resp.headers.fields if resp is not None else (), b"x-corral-error")[0],
        error=err.msg if err is not None else None, client_gone=md.client_went_away(flow),
        first_ns=_ns(first) if first else None,
    )
    if capture and not req.headers.get("content-encoding"):
        rec.request_body = req.raw_content
    return rec


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


@functools.lru_cache(maxsize=256)
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


def status(rec: Record) -> int | None:
    """The status the client got; mitmproxy's own 502 when the upstream failed before any answer."""
    if rec.response_status is not None:
        return rec.response_status
    if rec.error is not None and not rec.client_gone:
        return 502
    return None


def error_type(rec: Record, code: int | None) -> str | None:
    """error.type: Corral's own error kind, else the HTTP status, else how the exchange broke off."""
    meta = rec.meta
    if rec.corral_error:
        return rec.corral_error
    if code is not None and code >= 400:
        return str(code)
    if rec.error is not None and not meta.get(md.COMPLETE):
        return "client_disconnected" if rec.client_gone else "upstream_error"
    if meta.get(md.RESPONSE_ERROR):
        return "provider_error"  # an error inside a 200 stream
    return None


def request_attributes(rec: Record) -> dict[str, AttributeValue]:
    """What the request said: its model as the ``request`` hook saw it (the answer's may replace
    ``corral.model`` later), whether it asked for a stream, its sampling settings."""
    meta = rec.meta
    out: dict[str, AttributeValue] = {}
    if isinstance(rec.request_model, str):
        out["gen_ai.request.model"] = rec.request_model
    out["gen_ai.request.stream"] = bool(meta.get(md.STREAM_REQUESTED))
    params = meta.get(md.REQUEST_PARAMS) or {}
    for field, name in REQUEST_PARAMS:
        if field in params and name not in out:
            out[name] = params[field]
    return out


def base_attributes(rec: Record) -> dict[str, AttributeValue]:
    """What the routing decided."""
    meta = rec.meta
    provider = meta.get(md.PROVIDER) or "unknown"
    out: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation(rec.path),
        "gen_ai.provider.name": provider_name(provider),
        "gen_ai.system": provider_name(provider),
        "corral.provider": provider,
    }
    if meta.get(md.MODE):
        out["corral.mode"] = meta[md.MODE]
    return out


USAGE_ATTRIBUTES = (
    ("input_tokens", "gen_ai.usage.input_tokens"), ("output_tokens", "gen_ai.usage.output_tokens"),
    ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("cache_creation_input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
)
CORRAL_ATTRIBUTES = (
    ("corral.cost_usd", md.COST_USD), ("corral.cache", md.CACHE), ("corral.saved_cost_usd", md.SAVED_COST_USD),
    ("corral.retries", md.RETRIES), ("corral.ratelimit.wait_ms", md.WAIT_MS), ("corral.tenant", md.TENANT),
    ("corral.credential", md.CREDENTIAL), ("corral.fixture", md.FIXTURE),
    ("corral.gateway_error", md.GATEWAY_ERROR), ("corral.response_error", md.RESPONSE_ERROR),
)


def response_attributes(rec: Record) -> dict[str, AttributeValue]:
    """Everything known at the end of the flow."""
    meta = rec.meta
    out: dict[str, AttributeValue] = {}
    address, port = server(meta.get(md.UPSTREAM))
    if address:
        out["server.address"] = address
    if port:
        out["server.port"] = port
    code = status(rec)
    if code is not None:
        out["http.response.status_code"] = code
    if etype := error_type(rec, code):
        out["error.type"] = etype
    if isinstance(model := meta.get(md.MODEL), str) and meta.get(md.USAGE) is not None:
        out["gen_ai.response.model"] = model  # only once a response was parsed: else it is the request's
    if meta.get(md.FINISH_REASON):
        out["gen_ai.response.finish_reasons"] = [meta[md.FINISH_REASON]]
    if meta.get(md.RESPONSE_ID):
        out["gen_ai.response.id"] = meta[md.RESPONSE_ID]
    usage = meta.get(md.USAGE) or {}
    for key, name in USAGE_ATTRIBUTES:
        if isinstance(usage.get(key), int):
            out[name] = usage[key]
    for name, key in CORRAL_ATTRIBUTES:
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


def flow_attributes(rec: Record) -> dict[str, AttributeValue]:
    """The flow span's attributes, in one dict."""
    out = base_attributes(rec)
    out.update(request_attributes(rec))
    out.update(response_attributes(rec))
    if rec.first_ns is not None and rec.meta.get(md.STREAM):
        out["gen_ai.response.time_to_first_chunk"] = max(0.0, (rec.first_ns - rec.start_ns) / 1e9)
    if rec.request_body is not None:
        out.update(content_attributes(rec, _request_json(rec.request_body)))
    return out


def attempt_attributes(method: str, attempt: dict[str, Any], index: int) -> dict[str, AttributeValue]:
    """One upstream attempt (an HTTP client span of the conventions): where it went and how it ended."""
    out: dict[str, AttributeValue] = {"http.request.method": method}
    address, port = server(attempt.get("upstream"))
    if address:
        out["server.address"] = address
    if port:
        out["server.port"] = port
    if index:
        out["http.request.resend_count"] = index
    code = attempt.get("status")
    if isinstance(code, int):
        out["http.response.status_code"] = code
    if attempt.get("error"):
        out["error.type"] = _error_kind(str(attempt["error"]))
        out["corral.attempt.error"] = str(attempt["error"])
    elif isinstance(code, int) and code >= 400:
        out["error.type"] = str(code)
    if attempt.get("wait_ms") is not None:
        out["corral.attempt.wait_ms"] = attempt["wait_ms"]
    if attempt.get("target"):
        out["corral.attempt.target"] = str(attempt["target"])  # a model group's "<provider>/<model>"
    return out


def _error_kind(error: str) -> str:
    """error.type of an attempt that got no answer: the exception's class (``ConnectError: ...``),
    or a timeout."""
    if error.startswith("no response headers within"):
        return "timeout"
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "upstream_error"


def _request_json(raw: bytes) -> Any:
    if len(raw) > 8 * CONTENT_LIMIT:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _clip(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT]


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):  # OpenAI / Anthropic content blocks
        texts = [c.get("text") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
        return [{"type": "text", "content": t} for t in texts]
    return []


def content_attributes(rec: Record, request_json: Any) -> dict[str, AttributeValue]:
    """gen_ai.input.messages / gen_ai.output.messages as the conventions' JSON (role + parts), for
    ``capture_content = true`` only. Messages of the chat shape (OpenAI-compatible, Anthropic)."""
    out: dict[str, AttributeValue] = {}
    messages = request_json.get("messages") if isinstance(request_json, dict) else None
    if isinstance(messages, list):
        shaped = [{"role": m.get("role"), "parts": _parts(m.get("content"))} for m in messages if isinstance(m, dict)]
        out["gen_ai.input.messages"] = _clip(json.dumps(shaped, ensure_ascii=False))
    if isinstance(request_json, dict) and isinstance(request_json.get("system"), str):
        out["gen_ai.system_instructions"] = _clip(json.dumps([{"type": "text", "content": request_json["system"]}]))
    meta = rec.meta
    text = meta.get(md.TEXT)
    if isinstance(text, str) or meta.get(md.FINISH_REASON):  # a tool call only: no text part
        parts = [{"type": "text", "content": text}] if isinstance(text, str) else []
        message: dict[str, Any] = {"role": "assistant", "parts": parts}
        if meta.get(md.FINISH_REASON):
            message["finish_reason"] = meta[md.FINISH_REASON]
        out["gen_ai.output.messages"] = _clip(json.dumps([message], ensure_ascii=False))
    return out
