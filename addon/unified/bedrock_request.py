"""OpenAI chat completions request -> Bedrock Converse / ConverseStream request.

The stream is chosen by the path (``/model/<id>/converse-stream``), not by the body; the model id is
URL-escaped into the path whole (inference profile ARNs carry ``:`` and ``/``).

Rules for what Converse cannot honour (never silently changed in meaning):
- dropped: ``seed`` (best effort in OpenAI too; Converse has no seed), ``store``, ``service_tier``,
  ``metadata``, ``stream_options`` (usage is always in the ``metadata`` event; ``include_usage`` decides
  only whether the client gets the usage chunk), ``n: 1``, ``parallel_tool_calls: true``,
  ``response_format: {"type": "text"}``, ``logprobs: false``, zero penalties;
- ``tool_choice: "none"``: the tools are not sent (Converse has no "none"); refused with a 400 when
  the conversation already holds tool calls or results, which Converse takes only with the tools;
- ``user`` -> ``requestMetadata.user`` (Bedrock's invocation logs keep it);
- ``response_format`` ``json_schema`` -> ``outputConfig.textFormat`` (Converse structured output, always
  enforced, so ``strict: false`` gets the stricter of the two; a model without structured output answers
  the provider's own 400);
- refused with a 400 naming the parameter: ``n > 1``, ``response_format: {"type": "json_object"}``
  (Converse has no schema-less JSON mode: send a ``json_schema``), ``parallel_tool_calls: false``, ``logprobs``,
  ``logit_bias``, non-zero ``frequency_penalty``/``presence_penalty``, image URLs other than base64
  ``data:`` URLs (Converse takes image bytes only), and any parameter not listed here.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from addon.unified import chat_parts, openai_params as p
from addon.unified.errors import TranslationError

PROVIDER = "Bedrock"
_DROPPED = frozenset({"seed", "store", "service_tier", "stream_options", "metadata"})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "tools", "tool_choice", "parallel_tool_calls", "user", "n", "response_format", "logprobs",
    "frequency_penalty", "presence_penalty",
})
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}


def path(model: str, stream: bool) -> str:
    return f"/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


def to_bedrock(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Converse body for an OpenAI chat completions ``body`` (``model`` travels in the path)."""
    _refuse_unsupported(body)
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    if p.max_tokens(body) is not None:
        config["maxTokens"] = p.max_tokens(body)
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    if body.get("stop"):
        config["stopSequences"] = p.stop_list(body["stop"])
    if config:
        out["inferenceConfig"] = config
    tool_config = _tool_config(body, messages)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    if body.get("user"):
        out["requestMetadata"] = {"user": str(body["user"])}
    output = _output_config(body.get("response_format"))
    if output is not None:
        out["outputConfig"] = output
    return out


def _output_config(fmt: Any) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") != "json_schema":
        raise TranslationError(f"response_format {fmt.get('type')!r} is not supported for Bedrock models: Converse has "
                               "no schema-less JSON mode (send a json_schema)", "response_format")
    spec = fmt.get("json_schema") or {}
    if not isinstance(spec.get("schema"), dict):
        raise TranslationError("response_format.json_schema.schema must be a JSON schema object",
                               "response_format")
    definition: dict[str, Any] = {"schema": json.dumps(spec["schema"])}  # a string member in the service model
    if spec.get("name"):
        definition["name"] = spec["name"]
    if spec.get("description"):
        definition["description"] = spec["description"]
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    p.refuse_unknown(body, _HANDLED, _DROPPED, PROVIDER)
    if body.get("parallel_tool_calls") is False:
        raise TranslationError("parallel_tool_calls false cannot be enforced on Bedrock models", "parallel_tool_calls")
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key):
            raise TranslationError(f"{key} has no Bedrock Converse equivalent", key)


def _messages(raw: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        role = msg.get("role")
        if role in ("system", "developer"):
            system += [{"text": t} for t in chat_parts.texts(msg.get("content"), where) if t]
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), where)
        elif role == "assistant":
            blocks = [{"text": t} for t in chat_parts.texts(msg.get("content"), where) if t]
            for call in msg.get("tool_calls") or []:
                use = {"toolUseId": call.get("id"), "name": (call.get("function") or {}).get("name"),
                       "input": p.arguments(call, where)}
                blocks.append({"toolUse": use})
        elif role == "tool":
            text = "\n".join(chat_parts.texts(msg.get("content"), where))
            blocks = [{"toolResult": {"toolUseId": msg.get("tool_call_id"), "content": [{"text": text}]}}]
            role = "user"  # Converse carries tool results in the user turn
        else:
            raise TranslationError(f"{where}: role {role!r} is not supported", f"{where}.role")
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += blocks  # Converse wants the roles to alternate: merge the turn
        else:
            messages.append({"role": role, "content": blocks})
    return system, messages


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"text": part.get("text", "")})
        elif kind == "image_url":
            at = f"{where}.content[{j}].image_url"
            media_type, data = p.data_url(str((part.get("image_url") or {}).get("url", "")), at, PROVIDER)
            if media_type not in _IMAGE_FORMATS:
                raise TranslationError(f"{at}: image type {media_type!r} is not one Bedrock takes "
                                       f"({', '.join(sorted(set(_IMAGE_FORMATS.values())))})", at)
            # The JSON protocol carries blob members base64-encoded: the data URL's payload as it is.
            blocks.append({"image": {"format": _IMAGE_FORMATS[media_type], "source": {"bytes": data}}})
        else:
            raise TranslationError(f"{where}: content part {kind!r} is not supported for Bedrock models", where)
    return blocks


def _tool_config(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    functions = p.function_tools(body.get("tools"), PROVIDER)
    choice = body.get("tool_choice")
    if choice == "none":
        uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
        if uses_tools:
            raise TranslationError("tool_choice 'none' cannot be honoured on Bedrock models in a conversation with "
                                   "tool calls (Converse has no 'none' and needs the tools for those turns)",
                                   "tool_choice")
        return None
    if not functions:
        if choice is not None:
            raise TranslationError("tool_choice needs tools", "tool_choice")
        return None
    tools = []
    for fn in functions:
        spec: dict[str, Any] = {"name": fn.get("name"),
                                "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        tools.append({"toolSpec": spec})
    out: dict[str, Any] = {"tools": tools}
    if choice == "required":
        out["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
    elif choice == "auto":
        out["toolChoice"] = {"auto": {}}
    elif choice is not None:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    return out
