"""Small helpers shared by the family handlers: defensive JSON access and a stream-parser driver
that turns framing-decoder output into calls on the family's handler, never letting an exception
escape."""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from providers.formats.base import ParseResult, RequestInfo, Usage
from providers.formats.eventstream import EventStreamDecoder
from providers.formats.jsonarray import JSONArrayDecoder
from providers.formats.ndjson import NDJSONDecoder
from providers.formats.sse import SSEDecoder, SSEEvent

JSON_CT = "application/json"
# What one flow's parser keeps at most (reassembled text characters, bytes of a pending line, event or
# frame) unless the gateway bounds it otherwise (``FramedStreamParser.bound``, [storage] body_limit).
DEFAULT_LIMIT = 4 * 1024 * 1024
ERROR_KINDS = ("not_found", "rate_limited", "upstream_unavailable", "bad_request", "timeout")


def loads(data: bytes | str) -> tuple[Any, str | None]:
    """``json.loads`` that reports instead of raising."""
    try:
        return json.loads(data), None
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"invalid JSON: {e}"
    except RecursionError:  # nesting deeper than the interpreter's stack
        return None, "invalid JSON: nested too deeply"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def dig(obj: Any, *keys: str | int) -> Any:
    """``obj[k1][k2]...`` or None when any step is missing or of the wrong type."""
    for k in keys:
        if isinstance(k, int):
            if not isinstance(obj, list) or not -len(obj) <= k < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[k] if isinstance(k, int) else obj.get(k)
    return obj


def as_int(v: Any) -> int | None:
    # bool is an int subclass; a provider never means True as a token count.
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def first_int(*values: Any) -> int | None:
    for v in values:
        i = as_int(v)
        if i is not None:
            return i
    return None


def as_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def path_only(path: str) -> str:
    return urlsplit(path).path


def query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


def block_text(blocks: Any, kind: str | None = None) -> str | None:
    """The ``text`` of the content blocks in the list ``blocks``, joined (only blocks of type ``kind``
    when given); None when there is none."""
    if not isinstance(blocks, list):
        return None
    parts = [
        b["text"] for b in blocks
        if isinstance(b, dict) and (kind is None or b.get("type") == kind) and isinstance(b.get("text"), str)
    ]
    return "".join(parts) if parts else None


def model_and_stream(body: bytes, stream_default: bool = False) -> RequestInfo:
    """A JSON request body's ``model`` and ``stream`` fields, for the families that need nothing else."""
    obj, err = request_object(body)
    if obj is None:
        return RequestInfo(parse_error=err)
    stream = obj.get("stream", stream_default) is True
    return RequestInfo(model=as_str(obj.get("model")), stream=stream, parse_error=err, params=sampling_params(obj))


SAMPLING_PARAMS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "temperature", "top_p")


def sampling_params(obj: dict[str, Any]) -> dict[str, float]:
    """The body's top-level sampling settings that are numbers (OpenAI-compatible and Anthropic names)."""
    return {k: v for k in SAMPLING_PARAMS
            if isinstance(v := obj.get(k), int | float) and not isinstance(v, bool)}


