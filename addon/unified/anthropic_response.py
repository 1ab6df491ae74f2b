"""Anthropic Messages response -> OpenAI chat completion (non-streaming), and the shared mappings of
stop reasons and usage."""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified import errors

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage(native: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: OpenAI's prompt_tokens include the cached ones, Anthropic's
    input_tokens do not (cache reads and writes are counted apart)."""
    cache_read = native.get("cache_read_input_tokens") or 0
    cache_write = native.get("cache_creation_input_tokens") or 0
    prompt = (native.get("input_tokens") or 0) + cache_read + cache_write
    completion = native.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append({
                "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
            })
    out_message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                                   "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    if thinking:
        out_message["reasoning_content"] = "".join(thinking)
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{
            "index": 0, "message": out_message, "logprobs": None,
            "finish_reason": finish_reason(message.get("stop_reason")) or "stop",
        }],
        "usage": usage(message.get("usage") or {}),
    }


def translate_whole(status: int, body: bytes) -> bytes:
    """A whole native Anthropic answer (a message, or an error) as OpenAI's."""
    if status >= 400:
        return errors.from_anthropic(status, body)
    try:
        message = json.loads(body)
    except ValueError:
        return errors.openai_error_bytes("corral: the provider's answer is not JSON", "server_error")
    if not isinstance(message, dict) or message.get("type") != "message":
        return body  # not a Messages answer (e.g. made by Corral already in OpenAI's shape): as it is
    return json.dumps(to_chat_completion(message)).encode()
