"""Anthropic Messages SSE -> OpenAI chat completion chunks, event by event.

Text deltas become ``delta.content``, thinking deltas ``delta.reasoning_content``, each tool_use block a
``delta.tool_calls`` entry (id and name first, then its ``input_json_delta`` pieces as argument deltas,
indexed by tool call, so the SDK's stream helpers reassemble them). Usage is exact: input and cache
counts from ``message_start``, output tokens from the final ``message_delta``; the usage chunk is sent
only when the client asked for it (``stream_options.include_usage``). An ``error`` event becomes an
SSE ``{"error": ...}`` event, which the openai SDK raises as an ``APIError``.

Most of a stream is text deltas, pings and block stops, and this runs for every event on the event
loop: those are recognised by their ``event:`` line and a strict pattern of their compact JSON (as
Anthropic sends it), and a text delta's chunk is a precomputed prefix and suffix around the text's
JSON string, which is reused as it came when it needs no escaping. Any event that does not match
exactly takes the general path (``json.loads``, a dict, ``json.dumps``), whose output is the same.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from addon.unified.anthropic_response import finish_reason, usage
from addon.unified.errors import openai_error

# Anthropic's compact JSON of the events most of a stream is made of (it pads some with spaces before
# the last brace). A JSON number and a JSON string as the grammar has them; an index's value is not
# needed on the fast path (text and thinking deltas do not carry it over).
_INDEX = rb'"index":(?:0|[1-9][0-9]*)'
_STRING = rb'"(?:[^"\\\x00-\x1f]|\\.)*"'
_END = rb"[ \t]*\}[ \t]*"
# event line -> the pattern of its data line; a match with a group is a text or thinking delta (its kind,
# its JSON string), one without is an event with no chunk.
_FAST = {
    b"content_block_delta": re.compile(
        rb'\{"type":"content_block_delta",' + _INDEX + rb',"delta":\{"type":"(text|thinking)_delta",'
        rb'"\1":(' + _STRING + rb')\}' + _END),
    b"ping": re.compile(rb'\{"type": ?"ping"' + _END),
    b"content_block_stop": re.compile(rb'\{"type":"content_block_stop",' + _INDEX + _END),
    b"content_block_start": re.compile(
        rb'\{"type":"content_block_start",' + _INDEX + rb',"content_block":\{"type":"text","text":""\}' + _END),
}
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class AnthropicStreamTranslator:
    def __init__(self, include_usage: bool, fast: bool = True) -> None:
        self.include_usage = include_usage
        self.fast = fast  # False: every event through the general path (the property tests' reference)
        self.buffer = bytearray()  # the start of an event whose end has not arrived
        self.cr = False  # the last chunk ended in "\r", whose "\n" may start the next one
        self.id = ""
        self.model: str | None = None
        self.created = int(time.time())
        self.native_usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.finish: str | None = None
        self.done = False
        self._heads: dict[bytes, bytes] = {}  # made when first needed, again after message_start
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the complete events in ``data`` (and what was buffered before)."""
        if self.cr:
            data, self.cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self.cr = data[:-1], True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buffer = self.buffer
        if buffer:  # only the new bytes (and the last old one) are searched for the end of an event
            start = len(buffer) - 1
            buffer += data
            end = buffer.find(b"\n\n", start)
            if end < 0:
                return b""
            data = bytes(buffer)
            buffer.clear()
        else:
            end = data.find(b"\n\n")
        out: list[bytes] = []
        pos = 0
        while end >= 0:
            self._event(data[pos:end], out)
            pos = end + 2
            end = data.find(b"\n\n", pos)
        if pos < len(data):
            buffer += data[pos:]
        return b"".join(out)

    def finish_stream(self) -> bytes:
        """Whatever the end of the native stream still owes the client."""
        tail = self.feed(b"\n\n") if self.buffer.strip() else b""
        return tail

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if self.done:
            return
        if self.fast and raw.startswith(b"event: "):
            line = raw.find(b"\n")
            pattern = _FAST.get(raw[7:line]) if line > 0 and raw.startswith(b"data: ", line + 1) else None
            match = pattern.fullmatch(raw, line + 7) if pattern is not None else None
            if match is not None:
                if match.lastindex is None:
                    return  # ping, content_block_stop, an empty text block's start
                text = match[2]
                if b"\\" in text or not text.isascii():  # escaped in OpenAI's chunk as json.dumps escapes it
                    try:
                        text = _DUMPS(json.loads(text)).encode()
                    except ValueError:
                        text = b""
                if text:
                    out.append((self._heads.get(match[1]) or self._template(match[1])) + text + self._tail)
                    return
        self._general(raw, out)

    def _general(self, raw: bytes, out: list[bytes]) -> None:
        data = b"\n".join(line[5:].lstrip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = message.get("id", ""), message.get("model")
            self._heads.clear()
            self.native_usage.update(message.get("usage") or {})
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            out += self._block_start(event.get("index", 0), event.get("content_block") or {})
        elif kind == "content_block_delta":
            out += self._block_delta(event.get("index", 0), event.get("delta") or {})
        elif kind == "message_delta":
            self.native_usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self.finish = finish_reason((event.get("delta") or {}).get("stop_reason")) or "stop"
            out.append(self._chunk({}, finish=self.finish))
        elif kind == "message_stop":
            self.done = True
            if self.include_usage:
                out.append(self._sse({**self._base(), "choices": [], "usage": usage(self.native_usage)}))
            out.append(b"data: [DONE]\n\n")
        elif kind == "error":
            self.done = True
            err = event.get("error") or {}
            out.append(self._sse(openai_error(str(err.get("message", "")), str(err.get("type", "server_error")))))
        # ping, content_block_stop, and event types this translator does not know: nothing

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

    def _template(self, kind: bytes) -> bytes:
        """A text or thinking delta's chunk before its JSON string (and, in ``_tail``, after it), as
        ``_chunk`` makes it."""
        whole = self._chunk({"content" if kind == b"text" else "reasoning_content": ""})
        cut = whole.rindex(b'""')
        self._heads[kind], self._tail = whole[:cut], whole[cut + 2:]
        return whole[:cut]

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish}]})

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + _DUMPS(obj).encode() + b"\n\n"
