"""OpenAI-compatible wire format: Chat Completions, Responses, Embeddings, legacy Completions,
and the many vendors that copy them (Azure, Groq, Mistral, DeepSeek, OpenRouter, Together,
Ollama's /v1)."""

from __future__ import annotations

import re
from typing import Any

from providers.formats.base import ParseResult, RequestInfo, StreamParser, Usage
from providers.formats.common import (
    JSON_CT,
    FramedStreamParser,
    as_str,
    dig,
    dumps,
    error_envelope,
    error_text,
    first_int,
    object_result,
    path_only,
    request_object,
    response_error,
    sampling_params,
)

# Azure puts the deployment (its model alias) in the path and may omit "model" from the body.
_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")

# kind -> (type, code), following what OpenAI itself sends for these statuses.
_ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    # Corral answers not_found only for a URL it has no route for: SDKs show the code, so it says route.
    "not_found": ("invalid_request_error", "route_not_found"),
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "upstream_unavailable": ("server_error", "service_unavailable"),
    "bad_request": ("invalid_request_error", None),
    "timeout": ("server_error", "timeout"),
    "unauthorized": ("invalid_request_error", "invalid_api_key"),
    "forbidden": ("invalid_request_error", "forbidden"),
    "budget_exceeded": ("insufficient_quota", "budget_exceeded"),
}


def usage_from(u: Any) -> Usage | None:
    """Chat/Completions (prompt_/completion_), Responses (input_/output_) and DeepSeek names."""
    if not isinstance(u, dict):
        return None
    return Usage(
        input_tokens=first_int(u.get("prompt_tokens"), u.get("input_tokens")),
        output_tokens=first_int(u.get("completion_tokens"), u.get("output_tokens")),
        cached_input_tokens=first_int(
            dig(u, "prompt_tokens_details", "cached_tokens"),
            dig(u, "input_tokens_details", "cached_tokens"),
            u.get("prompt_cache_hit_tokens"),
        ),
        reasoning_tokens=first_int(
            dig(u, "completion_tokens_details", "reasoning_tokens"),
            dig(u, "output_tokens_details", "reasoning_tokens"),
        ),
        total_tokens=first_int(u.get("total_tokens")),
    )


def error_from(err: Any) -> str | None:
    """The ``error`` member of a body or chunk as "type: message" (type falls back to code)."""
    if isinstance(err, str):
        return err or None
    if not isinstance(err, dict):
        return None
    kind = err.get("type") or err.get("code")
    return error_text(kind, err.get("message"))


class OpenAIFamily:
    name = "openai"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        info = RequestInfo()
        m = _AZURE_DEPLOYMENT.search(path_only(path))
        obj, err = request_object(body)
        if obj is None:
            info.parse_error = err
            info.model = m.group(1) if m else None
            return info
        info.parse_error = err
        info.model = as_str(obj.get("model")) or (m.group(1) if m else None)
        info.stream = obj.get("stream") is True
        info.params = sampling_params(obj)
        if info.stream:
            info.include_usage = dig(obj, "stream_options", "include_usage") is True
        return info

    def stream_kind(self, path: str, content_type: str) -> str | None:
        return "sse" if "text/event-stream" in content_type.lower() else None

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = object_result(status, body)
        if doc is None:
            return result
        found = error_from(doc.get("error")) if status >= 400 or error_envelope(doc) else None
        result.error = response_error(status, found, doc.get("message") or doc.get("detail"))
        result.model = as_str(doc.get("model"))
        result.response_id = as_str(doc.get("id"))
        usage = usage_from(doc.get("usage")) or usage_from(dig(doc, "x_groq", "usage"))
        if usage is not None:
            result.usage = usage
        if doc.get("object") == "response" or "output" in doc:
            result.text = _responses_text(doc.get("output"))
            result.finish_reason = as_str(doc.get("status"))
        else:
            choice = dig(doc, "choices", 0)
            text = dig(choice, "message", "content")
            if not isinstance(text, str):
                text = dig(choice, "text")  # legacy completions
            result.text = text if isinstance(text, str) else None
            result.finish_reason = as_str(dig(choice, "finish_reason"))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return OpenAIStreamParser(kind)

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        etype, code = _ERROR_TYPES.get(kind, ("server_error", None))
        err = {"message": message, "type": etype, "param": None, "code": code}
        return dumps({"error": err}), JSON_CT


def _responses_text(output: Any) -> str | None:
    if not isinstance(output, list):
        return None
    parts = [
        c["text"]
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
        for c in (item.get("content") or [])
        if isinstance(c, dict) and c.get("type") == "output_text" and isinstance(c.get("text"), str)
    ]
    return "".join(parts) if parts else None


class OpenAIStreamParser(FramedStreamParser):
    """Chat Completions chunks end with ``data: [DONE]``; Responses events end with
    ``response.completed`` (or ``response.failed`` / ``response.incomplete``)."""

    def on_json(self, obj: Any, event: str | None) -> None:
        if not isinstance(obj, dict):
            return
        etype = obj.get("type")
        if isinstance(etype, str) and (etype.startswith("response.") or etype == "error"):
            self._responses_event(etype, obj)
            return
        r = self.result
        err = error_from(obj.get("error"))
        if err:
            r.error = err
        r.model = as_str(obj.get("model")) or r.model  # Azure's first chunk has model ""
        r.response_id = r.response_id or as_str(obj.get("id"))
        usage = usage_from(obj.get("usage")) or usage_from(dig(obj, "x_groq", "usage"))
        if usage is not None:
            self.set_usage(usage)
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            text = dig(choice, "delta", "content")
            if not isinstance(text, str):
                text = choice.get("text")  # legacy completions stream
            if isinstance(text, str) and text:
                self.parts.append(text)
            r.finish_reason = as_str(choice.get("finish_reason")) or r.finish_reason

    def _responses_event(self, etype: str, obj: dict[str, Any]) -> None:
        r = self.result
        resp = obj.get("response")
        if isinstance(resp, dict):
            r.model = as_str(resp.get("model")) or r.model
            r.response_id = r.response_id or as_str(resp.get("id"))
            usage = usage_from(resp.get("usage"))
            if usage is not None:
                self.set_usage(usage)
        if etype == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            self.parts.append(obj["delta"])
        elif etype in ("response.completed", "response.incomplete", "response.failed"):
            r.complete = True
            r.finish_reason = as_str(dig(resp, "status")) or etype.removeprefix("response.")
            if etype == "response.failed":
                r.error = error_from(dig(resp, "error")) or "response.failed"
        elif etype == "error":
            r.error = error_text(obj.get("code") or obj.get("type"), obj.get("message"))


FAMILY = OpenAIFamily()
