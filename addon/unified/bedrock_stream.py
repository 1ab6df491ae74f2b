"""Bedrock ConverseStream (AWS binary event stream) -> OpenAI chat completion chunks, event by event.

``contentBlockDelta`` text becomes ``delta.content``, ``reasoningContent`` text
``delta.reasoning_content``; each ``contentBlockStart`` with a ``toolUse`` a ``delta.tool_calls`` entry
(id and name first, then its ``toolUse.input`` pieces as argument deltas, indexed by tool call, so the
SDK's stream helpers reassemble them). ``messageStop`` carries the finish reason and the closing
``metadata`` event the exact usage, sent only when the client asked for it. An exception frame
(``throttlingException``, ``modelStreamErrorException``, ...) becomes an SSE ``{"error": ...}`` event,
which the openai SDK raises as an ``APIError``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified.bedrock_response import completion_id, finish_reason, usage
from addon.unified.errors import openai_error
from providers.formats.eventstream import EventStreamDecoder, Message

_EXCEPTION_KINDS = {"throttlingException": "rate_limit_error", "validationException": "invalid_request_error"}


class BedrockStreamTranslator:
    def __init__(self, include_usage: bool, model: str | None = None) -> None:
        self.include_usage = include_usage
        self.decoder = EventStreamDecoder()
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.stopped = False  # messageStop seen: only the metadata (usage) is still owed
        self.done = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for message in self.decoder.feed(data):
            if not self.done:
                out += self._frame(message)
        if self.decoder.error is not None and not self.done:
            self.done = True
            out.append(self._sse(openai_error(f"corral: the provider's event stream broke: {self.decoder.error}",
                                              "server_error")))
        return b"".join(out)

    def finish_stream(self) -> bytes:
        if self.done or not self.stopped:
            return b""  # complete, or cut short: no [DONE] for an answer that did not finish
        self.done = True
        return b"data: [DONE]\n\n"  # stopped without a metadata event: usage unknown, so no usage chunk

    def _frame(self, message: Message) -> list[bytes]:
        kind = message.header(":message-type") or "event"
        if kind in ("exception", "error"):
            self.done = True
            name = message.header(":exception-type") or message.header(":error-code") or "error"
            try:
                text = str((json.loads(message.payload) or {}).get("message", ""))
            except (ValueError, AttributeError):
                text = message.payload[:500].decode("utf-8", "replace")
            text = text or message.header(":error-message") or name
            return [self._sse(openai_error(text, _EXCEPTION_KINDS.get(name, "server_error"), code=name))]
        try:
            event = json.loads(message.payload)
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        etype = message.header(":event-type")
        if etype == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if etype == "contentBlockStart":
            return self._block_start(event.get("contentBlockIndex", 0), event.get("start") or {})
        if etype == "contentBlockDelta":
            return self._block_delta(event.get("contentBlockIndex", 0), event.get("delta") or {})
        if etype == "messageStop":
            self.stopped = True
            return [self._chunk({}, finish=finish_reason(event.get("stopReason")) or "stop")]
        if etype == "metadata":
            self.done = True
            out = []
            if self.include_usage:
                out.append(self._sse({**self._base(), "choices": [], "usage": usage(event.get("usage") or {})}))
            return [*out, b"data: [DONE]\n\n"]
        return []  # contentBlockStop, and event types this translator does not know

    def _block_start(self, index: int, start: dict[str, Any]) -> list[bytes]:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return []
        self.tool_index[index] = len(self.tool_index)
        call = {"index": self.tool_index[index], "id": use.get("toolUseId"), "type": "function",
                "function": {"name": use.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[bytes]:
        if isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})] if delta["text"] else []
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and reasoning.get("text"):
            return [self._chunk({"reasoning_content": reasoning["text"]})]
        use = delta.get("toolUse")
        if isinstance(use, dict) and use.get("input") and index in self.tool_index:
            call = {"index": self.tool_index[index], "function": {"arguments": use["input"]}}
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
