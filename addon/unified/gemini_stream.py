"""Gemini ``streamGenerateContent?alt=sse`` -> OpenAI chat completion chunks, event by event.

Each event is a whole ``GenerateContentResponse``: text parts become ``delta.content``, thought parts
``delta.reasoning_content``. Gemini sends a function call whole, in one part: it becomes one
``delta.tool_calls`` entry with its index, id, name and all its arguments, which the SDK's stream
helpers reassemble like any other. Every event repeats a running ``usageMetadata``; the last one is final,
so the usage chunk (only when the client asked, ``stream_options.include_usage``) and ``[DONE]`` go out
when the native stream ends after a ``finishReason``. An ``{"error": ...}`` event becomes an SSE error
event, which the openai SDK raises as an ``APIError``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified.errors import openai_error
from addon.unified.gemini_response import ERROR_TYPES, finish_reason, first_candidate, tool_call, usage


class GeminiStreamTranslator:
    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.buffer = b""
        self.id = ""
        self.model: str | None = None
        self.created = int(time.time())
        self.native_usage: dict[str, Any] = {}
        self.calls = 0  # tool calls sent so far: the next one's index
        self.started = False
        self.finished = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the complete events in ``data`` (and what was buffered before)."""
        self.buffer += data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            out += self._event(raw)
        return b"".join(out)

    def finish_stream(self) -> bytes:
        """The end of the native stream: its last event, then the usage chunk and ``[DONE]`` when the
        answer finished (a stream cut short ends without them, as the upstream's did)."""
        out = self.feed(b"\n\n") if self.buffer.strip() else b""
        if self.done or not self.finished:
            return out
        self.done = True
        if self.include_usage:
            out += self._sse({**self._base(), "choices": [], "usage": usage(self.native_usage)})
        return out + b"data: [DONE]\n\n"

    def _event(self, raw: bytes) -> list[bytes]:
        data = b"\n".join(line[5:].lstrip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data or self.done:
            return []
        try:
            doc = json.loads(data)
        except ValueError:
            return []
        if not isinstance(doc, dict):
            return []
        if isinstance(doc.get("error"), dict):
            self.done = True
            err = doc["error"]
            rpc = str(err.get("status") or "")
            return [self._sse(openai_error(str(err.get("message", "")), ERROR_TYPES.get(rpc, "server_error"),
                                           code=rpc or None))]
        self.id = self.id or str(doc.get("responseId") or "")
        self.model = self.model or doc.get("modelVersion")
        if isinstance(doc.get("usageMetadata"), dict):
            self.native_usage = doc["usageMetadata"]
        out = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        cand = first_candidate(doc)
        for part in (cand.get("content") or {}).get("parts") or []:
            out += self._part(part)
        blocked = (doc.get("promptFeedback") or {}).get("blockReason")
        reason = finish_reason(cand.get("finishReason"), self.calls > 0) or ("content_filter" if blocked else None)
        if reason is not None and not self.finished:
            self.finished = True
            out.append(self._chunk({}, finish=reason))
        return out

    def _part(self, part: dict[str, Any]) -> list[bytes]:
        if "functionCall" in part:
            call = {"index": self.calls, **tool_call(part, self.calls, self.id)}
            self.calls += 1
            return [self._chunk({"tool_calls": [call]})]
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return []  # an empty part (it may carry only a thought signature)
        return [self._chunk({"reasoning_content" if part.get("thought") else "content": text})]

    def _base(self) -> dict[str, Any]:
        return {"id": f"chatcmpl-{self.id}", "object": "chat.completion.chunk", "created": self.created,
                "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish}]})

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
