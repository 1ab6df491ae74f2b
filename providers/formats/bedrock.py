"""AWS Bedrock runtime: Converse (JSON), ConverseStream and InvokeModelWithResponseStream (both
``application/vnd.amazon.eventstream``), and InvokeModel with the vendor's own JSON body.

The model is not echoed by Converse: it is the URL-encoded id in ``/model/<id>/<action>``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote

from providers.formats import anthropic
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
    loads,
    object_result,
    path_only,
)
from providers.formats.eventstream import Message

_MODEL_IN_PATH = re.compile(r"/model/([^/]+)/")
_STREAM_ACTIONS = ("/converse-stream", "/invoke-with-response-stream")


def model_from_path(path: str) -> str | None:
    m = _MODEL_IN_PATH.search(path_only(path))
    return unquote(m.group(1)) if m else None


def converse_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    return Usage(
        input_tokens=first_int(u.get("inputTokens")),
        output_tokens=first_int(u.get("outputTokens")),
        cached_input_tokens=first_int(u.get("cacheReadInputTokens")),
        cache_creation_input_tokens=first_int(u.get("cacheWriteInputTokens")),
        total_tokens=first_int(u.get("totalTokens")),
    )


def apply_invocation_metrics(usage: Usage, doc: Any) -> bool:
    """Bedrock appends ``amazon-bedrock-invocationMetrics`` to the last chunk of every invoke
    stream, whatever the model vendor: the one count that is always there."""
    m = dig(doc, "amazon-bedrock-invocationMetrics")
    if not isinstance(m, dict):
        return False
    usage.input_tokens = first_int(m.get("inputTokenCount"), usage.input_tokens)
    usage.output_tokens = first_int(m.get("outputTokenCount"), usage.output_tokens)
    usage.cached_input_tokens = first_int(m.get("cacheReadInputTokenCount"), usage.cached_input_tokens)
    usage.cache_creation_input_tokens = first_int(
        m.get("cacheWriteInputTokenCount"), usage.cache_creation_input_tokens
    )
    return True


class BedrockFamily:
    name = "bedrock"

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        # InvokeModel bodies are vendor-specific (and may not be JSON); nothing needed from them.
        p = path_only(path).rstrip("/")
        return RequestInfo(model=model_from_path(path), stream=p.endswith(_STREAM_ACTIONS))

    def stream_kind(self, path: str, content_type: str) -> str | None:
        if "amazon.eventstream" in content_type.lower():
            return "aws-eventstream"
        return None

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        doc, result = object_result(status, body)
        if doc is None:
            return result
        if status >= 400:
            msg = doc.get("message") or doc.get("Message")
            result.error = error_text(None, msg) if msg else error_text(status, None)
        path_model = model_from_path(path)
        if doc.get("type") == "message" or doc.get("type") == "error":
            # InvokeModel on an Anthropic model: the body is a Messages API response.
            inner = anthropic.FAMILY.parse_response(path, status, body)
            inner.model = inner.model or path_model
            return inner
        result.model = as_str(doc.get("model")) or path_model
        usage = converse_usage(doc.get("usage"))
        if usage is None:
            # InvokeModel on Meta/Mistral-style models.
            usage = Usage(
                input_tokens=first_int(doc.get("prompt_token_count")),
                output_tokens=first_int(doc.get("generation_token_count")),
            )
        result.usage = usage
        result.text = block_text(dig(doc, "output", "message", "content"))
        result.finish_reason = as_str(doc.get("stopReason")) or as_str(doc.get("stop_reason"))
        return result

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        return BedrockStreamParser(kind, model_from_path(path))

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        return dumps({"message": message}), JSON_CT


class BedrockStreamParser(FramedStreamParser):
    def __init__(self, kind: str, path_model: str | None) -> None:
        super().__init__(kind)
        self.result.model = path_model
        self._path_model = path_model
        # Invoke streams of Anthropic models carry Messages API events inside each chunk.
        self.inner = anthropic.AnthropicEvents(self.result, self.parts)

    def on_frame(self, frame: Any) -> None:
        if not isinstance(frame, Message):
            return
        mtype = frame.header(":message-type") or "event"
        if mtype == "exception":
            doc, _ = loads(frame.payload)
            msg = dig(doc, "message") or dig(doc, "Message") or frame.payload[:200].decode("utf-8", "replace")
            self.result.error = error_text(frame.header(":exception-type") or "exception", msg)
            return
        if mtype == "error":
            self.result.error = error_text(frame.header(":error-code"), frame.header(":error-message"))
            return
        doc, err = loads(frame.payload)
        if err:
            self._parse_error(err)
            return
        self._event(frame.header(":event-type"), doc)

    def _event(self, etype: str | None, doc: Any) -> None:
        r = self.result
        if etype == "chunk":
            self._chunk(doc)
        elif etype == "contentBlockDelta":
            text = dig(doc, "delta", "text")
            if isinstance(text, str):
                self.parts.append(text)
        elif etype == "messageStop":
            r.finish_reason = as_str(dig(doc, "stopReason"))
            r.complete = True
        elif etype == "metadata":
            usage = converse_usage(dig(doc, "usage"))
            if usage is not None:
                self.set_usage(usage)
            r.complete = True

    def _chunk(self, doc: Any) -> None:
        raw = dig(doc, "bytes")
        if not isinstance(raw, str):
            self._parse_error("invoke-stream chunk without base64 'bytes'")
            return
        try:
            inner_bytes = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            self._parse_error(f"bad base64 in invoke-stream chunk: {e}")
            return
        inner, err = loads(inner_bytes)
        if err:
            self._parse_error(err)
            return
        if not isinstance(inner, dict):
            return
        self.inner.handle(inner, None)
        if apply_invocation_metrics(self.result.usage, inner):
            self.result.complete = True
        # Non-Anthropic invoke streams (Llama, Mistral, Titan) put text and stop reason flat.
        for key in ("generation", "outputText"):
            if isinstance(inner.get(key), str):
                self.parts.append(inner[key])
        self.result.finish_reason = as_str(inner.get("stop_reason")) or self.result.finish_reason


FAMILY = BedrockFamily()
