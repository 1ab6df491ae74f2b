"""Ollama's native API (``/api/chat``, ``/api/generate``): NDJSON streams ending with a
``"done": true`` line that carries the counts. Ollama's ``/v1`` is OpenAI-compatible and is routed
to the openai family instead."""

from __future__ import annotations

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
    model_and_stream,
    object_result,
    path_only,
    response_error,
)

# Endpoints that stream unless the request says "stream": false.
_STREAM_BY_DEFAULT = ("/api/chat", "/api/generate", "/api/pull", "/api/push", "/api/create")


def usage_from(doc: dict[str, Any]) -> Usage:
    i, o = first_int(doc.get("prompt_eval_count")), first_int(doc.get("eval_count"))
    return Usage(input_tokens=i, output_tokens=o)


def chunk_text(doc: dict[str, Any]) -> str | None:
    text = dig(doc, "message", "content")
    if not isinstance(text, str):
        text = doc.get("response")  # /api/generate
    return text if isinstance(text, str) else None


def error_from(doc: Any) -> str | None:
    err = dig(doc, "error")
    if isinstance(err, str):
        return err or "error"
    if isinstance(err, dict):
        return error_text(err.get("type"), err.get("message"))
    return None


class OllamaFamily:
    name = "ollama"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        return model_and_stream(body, stream_default=path_only(path).rstrip("/").endswith(_STREAM_BY_DEFAULT))

    def stream_kind(self, path: str, content_type: str) -> str | None:
        ct = content_type.lower()
        if "ndjson" in ct or "stream+json" in ct:
            return "ndjson"
        return None

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = object_result(status, body)
        if doc is None:
            return result
        result.error = response_error(status, error_from(doc) if status >= 400 or error_envelope(doc) else None)
        result.model = as_str(doc.get("model"))
        result.usage = usage_from(doc)
        result.text = chunk_text(doc)
        result.finish_reason = as_str(doc.get("done_reason"))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return OllamaStreamParser(kind)

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        return dumps({"error": message}), JSON_CT


class OllamaStreamParser(FramedStreamParser):
    def on_json(self, obj: Any, event: str | None) -> None:
        if not isinstance(obj, dict):
            return
        r = self.result
        err = error_from(obj)
        if err:
            r.error = err
        r.model = as_str(obj.get("model")) or r.model
        text = chunk_text(obj)
        if text:
            self.parts.append(text)
        if obj.get("done") is True:
            self.set_usage(usage_from(obj))
            r.finish_reason = as_str(obj.get("done_reason"))
            r.complete = True


FAMILY = OllamaFamily()
