"""Cohere v2 chat response -> OpenAI chat completion (non-streaming), errors, and the mappings of
finish reasons and usage that the stream shares.

Usage is what the Meter prices: ``billed_units`` when Cohere reports them, else the raw ``tokens``.
``tool_plan`` (the model's words before its tool calls) is message content, as it streams first;
``thinking`` content becomes ``reasoning_content``. Cohere's v2 answer does not echo the model: the
answer names the one the request named.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified import errors

# Cohere finish_reason -> OpenAI finish_reason. ERROR and TIMEOUT have no OpenAI value: they are kept
# visible as "error" rather than passed off as a normal stop.
FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
    "TIMEOUT": "error",
}


def finish_reason(native: str | None) -> str | None:
    if native is None:
        return None
    return FINISH_REASONS.get(native, "stop")


def usage(native: dict[str, Any]) -> dict[str, Any] | None:
    counts = native.get("billed_units")
    if not isinstance(counts, dict):
        counts = native.get("tokens")
    if not isinstance(counts, dict):
        return None
    prompt = int(counts.get("input_tokens") or 0)
    completion = int(counts.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_chat_completion(doc: dict[str, Any], model: str | None) -> dict[str, Any]:
    native = doc.get("message") or {}
    texts: list[str] = []
    thinking: list[str] = []
    for block in native.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "thinking":
            thinking.append(block.get("thinking", ""))
    if native.get("tool_plan"):
        texts.insert(0, native["tool_plan"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    calls = [{"id": c.get("id"), "type": "function",
              "function": {"name": (c.get("function") or {}).get("name"),
                           "arguments": (c.get("function") or {}).get("arguments") or "{}"}}
             for c in native.get("tool_calls") or []]
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    out: dict[str, Any] = {
        "id": doc.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(doc.get("finish_reason")) or "stop"}],
    }
    counted = usage(doc.get("usage") or {})
    if counted is not None:
        out["usage"] = counted
    return out


def translate_whole(status: int, body: bytes, model: str | None = None) -> bytes:
    """A whole native Cohere v2 answer (or an error) as OpenAI's."""
    if status >= 400:
        return errors.from_message_body(status, body)
    try:
        doc = json.loads(body)
    except ValueError:
        return errors.openai_error_bytes("corral: the provider's answer is not JSON", "server_error")
    if not isinstance(doc, dict) or "message" not in doc:
        return body  # not a chat answer (e.g. made by Corral already in OpenAI's shape): as it is
    return json.dumps(to_chat_completion(doc, model)).encode()
