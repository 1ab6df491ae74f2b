"""OpenAI chat completions request -> Cohere v2 chat request (``POST /v2/chat``).

Cohere v2 messages and tools are close to OpenAI's: system/developer -> ``system``, tool results as
``tool`` messages with ``tool_call_id``, assistant ``tool_calls`` as they are, images as ``image_url``
parts (URL or data URL, Cohere fetches).

Rules for what Cohere cannot honour (never silently changed in meaning):
- ``top_p`` -> ``p``, ``stop`` -> ``stop_sequences``, ``max_completion_tokens``/``max_tokens`` ->
  ``max_tokens``; ``temperature``, ``seed``, penalties as they are (Cohere's penalties range 0..1:
  other values are refused);
- ``tool_choice``: ``auto`` -> omitted, ``required`` -> ``REQUIRED``, ``none`` -> ``NONE``, a named
  function -> only that tool is sent, with ``REQUIRED`` (the model must call it: the same meaning);
- ``response_format``: ``json_object`` -> ``{"type": "json_object"}``, ``json_schema`` ->
  ``{"type": "json_object", "json_schema": <schema>}``;
- dropped: ``store``, ``service_tier``, ``metadata``, ``user``, ``stream_options`` (usage is always in
  ``message-end``), ``n: 1``, ``parallel_tool_calls: true``, ``logprobs: false``;
- refused with a 400 naming the parameter: ``n > 1``, ``parallel_tool_calls: false``, ``logprobs``,
  ``logit_bias``, and any parameter not listed here.
"""

from __future__ import annotations

from typing import Any

from addon.unified import chat_parts, openai_params as p
from addon.unified.errors import TranslationError

PROVIDER = "Cohere"
_DROPPED = frozenset({"store", "service_tier", "stream_options", "metadata", "user"})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "tools", "tool_choice", "parallel_tool_calls", "n", "response_format", "logprobs", "seed",
    "frequency_penalty", "presence_penalty",
})


def to_cohere(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Cohere v2 chat body for an OpenAI chat completions ``body``; ``model`` is the native name."""
    p.refuse_unknown(body, _HANDLED, _DROPPED, PROVIDER)
    if body.get("parallel_tool_calls") is False:
        raise TranslationError("parallel_tool_calls false cannot be enforced on Cohere models", "parallel_tool_calls")
    out: dict[str, Any] = {"model": model, "messages": [_message(m, f"messages[{i}]")
                                                        for i, m in enumerate(body["messages"])]}
    tools, choice = _tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    fmt = _response_format(body.get("response_format"))
    if fmt is not None:
        out["response_format"] = fmt
    if p.max_tokens(body) is not None:
        out["max_tokens"] = p.max_tokens(body)
    if body.get("stop"):
        out["stop_sequences"] = p.stop_list(body["stop"])
    for key, native in (("temperature", "temperature"), ("top_p", "p"), ("seed", "seed")):
        if body.get(key) is not None:
            out[native] = body[key]
    for key in ("frequency_penalty", "presence_penalty"):
        value = body.get(key)
        if value is not None and value != 0:
            if not 0 <= value <= 1:
                raise TranslationError(f"{key} {value} is outside Cohere's range (0 to 1)", key)
            out[key] = value
    if body.get("stream"):
        out["stream"] = True
    return out


def _message(msg: dict[str, Any], where: str) -> dict[str, Any]:
    role = msg.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": "\n".join(chat_parts.texts(msg.get("content"), where))}
    if role == "user":
        return {"role": "user", "content": _user_content(msg.get("content"), where)}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        text = "".join(chat_parts.texts(msg.get("content"), where))
        if text:
            out["content"] = text
        calls = []
        for call in msg.get("tool_calls") or []:
            p.arguments(call, where)  # JSON, as Cohere will parse it
            fn = call.get("function") or {}
            calls.append({"id": call.get("id"), "type": "function",
                          "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or "{}"}})
        if calls:
            out["tool_calls"] = calls
        return out
    if role == "tool":
        return {"role": "tool", "tool_call_id": msg.get("tool_call_id"),
                "content": "\n".join(chat_parts.texts(msg.get("content"), where))}
    raise TranslationError(f"{where}: role {role!r} is not supported", f"{where}.role")


def _user_content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url: dict[str, Any] = {"url": image.get("url")}
            if image.get("detail"):
                url["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": url})
        else:
            raise TranslationError(f"{where}: content part {kind!r} is not supported for Cohere models", where)
    return parts


def _tools(raw: Any, choice: Any) -> tuple[list[dict[str, Any]], str | None]:
    functions = p.function_tools(raw, PROVIDER)
    if choice is not None and not functions:
        raise TranslationError("tool_choice needs tools", "tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        functions = [fn for fn in functions if fn.get("name") == name]
        if not functions:
            raise TranslationError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        native: str | None = "REQUIRED"
    elif choice in (None, "auto"):
        native = None
    elif choice in ("required", "none"):
        native = choice.upper()
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    tools = []
    for fn in functions:
        spec: dict[str, Any] = {"name": fn.get("name"),
                                "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        tools.append({"type": "function", "function": spec})
    return tools, native


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise TranslationError("response_format.json_schema.schema must be a JSON schema object",
                                   "response_format")
        return {"type": "json_object", "json_schema": schema}
    raise TranslationError(f"response_format {fmt.get('type')!r} is not supported", "response_format")
