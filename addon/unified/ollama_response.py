"""Ollama ``/api/chat`` answers -> OpenAI's shapes: the whole answer, the NDJSON stream (line by line into
chat completion chunks) and errors (``{"error": "..."}`` with the HTTP status kept).

Usage is what Corral's meter reads from the same answer: ``prompt_tokens`` = ``prompt_eval_count``,
``completion_tokens`` = ``eval_count``. Ollama sends each tool call whole, so a stream carries it as one
``tool_calls`` delta with its index; thinking becomes ``reasoning_content``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified import errors

# Ollama done_reason -> OpenAI finish_reason ("load"/"unload" answer no prompt).
FINISH_REASONS = {"stop": "stop", "length": "length"}


def finish_reason(native: Any, has_calls: bool) -> str:
    if has_calls and native in (None, "stop"):
        return "tool_calls"
    return FINISH_REASONS.get(str(native), "stop")


def usage(doc: dict[str, Any]) -> dict[str, Any]:
    prompt = doc.get("prompt_eval_count") or 0
    completion = doc.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def tool_calls(message: dict[str, Any], first_index: int) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(message.get("tool_calls") or [], first_index):
        fn = call.get("function") or {}
        out.append({"index": i, "id": call.get("id") or f"call_{i}", "type": "function",
                    "function": {"name": fn.get("name"), "arguments": json.dumps(fn.get("arguments") or {})}})
    return out


def error_json(status: int, body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return body  # OpenAI's shape already (an answer Corral made)
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
    message = err if isinstance(err, str) else body.decode("utf-8", "replace")[:2000]
    return errors.openai_error_bytes(message or f"upstream answered HTTP {status}", kind)


def translate_whole(status: int, body: bytes) -> bytes:
    if status >= 400:
        return error_json(status, body)
    try:
        doc = json.loads(body)
    except ValueError:
        return errors.openai_error_bytes("corral: the provider's answer is not JSON", "server_error")
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), dict):
        return body  # not an /api/chat answer (e.g. made by Corral already in OpenAI's shape): as it is
    message = doc["message"]
    calls = [{k: v for k, v in c.items() if k != "index"} for c in tool_calls(message, 0)]
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None, "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    if message.get("thinking"):
        out_message["reasoning_content"] = message["thinking"]
    return json.dumps({
        "id": f"chatcmpl-{doc.get('created_at', '')}", "object": "chat.completion", "created": int(time.time()),
        "model": doc.get("model"),
        "choices": [{"index": 0, "message": out_message, "logprobs": None,
                     "finish_reason": finish_reason(doc.get("done_reason"), bool(calls))}],
        "usage": usage(doc),
    }).encode()


class OllamaStreamTranslator:
    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.buffer = b""
        self.id = ""
        self.model: str | None = None
        self.created = int(time.time())
        self.calls = 0
        self.started = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out: list[bytes] = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            out += self._line(line)
        return b"".join(out)

    def finish_stream(self) -> bytes:
        return self.feed(b"\n") if self.buffer.strip() else b""

    def _line(self, line: bytes) -> list[bytes]:
        if not line.strip() or self.done:
            return []
        try:
            doc = json.loads(line)
        except ValueError:
            return []
        if not isinstance(doc, dict):
            return []
        if "error" in doc:
            self.done = True
            return [self._sse(errors.openai_error(str(doc["error"]), "server_error"))]
        self.id = self.id or f"chatcmpl-{doc.get('created_at', '')}"
        self.model = self.model or doc.get("model")
        out = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        message = doc.get("message") or {}
        if message.get("thinking"):
            out.append(self._chunk({"reasoning_content": message["thinking"]}))
        if message.get("content"):
            out.append(self._chunk({"content": message["content"]}))
        calls = tool_calls(message, self.calls)
        if calls:
            self.calls += len(calls)
            out.append(self._chunk({"tool_calls": calls}))
        if doc.get("done"):
            self.done = True
            out.append(self._chunk({}, finish=finish_reason(doc.get("done_reason"), self.calls > 0)))
            if self.include_usage:
                out.append(self._sse({**self._base(), "choices": [], "usage": usage(doc)}))
            out.append(b"data: [DONE]\n\n")
        return out

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse({**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish}]})

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
