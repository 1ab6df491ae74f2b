"""OpenAI chat completions request -> Anthropic Messages request.

Rules for what Anthropic cannot honour (never silently changed in meaning):
- dropped: ``seed``, ``store``, ``service_tier``, ``stream_options`` (usage is always in Anthropic's
  stream; ``include_usage`` decides only whether the client gets the usage chunk), ``n: 1``,
  ``parallel_tool_calls: true``, ``response_format: {"type": "text"}``, ``logprobs: false``;
- ``response_format`` ``json_schema`` -> ``output_config.format`` (Anthropic structured outputs, always
  enforced, so ``strict: false`` gets the stricter of the two; the JSON comes back as the message text;
  a model without structured outputs answers Anthropic's own 400);
- refused with a 400 naming the parameter: ``n > 1``, ``temperature > 1`` (Anthropic's range is 0..1),
  ``response_format: {"type": "json_object"}`` (no schema-less JSON mode: send a ``json_schema``),
  ``logprobs``/``top_logprobs``, ``logit_bias``,
  ``frequency_penalty``/``presence_penalty`` other than 0, ``audio``/``modalities``/``prediction``,
  and any parameter not listed here;
- ``max_tokens`` is required by Anthropic: ``max_completion_tokens`` or ``max_tokens``, else
  ``DEFAULT_MAX_TOKENS``.
"""

from __future__ import annotations

import json
from typing import Any

from addon.unified import chat_parts
from addon.unified.errors import TranslationError

DEFAULT_MAX_TOKENS = 4096

_DROPPED = frozenset({"seed", "store", "service_tier", "stream_options", "metadata"})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "tools", "tool_choice", "parallel_tool_calls", "user", "n", "response_format", "logprobs",
    "frequency_penalty", "presence_penalty",
})


def to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat completions ``body``; ``model`` is the native name."""
    _refuse_unsupported(body)
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = system
    out["messages"] = messages
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    out["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if body.get("temperature") is not None:
        if body["temperature"] > 1:
            raise TranslationError("temperature above 1 has no Anthropic equivalent (its range is 0 to 1)",
                                   "temperature")
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    output_format = _output_format(body.get("response_format"))
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    return out


def _output_format(fmt: Any) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") != "json_schema":
        raise TranslationError(f"response_format {fmt.get('type')!r} is not supported for Anthropic models: they have "
                               "no schema-less JSON mode (send a json_schema)", "response_format")
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise TranslationError("response_format.json_schema.schema must be a JSON schema object", "response_format")
    return {"type": "json_schema", "schema": schema}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for key in body:
        if key not in _HANDLED and key not in _DROPPED and body[key] is not None:
            raise TranslationError(f"parameter {key!r} is not supported for Anthropic models by the unified "
                                   "endpoint", key)
    if (body.get("n") or 1) != 1:
        raise TranslationError("n other than 1 is not supported for Anthropic models", "n")
    if body.get("logprobs"):
        raise TranslationError("logprobs are not available from Anthropic models", "logprobs")
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key):
            raise TranslationError(f"{key} has no Anthropic equivalent", key)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise TranslationError("messages must be a non-empty list", "messages")


def _messages(raw: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        role = msg.get("role")
        if role in ("system", "developer"):
            system += [{"type": "text", "text": t} for t in chat_parts.texts(msg.get("content"), f"messages[{i}]")]
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"messages[{i}]")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, f"messages[{i}]")
            role = "assistant"
        elif role == "tool":
            blocks = [{"type": "tool_result", "tool_use_id": msg.get("tool_call_id"),
                       "content": "\n".join(chat_parts.texts(msg.get("content"), f"messages[{i}]"))}]
            role = "user"  # Anthropic carries tool results in the user turn
        else:
            raise TranslationError(f"messages[{i}]: role {role!r} is not supported", f"messages[{i}].role")
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += blocks  # Anthropic wants the roles to alternate: merge the turn
        else:
            messages.append({"role": role, "content": blocks})
    return system, messages


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}))
        else:
            raise TranslationError(f"{where}: content part {kind!r} is not supported for Anthropic models", where)
    return blocks


def _image(image: dict[str, Any]) -> dict[str, Any]:
    url = str(image.get("url", ""))
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].split(";", 1)[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": t} for t in chat_parts.texts(msg.get("content"), where) if t]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            raise TranslationError(f"{where}: tool call arguments are not JSON", where) from None
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
    return blocks


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise TranslationError(f"tool type {tool.get('type')!r} is not supported for Anthropic models", "tools")
    fn = tool.get("function") or {}
    out = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = None if parallel is not False else {"type": "auto"}
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out
