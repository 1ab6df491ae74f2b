"""Errors in OpenAI's JSON shape, so the openai SDK raises its usual exception for the status
(``BadRequestError`` for 400, ``RateLimitError`` for 429, ...) with the provider's message kept."""

from __future__ import annotations

import json
from typing import Any

# Anthropic's error types -> OpenAI's (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}


class TranslationError(ValueError):
    """A request the unified endpoint cannot translate faithfully: answered with a 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def openai_error(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_bytes(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(openai_error(message, kind, param, code)).encode()


def from_anthropic(status: int, body: bytes) -> bytes:
    """An Anthropic error body (``{"type": "error", "error": {"type", "message"}}``) in OpenAI's shape.
    A body already in OpenAI's shape is kept; anything else becomes the message, clipped."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        if "param" in err or "code" in err or data.get("type") != "error":
            return body  # OpenAI's shape already (e.g. an answer Corral made for a unified request)
        kind = _ANTHROPIC_TYPES.get(str(err.get("type")), "server_error" if status >= 500 else "invalid_request_error")
        return openai_error_bytes(str(err.get("message", "")), kind, code=str(err.get("type")) or None)
    text = body.decode("utf-8", "replace")[:2000]
    return openai_error_bytes(text or f"upstream answered HTTP {status}", "server_error" if status >= 500
                              else "invalid_request_error")


def kind_for_status(status: int) -> str:
    """OpenAI's error type for a provider status, where the provider's body names no type of its own."""
    return {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error" if status >= 500
                                                                  else "invalid_request_error")


def from_message_body(status: int, body: bytes) -> bytes:
    """An error body of the ``{"message": ...}`` kind (Bedrock, Cohere; Bedrock also spells it
    ``Message``) in OpenAI's shape, typed by the status. A body already in OpenAI's shape is kept."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body  # OpenAI's shape already (e.g. an answer Corral made for a unified request)
    message = (data.get("message") or data.get("Message")) if isinstance(data, dict) else None
    if message:
        return openai_error_bytes(str(message), kind_for_status(status))
    text = body.decode("utf-8", "replace")[:2000]
    return openai_error_bytes(text or f"upstream answered HTTP {status}", kind_for_status(status))
