"""Bedrock Converse response -> OpenAI chat completion (non-streaming), errors, and the mappings of
stop reasons and usage that the stream shares.

Converse does not echo the model: the answer names the one the request's path named."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from addon.unified import errors

# Converse stopReason -> OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage(native: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Converse's: OpenAI's prompt_tokens include the cached ones, Converse's
    inputTokens do not (cache reads and writes are counted apart, as the Meter prices them)."""
    cache_read = native.get("cacheReadInputTokens") or 0
    cache_write = native.get("cacheWriteInputTokens") or 0
    prompt = (native.get("inputTokens") or 0) + cache_read + cache_write
    completion = native.get("outputTokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def completion_id() -> str:
    # Converse names its answer nowhere in the body (only in x-amzn-requestid): a fresh id per answer.
    return f"chatcmpl-{uuid.uuid4().hex}"


def to_chat_completion(doc: dict[str, Any], model: str | None) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in ((doc.get("output") or {}).get("message") or {}).get("content") or []:
        if "text" in block:
            texts.append(block["text"])
        elif "reasoningContent" in block:
            reasoning.append(((block["reasoningContent"] or {}).get("reasoningText") or {}).get("text", ""))
        elif "toolUse" in block:
            use = block["toolUse"] or {}
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"), "arguments": json.dumps(use.get("input") or {})}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(doc.get("stopReason")) or "stop"}],
        "usage": usage(doc.get("usage") or {}),
    }


def translate_whole(status: int, body: bytes, model: str | None = None) -> bytes:
    """A whole native Converse answer (or an error) as OpenAI's."""
    if status >= 400:
        return errors.from_message_body(status, body)
    try:
        doc = json.loads(body)
    except ValueError:
        return errors.openai_error_bytes("corral: the provider's answer is not JSON", "server_error")
    if not isinstance(doc, dict) or "output" not in doc:
        return body  # not a Converse answer (e.g. made by Corral already in OpenAI's shape): as it is
    return json.dumps(to_chat_completion(doc, model)).encode()
