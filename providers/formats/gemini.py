"""Google Gemini (Generative Language API / Vertex ``generateContent`` shape).

Streams come as SSE with ``alt=sse`` (events separated by ``\\r\\n\\r\\n``) or otherwise as one JSON
array sent piece by piece. Neither has an end marker: the last chunk carries a ``finishReason``.
Every chunk repeats a running ``usageMetadata``; only the last one is final.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from providers.formats.base import ParseResult, RequestInfo, StreamParser, Usage
from providers.formats.common import (
    JSON_CT,
    FramedStreamParser,
    as_str,
    body_result,
    dig,
    dumps,
    error_envelope,
    error_text,
    first_int,
    path_only,
    query,
    response_error,
)

_MODEL_IN_PATH = re.compile(r"/(?:tuned)?[mM]odels/([^/:]+)")

# kind -> (HTTP-ish canonical status, google.rpc code name)
_ERROR_STATUS = {
    "not_found": "NOT_FOUND",
    "rate_limited": "RESOURCE_EXHAUSTED",
    "upstream_unavailable": "UNAVAILABLE",
    "bad_request": "INVALID_ARGUMENT",
    "timeout": "DEADLINE_EXCEEDED",
    "unauthorized": "UNAUTHENTICATED",
    "forbidden": "PERMISSION_DENIED",
    "budget_exceeded": "RESOURCE_EXHAUSTED",
}


def model_from_path(path: str) -> str | None:
    m = _MODEL_IN_PATH.search(path_only(path))
    return unquote(m.group(1)) if m else None


def is_stream_path(path: str) -> bool:
    return ":streamGenerateContent" in path_only(path)


def usage_from(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    return Usage(
        input_tokens=first_int(u.get("promptTokenCount")),
        output_tokens=first_int(u.get("candidatesTokenCount")),
        cached_input_tokens=first_int(u.get("cachedContentTokenCount")),
        reasoning_tokens=first_int(u.get("thoughtsTokenCount")),
        total_tokens=first_int(u.get("totalTokenCount")),
    )


def error_from(doc: Any) -> str | None:
    err = dig(doc, "error")
    if not isinstance(err, dict):
        return None
    return error_text(err.get("status") or err.get("code"), err.get("message"))


class GeminiChunks:
    """Accumulates response objects: a whole body is one chunk (or a list of them)."""

    def __init__(self, result: ParseResult, parts: list[str], path_model: str | None) -> None:
        self.result = result
        self.parts = parts
        self.path_model = path_model

    def handle(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        r = self.result
        err = error_from(doc) if error_envelope(doc) else None
        if err:
            r.error = err
        r.model = as_str(doc.get("modelVersion")) or r.model or self.path_model
        usage = usage_from(doc.get("usageMetadata"))
        if usage is not None:
            r.usage = usage
        for cand in doc.get("candidates") or []:
            if not isinstance(cand, dict) or cand.get("index", 0) != 0:
                continue
            for part in dig(cand, "content", "parts") or []:
                # Thought summaries are not the answer; the viewer wants the answer.
                if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
                    self.parts.append(part["text"])
            reason = as_str(cand.get("finishReason"))
            if reason:
                r.finish_reason = reason
                r.complete = True
        block = as_str(dig(doc, "promptFeedback", "blockReason"))
        if block:
            # A blocked prompt gets no candidates at all; this chunk is the whole answer.
            r.finish_reason = block
            r.complete = True


class GeminiFamily:
    name = "gemini"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        # The model lives in the path; the body is not needed (and may be absent for GETs).
        return RequestInfo(model=model_from_path(path), stream=is_stream_path(path))

    def stream_kind(self, path: str, content_type: str) -> str | None:
        if "text/event-stream" in content_type.lower():
            return "sse"
        if not is_stream_path(path):
            return None
        return "sse" if "sse" in query(path).get("alt", []) else "json-array"

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = body_result(status, body)
        if doc is None:
            return result
        parts: list[str] = []
        chunks = GeminiChunks(result, parts, model_from_path(path))
        # A non-SSE stream read as one body is a list of chunks.
        for item in doc if isinstance(doc, list) else [doc]:
            chunks.handle(item)
        result.model = result.model or chunks.path_model
        result.text = "".join(parts) if parts else None
        result.error = response_error(status, result.error)
        result.complete = isinstance(doc, (dict, list))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return GeminiStreamParser(kind, model_from_path(path))

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        err = {"code": status, "message": message, "status": _ERROR_STATUS.get(kind, "INTERNAL")}
        return dumps({"error": err}), JSON_CT


class GeminiStreamParser(FramedStreamParser):
    def __init__(self, kind: str, path_model: str | None) -> None:
        super().__init__(kind)
        self.chunks = GeminiChunks(self.result, self.parts, path_model)
        self.result.model = path_model

    def on_json(self, obj: Any, event: str | None) -> None:
        self.chunks.handle(obj)

    def on_done(self) -> None:
        pass  # Gemini has no [DONE]; finishReason marks the end


FAMILY = GeminiFamily()
