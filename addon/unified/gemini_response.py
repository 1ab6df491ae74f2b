"""Gemini ``GenerateContentResponse`` -> OpenAI chat completion (non-streaming), Gemini errors -> OpenAI's
error shape, and the mappings of finish reasons, parts and usage the stream translator shares."""

from __future__ import annotations

import json
import time
from typing import Any

from addon.unified import errors

# Gemini finishReason -> OpenAI finish_reason (https://ai.google.dev/api/generate-content#FinishReason).
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# google.rpc status -> OpenAI error type.
ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "NOT_FOUND": "not_found_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}


def finish_reason(native: str | None, has_calls: bool) -> str | None:
    """Gemini says STOP also when it answers with function calls; OpenAI says ``tool_calls`` then."""
    if native is None:
        return None
    if has_calls and native == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(native, "stop")


def usage(native: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Gemini's ``usageMetadata``, counted as Corral's meter counts it, so the client's
    numbers equal the record's: ``prompt_tokens`` = ``promptTokenCount`` (cached tokens included, as in
    OpenAI's), ``completion_tokens`` = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (thoughts are
    billed as output; OpenAI's count includes reasoning too), of which ``reasoning_tokens`` are the
    thoughts; ``total_tokens`` = Gemini's ``totalTokenCount``, which counts tool-use prompts too."""
    prompt = native.get("promptTokenCount") or 0
    completion = (native.get("candidatesTokenCount") or 0) + (native.get("thoughtsTokenCount") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": native.get("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": native.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": native.get("thoughtsTokenCount") or 0},
    }


def tool_call(part: dict[str, Any], index: int, response_id: str) -> dict[str, Any]:
    """A ``functionCall`` part as an OpenAI tool call; its thought signature travels where Google's own
    OpenAI layer puts it, so a client that sends the message back gives Gemini 3 what it needs."""
    fn = part.get("functionCall") or {}
    call: dict[str, Any] = {
        "id": fn.get("id") or f"call_{response_id}_{index}",
        "type": "function",
        "function": {"name": fn.get("name"), "arguments": json.dumps(fn.get("args") or {})},
    }
    if part.get("thoughtSignature"):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def first_candidate(doc: dict[str, Any]) -> dict[str, Any]:
    for cand in doc.get("candidates") or []:
        if isinstance(cand, dict) and cand.get("index", 0) == 0:
            return cand
    return {}


def to_chat_completion(doc: dict[str, Any]) -> dict[str, Any]:
    cand = first_candidate(doc)
    response_id = str(doc.get("responseId") or "")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (cand.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            calls.append(tool_call(part, len(calls), response_id))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    blocked = (doc.get("promptFeedback") or {}).get("blockReason")
    reason = finish_reason(cand.get("finishReason"), bool(calls)) or ("content_filter" if blocked else "stop")
    return {
        "id": f"chatcmpl-{response_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": doc.get("modelVersion"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": usage(doc.get("usageMetadata") or {}),
    }


def error_json(status: int, body: bytes) -> bytes:
    """A Gemini error (``{"error": {"code", "message", "status"}}``) in OpenAI's shape, the message kept
    and the google.rpc status as ``code``. A body already in OpenAI's shape is kept."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # a streamed (JSON array) error
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        if "type" in err or "param" in err:
            return body  # made by Corral in OpenAI's shape already
        rpc = str(err.get("status") or "") or None
        kind = ERROR_TYPES.get(rpc or "", "server_error" if status >= 500 else "invalid_request_error")
        return errors.openai_error_bytes(str(err.get("message", "")), kind, code=rpc)
    text = body.decode("utf-8", "replace")[:2000]
    return errors.openai_error_bytes(text or f"upstream answered HTTP {status}",
                                     "server_error" if status >= 500 else "invalid_request_error")


def translate_whole(status: int, body: bytes) -> bytes:
    """A whole native Gemini answer (a response, or an error) as OpenAI's."""
    if status >= 400:
        return error_json(status, body)
    try:
        doc = json.loads(body)
    except ValueError:
        return errors.openai_error_bytes("corral: the provider's answer is not JSON", "server_error")
    if not isinstance(doc, dict) or not ("candidates" in doc or "promptFeedback" in doc):
        return body  # not a generateContent answer (e.g. made by Corral already in OpenAI's shape): as it is
    return json.dumps(to_chat_completion(doc)).encode()
