"""OpenAI chat completions request -> Ollama native ``/api/chat`` request.

Rules for what Ollama cannot honour (never silently changed in meaning):
- mapped: ``temperature``, ``top_p``, ``seed``, ``stop``, ``frequency_penalty``, ``presence_penalty``
  and ``max_completion_tokens``/``max_tokens`` (``num_predict``) into ``options``; ``response_format``
  JSON object -> ``format: "json"``, JSON schema -> ``format: <schema>``; ``reasoning_effort`` ->
  ``think`` (``none``: false, else the level, which Ollama takes for the models that have levels);
  ``tool_choice: "none"`` -> no tools sent (so none can be called); images as the base64 ``images`` list;
- dropped: ``store``, ``service_tier``, ``metadata``, ``user``, ``stream_options`` (the last NDJSON line
  always has the counts), ``n: 1``, ``parallel_tool_calls: true``, ``logprobs: false``,
  ``response_format: {"type": "text"}``, ``tool_choice: "auto"``, an image's ``detail``;
- refused with a 400 naming the parameter: ``n > 1``, ``tool_choice`` ``required`` or a named function
  (Ollama cannot be made to call one), ``parallel_tool_calls: false``, ``logprobs``, image URLs that are
  not ``data:`` base64 (Ollama takes image bytes only), and any parameter not listed here.
"""

from __future__ import annotations

import json
from typing import Any

from addon.unified import chat_parts
from addon.unified.errors import TranslationError

_DROPPED = frozenset({"store", "service_tier", "metadata", "user", "stream_options"})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "seed", "tools", "tool_choice", "parallel_tool_calls", "n", "response_format", "logprobs",
    "frequency_penalty", "presence_penalty", "reasoning_effort",
})
_OPTIONS = (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"))
_EFFORTS = {"none": False, "low": "low", "medium": "medium", "high": "high"}


def path(model: str, stream: bool) -> str:
    return "/api/chat"


def to_ollama(body: dict[str, Any], model: str) -> dict[str, Any]:
    _refuse_unsupported(body)
    out: dict[str, Any] = {"model": model, "messages": _messages(body["messages"]),
                           "stream": bool(body.get("stream"))}  # Ollama streams unless told not to
    if body.get("tools") and body.get("tool_choice") != "none":
        for tool in body["tools"]:
            if tool.get("type") != "function":
                raise TranslationError(f"tool type {tool.get('type')!r} is not supported for Ollama models", "tools")
        out["tools"] = [{"type": "function", "function": _function(t.get("function") or {})} for t in body["tools"]]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        out["format"] = "json"
    elif fmt.get("type") == "json_schema":
        out["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    elif fmt.get("type") not in (None, "text"):
        raise TranslationError(f"response_format {fmt.get('type')!r} is not supported for Ollama models",
                               "response_format")
    options = {name: body[key] for key, name in _OPTIONS if body.get(key) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if options:
        out["options"] = options
    if body.get("reasoning_effort") is not None:
        out["think"] = _EFFORTS[body["reasoning_effort"]]
    return out


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for key in body:
        if key not in _HANDLED and key not in _DROPPED and body[key] is not None:
            raise TranslationError(f"parameter {key!r} is not supported for Ollama models by the unified "
                                   "endpoint", key)
    if (body.get("n") or 1) != 1:
        raise TranslationError("n other than 1 is not supported for Ollama models", "n")
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise TranslationError(f"tool_choice {choice!r} has no Ollama equivalent (Ollama cannot be made to "
                               "call a tool)", "tool_choice")
    if body.get("parallel_tool_calls") is False:
        raise TranslationError("parallel_tool_calls: false has no Ollama equivalent", "parallel_tool_calls")
    if body.get("logprobs"):
        raise TranslationError("logprobs are not supported for Ollama models by the unified endpoint", "logprobs")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        raise TranslationError(f"reasoning_effort {effort!r} is not supported for Ollama models",
                               "reasoning_effort")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise TranslationError("messages must be a non-empty list", "messages")


def _messages(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        role = msg.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": "\n".join(chat_parts.texts(msg.get("content"), where))})
        elif role == "user":
            out.append(_user(msg.get("content"), where))
        elif role == "assistant":
            out.append(_assistant(msg, where, call_names))
        elif role == "tool":
            result = {"role": "tool", "content": "\n".join(chat_parts.texts(msg.get("content"), where))}
            name = call_names.get(str(msg.get("tool_call_id")))
            if name:
                result["tool_name"] = name
            out.append(result)
        else:
            raise TranslationError(f"{where}: role {role!r} is not supported", f"{where}.role")
    return out


def _user(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "user", "content": content}
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            head, sep, data = url.partition(",")
            if not url.startswith("data:") or not sep or not head.endswith(";base64"):
                raise TranslationError(f"{where}: Ollama takes images as base64 data: URLs only",
                                       f"{where}.content[{j}].image_url")
            images.append(data)
        else:
            raise TranslationError(f"{where}: content part {kind!r} is not supported for Ollama models",
                                   f"{where}.content[{j}]")
    out: dict[str, Any] = {"role": "user", "content": "\n".join(texts)}
    if images:
        out["images"] = images
    return out


def _assistant(msg: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": "".join(chat_parts.texts(msg.get("content"), where))}
    calls = []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            raise TranslationError(f"{where}: tool call arguments are not JSON", f"{where}.tool_calls") from None
        call_names[str(call.get("id"))] = str(fn.get("name"))
        calls.append({"function": {"name": fn.get("name"), "arguments": args}})
    if calls:
        out["tool_calls"] = calls
    return out


def _function(fn: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out
