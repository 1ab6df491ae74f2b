"""Cohere v2 chat SSE -> OpenAI chat completion chunks, event by event.

``content-delta`` text becomes ``delta.content`` (thinking ``delta.reasoning_content``),
``tool-plan-delta`` ``delta.content``; ``tool-call-start`` a ``delta.tool_calls`` entry (id and name
first), ``tool-call-delta`` its argument pieces, indexed by tool call, so the SDK's stream helpers
reassemble them. ``message-end`` carries the finish reason and the usage the Meter prices (billed units),
sent only when the client asked for it; Cohere's own ``[DONE]`` is replaced by ours. An error event
becomes an SSE ``{"error": ...}`` event, which the openai SDK raises as an ``APIError``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified.cohere_response import finish_reason, usage
from addon.unified.errors import openai_error


class CohereStreamTranslator:
    def __init__(self, include_usage: bool, model: str | None = None) -> None:
        self.include_usage = include_usage
        self.buffer = b""
        self.id = ""
        self.model = model
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}  # Cohere's tool call index -> ours (in order of appearance)
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            out += self._event(raw)
        return b"".join(out)

    def finish_stream(self) -> bytes:
        return self.feed(b"\n\n") if self.buffer.strip() else b""

    def _event(self, raw: bytes) -> list[bytes]:
        data = b"\n".join(line[5:].lstrip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data or self.done or data == b"[DONE]":
            return []
        try:
            event = json.loads(data)
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        message = ((event.get("delta") or {}).get("message")) or {}
        if kind == "message-start":
            self.id = event.get("id") or ""
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content-start", "content-delta"):
            content = message.get("content") or {}
            if content.get("text"):
                return [self._chunk({"content": content["text"]})]
            if content.get("thinking"):
                return [self._chunk({"reasoning_content": content["thinking"]})]
            return []
        if kind == "tool-plan-delta" and message.get("tool_plan"):
            return [self._chunk({"content": message["tool_plan"]})]
        if kind == "tool-call-start":
            return self._call_start(event.get("index", 0), message.get("tool_calls") or {})
        if kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            index = self.tool_index.get(event.get("index", 0))
            if not arguments or index is None:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})]
        if kind == "message-end":
            return self._end(event.get("delta") or {})
        if kind == "error":
            self.done = True
            return [self._sse(openai_error(str(event.get("message") or "stream error"), "server_error"))]
        return []  # content-end, tool-call-end, citations, debug, and types this translator does not know

    def _call_start(self, index: int, call: dict[str, Any]) -> list[bytes]:
        self.tool_index[index] = len(self.tool_index)
        fn = call.get("function") or {}
        out = {"index": self.tool_index[index], "id": call.get("id"), "type": "function",
               "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or ""}}
        return [self._chunk({"tool_calls": [out]})]

    def _end(self, delta: dict[str, Any]) -> list[bytes]:
        self.done = True
        out = [self._chunk({}, finish=finish_reason(delta.get("finish_reason")) or "stop")]
        counted = usage(delta.get("usage") or {})
        if self.include_usage and counted is not None:
            out.append(self._sse({**self._base(), "choices": [], "usage": counted}))
        return [*out, b"data: [DONE]\n\n"]

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish}]})

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
