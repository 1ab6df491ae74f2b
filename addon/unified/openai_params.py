"""Checks and readings of an OpenAI chat request that every translated family shares: the parameters a
family takes, the text of a message, a ``data:`` image URL."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from addon.unified.errors import TranslationError


def refuse_unknown(body: dict[str, Any], handled: Iterable[str], dropped: Iterable[str], provider: str) -> None:
    """A 400 naming the first parameter that is neither translated nor dropped by a documented rule."""
    known = set(handled) | set(dropped)
    for key in body:
        if key not in known and body[key] is not None:
            raise TranslationError(f"parameter {key!r} is not supported for {provider} models by the unified "
                                   "endpoint", key)
    if (body.get("n") or 1) != 1:
        raise TranslationError(f"n other than 1 is not supported for {provider} models", "n")
    if body.get("logprobs"):
        raise TranslationError(f"logprobs are not available from {provider} models through the unified endpoint",
                               "logprobs")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise TranslationError("messages must be a non-empty list", "messages")


def data_url(url: str, where: str, provider: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL; any other URL is refused, since
    ``provider`` takes image bytes only."""
    head, sep, data = url.partition(",")
    if not url.startswith("data:") or not sep or not head.endswith(";base64"):
        raise TranslationError(f"{where}: {provider} models take images as base64 data URLs only "
                               "(data:image/png;base64,...); the gateway does not fetch image URLs", where)
    return head[5:].split(";", 1)[0], data


def arguments(call: dict[str, Any], where: str) -> Any:
    """The parsed arguments of an assistant message's tool call."""
    fn = call.get("function") or {}
    try:
        return json.loads(fn.get("arguments") or "{}")
    except ValueError:
        raise TranslationError(f"{where}: tool call arguments are not JSON", where) from None


def function_tools(tools: Any, provider: str) -> list[dict[str, Any]]:
    """The ``function`` objects of OpenAI tools (any other tool type is refused)."""
    out = []
    for tool in tools or []:
        if tool.get("type") != "function":
            raise TranslationError(f"tool type {tool.get('type')!r} is not supported for {provider} models", "tools")
        out.append(tool.get("function") or {})
    return out


def max_tokens(body: dict[str, Any]) -> Any:
    return body.get("max_completion_tokens", body.get("max_tokens"))


def stop_list(stop: Any) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])
