"""Anthropic Messages API wire format (also the inner format of Bedrock invoke streams)."""

from __future__ import annotations

from typing import Any

from providers.formats.base import ParseResult, RequestInfo, StreamParser, Usage
from providers.formats.common import (
    JSON_CT,
    FramedStreamParser,
    as_int,
    as_str,
    block_text,
    dig,
    dumps,
    error_envelope,
    error_text,
    model_and_stream,
    object_result,
    response_error,
)

_ERROR_TYPES = {
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "upstream_unavailable": "api_error",
    "bad_request": "invalid_request_error",
    "timeout": "api_error",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "budget_exceeded": "rate_limit_error",
}


def apply_usage(usage: Usage, u: Any) -> None:
    """Overwrite the counters present in an Anthropic usage object. Anthropic's counts are
    cumulative (message_delta repeats and finalizes message_start's), so later values win."""
    if not isinstance(u, dict):
        return
    for key, attr in (
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cache_read_input_tokens", "cached_input_tokens"),
        ("cache_creation_input_tokens", "cache_creation_input_tokens"),
    ):
        v = as_int(u.get(key))
        if v is not None:
            setattr(usage, attr, v)


def error_from(doc: Any) -> str | None:
    err = dig(doc, "error")
    if isinstance(err, dict):
        return error_text(err.get("type"), err.get("message"))
    if isinstance(err, str):
        return err
    return None


class AnthropicFamily:
    name = "anthropic"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        return model_and_stream(body)

    def stream_kind(self, path: str, content_type: str) -> str | None:
        return "sse" if "text/event-stream" in content_type.lower() else None

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = object_result(status, body)
        if doc is None:
            return result
        found = error_from(doc) if status >= 400 or error_envelope(doc) else None
        result.error = response_error(status, found, doc.get("message"))
        result.model = as_str(doc.get("model"))
        result.response_id = as_str(doc.get("id"))
        apply_usage(result.usage, doc.get("usage"))
        result.text = block_text(doc.get("content"), "text")
        result.finish_reason = as_str(doc.get("stop_reason"))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return AnthropicStreamParser(kind)

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        err = {"type": _ERROR_TYPES.get(kind, "api_error"), "message": message}
        return dumps({"type": "error", "error": err}), JSON_CT


class AnthropicEvents:
    """State machine over Anthropic stream events, shared with Bedrock's invoke stream."""

    def __init__(self, result: ParseResult, parts: list[str]) -> None:
        self.result = result
        self.parts = parts

    def handle(self, obj: Any, event: str | None) -> None:
        if not isinstance(obj, dict):
            return
        etype = obj.get("type") if isinstance(obj.get("type"), str) else event
        r = self.result
        if etype == "message_start":
            msg = obj.get("message")
            r.model = as_str(dig(msg, "model")) or r.model
            r.response_id = as_str(dig(msg, "id")) or r.response_id
            apply_usage(r.usage, dig(msg, "usage"))
        elif etype == "content_block_delta":
            text = dig(obj, "delta", "text")
            if dig(obj, "delta", "type") == "text_delta" and isinstance(text, str):
                self.parts.append(text)
        elif etype == "message_delta":
            apply_usage(r.usage, obj.get("usage"))
            r.finish_reason = as_str(dig(obj, "delta", "stop_reason")) or r.finish_reason
        elif etype == "message_stop":
            r.complete = True
        elif etype == "error":
            r.error = error_from(obj) or "error"


class AnthropicStreamParser(FramedStreamParser):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.events = AnthropicEvents(self.result, self.parts)

    def on_json(self, obj: Any, event: str | None) -> None:
        self.events.handle(obj, event)

    def on_done(self) -> None:
        pass  # not an Anthropic end marker; message_stop is


FAMILY = AnthropicFamily()
