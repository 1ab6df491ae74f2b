"""Cohere: v2 chat (JSON, SSE with kebab-case events), v1 chat (NDJSON stream), embed.

Cohere bills by ``billed_units``; ``tokens`` are raw counts including template tokens, used only
when no billed units are reported. Responses do not echo the model: it comes from the request."""

from __future__ import annotations

from typing import Any

from providers.formats.base import ParseResult, RequestInfo, StreamParser, Usage
from providers.formats.common import (
    JSON_CT,
    FramedStreamParser,
    as_str,
    block_text,
    dig,
    dumps,
    error_text,
    first_int,
    model_and_stream,
    object_result,
)

_V1_ERROR_FINISH = ("ERROR", "ERROR_TOXIC", "ERROR_LIMIT", "USER_CANCEL")


def usage_from(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    counts = u.get("billed_units")
    if not isinstance(counts, dict):
        counts = u.get("tokens")
    if not isinstance(counts, dict):
        return None
    return Usage(
        input_tokens=first_int(counts.get("input_tokens")),
        output_tokens=first_int(counts.get("output_tokens")),
    )


class CohereFamily:
    name = "cohere"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        return model_and_stream(body)

    def stream_kind(self, path: str, content_type: str) -> str | None:
        ct = content_type.lower()
        if "text/event-stream" in ct:
            return "sse"
        if "stream+json" in ct or "ndjson" in ct:
            return "ndjson"
        return None

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = object_result(status, body)
        if doc is None:
            return result
        if status >= 400:
            result.error = error_text(None, doc.get("message")) if doc.get("message") else error_text(status, None)
        usage = usage_from(doc.get("usage")) or usage_from(doc.get("meta"))  # v2, then v1/embed
        if usage is not None:
            result.usage = usage
        result.model = as_str(doc.get("model"))
        text = block_text(dig(doc, "message", "content"))
        result.text = text if text is not None else as_str(doc.get("text"))
        result.finish_reason = as_str(doc.get("finish_reason"))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return CohereStreamParser(kind)

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        return dumps({"message": message}), JSON_CT


class CohereStreamParser(FramedStreamParser):
    def on_json(self, obj: Any, event: str | None) -> None:
        if not isinstance(obj, dict):
            return
        etype = obj.get("type") or obj.get("event_type") or event
        if etype == "content-delta":
            text = dig(obj, "delta", "message", "content", "text")
            if isinstance(text, str):
                self.parts.append(text)
        elif etype == "text-generation" and isinstance(obj.get("text"), str):
            self.parts.append(obj["text"])
        elif etype == "message-end":
            self._end(dig(obj, "delta", "usage"), dig(obj, "delta", "finish_reason"))
        elif etype == "stream-end":
            self._end(dig(obj, "response", "meta"), obj.get("finish_reason"))
        elif etype in ("error", "stream-error"):
            self.result.error = error_text(None, obj.get("message") or obj.get("text") or "stream error")

    def _end(self, usage_obj: Any, finish_reason: Any) -> None:
        r = self.result
        usage = usage_from(usage_obj)
        if usage is not None:
            self.set_usage(usage)
        r.finish_reason = as_str(finish_reason)
        if r.finish_reason in _V1_ERROR_FINISH and r.error is None:
            r.error = f"finish_reason {r.finish_reason}"
        r.complete = True


FAMILY = CohereFamily()
