"""Anthropic Messages SSE -> OpenAI chat completion chunks, event by event.

Text deltas become ``delta.content``, thinking deltas ``delta.reasoning_content``, each tool_use block a
``delta.tool_calls`` entry (id and name first, then its ``input_json_delta`` pieces as argument deltas,
indexed by tool call, so the SDK's stream helpers reassemble them). Usage is exact: input and cache
counts from ``message_start``, output tokens from the final ``message_delta``; the usage chunk is sent
only when the client asked for it (``stream_options.include_usage``). An ``error`` event becomes an
SSE ``{"error": ...}`` event, which the openai SDK raises as an ``APIError``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified.anthropic_response import finish_reason, usage
from addon.unified.errors import openai_error


class AnthropicStreamTranslator:
    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.buffer = b""
        self.id = ""
        self.model: str | None = None
        self.created = int(time.time())
        self.native_usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.finish: str | None = None
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
        """Whatever the end of the native stream still owes the client."""
        tail = self.feed(b"\n\n") if self.buffer.strip() else b""
        return tail

    def _event(self, raw: bytes) -> list[bytes]:
        data = b"\n".join(line[5:].lstrip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data or self.done:
            return []
        try:
            event = json.loads(data)
        except ValueError:
            return []
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = message.get("id", ""), message.get("model")
            self.native_usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index", 0), event.get("delta") or {})
        if kind == "message_delta":
            self.native_usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self.finish = finish_reason((event.get("delta") or {}).get("stop_reason")) or "stop"
            return [self._chunk({}, finish=self.finish)]
        if kind == "message_stop":
            self.done = True
            out = []
            if self.include_usage:
                out.append(self._sse({**self._base(), "choices": [], "usage": usage(self.native_usage)}))
            return [*out, b"data: [DONE]\n\n"]
        if kind == "error":
            self.done = True
            err = event.get("error") or {}
            return [self._sse(openai_error(str(err.get("message", "")), str(err.get("type", "server_error"))))]
        return []  # ping, content_block_stop, and event types this translator does not know

    def _block_start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "tool_use":
            self.tool_index[index] = len(self.tool_index)
            call = {"index": self.tool_index[index], "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[bytes]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tool_index:
            call = {"index": self.tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish}]})

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