def request_object(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not body:
        return None, None  # GET, DELETE, a body-less POST: nothing to parse is not a parse error
    obj, err = loads(body)
    if err:
        return None, err
    if not isinstance(obj, dict):
        return None, "request body is not a JSON object"
    return obj, field_type_error(obj)


def field_type_error(obj: dict[str, Any]) -> str | None:
    """Wrong types for the fields every family shares: the request still goes upstream unchanged (the
    provider answers it), but the record says Corral could not read it."""
    if "model" in obj and not isinstance(obj["model"], str):
        return "request field 'model' is not a string"
    if "stream" in obj and not isinstance(obj["stream"], bool):
        return "request field 'stream' is not a boolean"
    if "messages" in obj and not isinstance(obj["messages"], list):
        return "request field 'messages' is not a list"
    return None


# Members that make a JSON body a resource (a Response, a fine-tuning job, an eval run, a video...),
# whose own "error" field describes the resource, not a failed exchange.
_RESOURCE_KEYS = frozenset({"id", "object", "data", "choices", "candidates", "output", "model", "usage", "created",
                            "created_at"})


def error_envelope(doc: Any) -> bool:
    """True when a JSON body *is* a provider error (``{"error": {...}}``, Anthropic's
    ``{"type": "error", ...}``), as opposed to a resource that carries an ``error`` field by design
    (``"error": null``, a failed job's error). Only an envelope makes a 2xx exchange a failure."""
    if not isinstance(doc, dict) or not doc.get("error"):
        return False
    if doc.get("type") == "error":
        return True
    return not (_RESOURCE_KEYS & doc.keys())


def error_text(kind: Any, message: Any) -> str:
    """"<type>: <message>" as the gateway reports provider errors."""
    msg = message if isinstance(message, str) else (json.dumps(message) if message is not None else "")
    if kind is None or kind == "":
        return msg or "unknown error"
    return f"{kind}: {msg}" if msg else str(kind)


def response_error(status: int, found: str | None, message: Any = None) -> str | None:
    """The error a response carries: the one found in its body, else for an error status
    "<status>: <message>" (the status alone without a message)."""
    if found is not None or status < 400:
        return found
    return error_text(status, message)


def http_error_fallback(status: int, body: bytes) -> str:
    snippet = body[:200].decode("utf-8", errors="replace").strip()
    return f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"


def body_result(status: int, body: bytes) -> tuple[Any, ParseResult]:
    """Parse a whole JSON body into (document, result-with-parse/HTTP-error filled)."""
    result = ParseResult()
    doc, err = loads(body)
    if err:
        result.parse_error = err
        if status >= 400:
            result.error = http_error_fallback(status, body)
        return None, result
    result.complete = True
    return doc, result


def object_result(status: int, body: bytes) -> tuple[dict[str, Any] | None, ParseResult]:
    """``body_result`` for families whose whole-body answer is one JSON object: any other JSON value
    is a parse error (the bytes still pass through unchanged; the record says so)."""
    doc, result = body_result(status, body)
    if isinstance(doc, dict):
        return doc, result
    if doc is not None:
        result.parse_error, result.complete = "response body is not a JSON object", False
    return None, result


def clip_marker(limit: int) -> str:
    return f"\n[corral: clipped at {limit} characters]"


def clip_text(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, with a marker saying so; unchanged when it fits."""
    if text is None or len(text) <= limit or text.endswith(clip_marker(limit)):
        return text
    return text[:limit] + clip_marker(limit)


class TextParts(list[str]):
    """The reassembled text's pieces, at most ``limit`` characters in all: an endless stream must not
    grow memory. The rest is dropped and ``text()`` ends with a marker."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0
        self.clipped = False

    def append(self, text: str) -> None:
        if self.clipped:
            return
        room = self.limit - self.size
        if len(text) > room:
            text, self.clipped = text[:room], True
        if text:
            super().append(text)
            self.size += len(text)

    def text(self) -> str | None:
        if not self and not self.clipped:
            return None
        return "".join(self) + (clip_marker(self.limit) if self.clipped else "")


class Decoder(Protocol):
    error: str | None
    max_buffer: int

    def feed(self, chunk: bytes) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


def make_decoder(kind: str) -> Decoder:
    if kind == "sse":
        return SSEDecoder()
    if kind == "ndjson":
        return NDJSONDecoder()
    if kind == "json-array":
        return JSONArrayDecoder()
    if kind == "aws-eventstream":
        return EventStreamDecoder()
    raise KeyError(f"unknown stream kind {kind!r}")


class FramedStreamParser:
    """Drives a framing decoder and hands each frame to ``on_frame``. Subclasses keep their state
    in ``self.result`` / ``self.parts`` and may override ``on_json``, ``on_done`` or ``on_frame``.
    Any exception from a handler becomes ``parse_error``: one odd event must not lose the usage
    of a whole stream, nor break the proxy."""

    def __init__(self, kind: str) -> None:
        try:
            self.decoder: Decoder | None = make_decoder(kind)
        except KeyError as e:
            self.decoder = None
            self._init_error: str | None = str(e)
        else:
            self._init_error = None
        self.result = ParseResult()
        self.parts = TextParts()
        self._final: ParseResult | None = None

    def bound(self, limit: int) -> None:
        """Keep at most ``limit`` characters of text and ``limit`` bytes in any framing buffer."""
        self.parts.limit = limit
        if self.decoder is not None:
            self.decoder.max_buffer = limit

    def feed(self, chunk: bytes) -> None:
        if self.decoder is None or self._final is not None:
            return
        try:
            frames = self.decoder.feed(chunk)
        except Exception as e:  # a decoder bug must not break the proxy
            self._parse_error(f"stream decoder failed: {e!r}")
            self.decoder = None
            return
        self._handle_all(frames)

    def finish(self) -> ParseResult:
        if self._final is not None:
            return self._final
        if self.decoder is not None:
            try:
                self._handle_all(self.decoder.finish())
            except Exception as e:
                self._parse_error(f"stream decoder failed: {e!r}")
            if self.decoder.error:
                self._parse_error(self.decoder.error)
        elif self._init_error:
            self._parse_error(self._init_error)
        r = self.result
        if self.parts or self.parts.clipped:
            r.text = self.parts.text()
        self._final = r
        return r

    def _handle_all(self, frames: list[Any]) -> None:
        for frame in frames:
            try:
                self.on_frame(frame)
            except Exception as e:
                self._parse_error(f"unexpected event shape: {e!r}")

    def on_frame(self, frame: Any) -> None:
        if isinstance(frame, SSEEvent):
            if frame.data.strip() == "[DONE]":
                self.on_done()
                return
            text, event = frame.data, frame.event
        else:
            text, event = frame, None
        if not text.strip():
            return  # an empty data: line is a keep-alive, not a broken event
        obj, err = loads(text)
        if err:
            self._parse_error(err)
            return
        self.on_json(obj, event)

    def on_json(self, obj: Any, event: str | None) -> None:
        pass

    def on_done(self) -> None:
        self.result.complete = True

    def _parse_error(self, message: str) -> None:
        # Keep the first one: later errors are usually consequences of it.
        if self.result.parse_error is None:
            self.result.parse_error = message

    def set_usage(self, usage: Usage) -> None:
        self.result.usage = usage
