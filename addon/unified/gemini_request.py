"""OpenAI chat completions request -> Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` request.

Rules for what Gemini cannot honour (never silently changed in meaning):
- dropped: ``store``, ``service_tier``, ``metadata``, ``user`` (Gemini has no such fields),
  ``stream_options`` (Gemini's stream always carries usage; ``include_usage`` decides only whether the
  client gets the usage chunk), ``n: 1``, ``parallel_tool_calls: true``, ``logprobs: false``,
  ``response_format: {"type": "text"}``, a function's ``strict`` and an image's ``detail`` (Gemini has
  neither: its JSON schema output is always constrained, image resolution is per request);
- refused with a 400 naming the parameter: ``n > 1``, ``parallel_tool_calls: false`` (Gemini cannot be
  held to one call), ``logprobs``/``top_logprobs``, ``logit_bias``, tools other than functions, image
  URLs that are neither ``data:`` nor ``http(s)``, and any parameter not listed here;
- ``reasoning_effort`` becomes ``thinkingConfig`` with Google's own budgets for it (the table of its
  OpenAI compatibility layer: none 0, minimal/low 1024, medium 8192, high 24576) and thought summaries.
JSON schemas (tool parameters, ``response_format``) go as ``parametersJsonSchema`` /
``responseJsonSchema``: Gemini takes JSON Schema there as it is, nothing is lost converting it.
"""

from __future__ import annotations

import json
import mimetypes
from typing import Any
from urllib.parse import quote

from addon.unified import chat_parts
from addon.unified.errors import TranslationError

_DROPPED = frozenset({"store", "service_tier", "metadata", "user", "stream_options"})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "seed", "tools", "tool_choice", "parallel_tool_calls", "n", "response_format", "logprobs",
    "frequency_penalty", "presence_penalty", "reasoning_effort",
})
# https://ai.google.dev/gemini-api/docs/openai#thinking: reasoning_effort -> thinking budget.
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
# OpenAI's input_audio formats -> media types.
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
# The signature Gemini 3 wants back with each function call, carried where Google's OpenAI layer puts it.
SIGNATURE_KEYS = ("extra_content", "google", "thought_signature")


def path(model: str, stream: bool) -> str:
    name = quote(model, safe="")
    if stream:
        return f"/v1beta/models/{name}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{name}:generateContent"


def to_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Gemini request body for an OpenAI chat completions ``body`` (the model goes in the path)."""
    _refuse_unsupported(body)
    system, contents = _contents(body["messages"])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    if body.get("tools"):
        out["tools"] = [{"functionDeclarations": [_function(t) for t in body["tools"]]}]
    choice = _tool_config(body.get("tool_choice"))
    if choice is not None:
        out["toolConfig"] = choice
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for key in body:
        if key not in _HANDLED and key not in _DROPPED and body[key] is not None:
            raise TranslationError(f"parameter {key!r} is not supported for Gemini models by the unified "
                                   "endpoint", key)
    if (body.get("n") or 1) != 1:
        raise TranslationError("n other than 1 is not supported for Gemini models", "n")
    if body.get("parallel_tool_calls") is False:
        raise TranslationError("parallel_tool_calls: false has no Gemini equivalent (Gemini may answer with "
                               "several calls)", "parallel_tool_calls")
    if body.get("logprobs"):
        raise TranslationError("logprobs are not supported for Gemini models by the unified endpoint", "logprobs")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in THINKING_BUDGETS:
        raise TranslationError(f"reasoning_effort {effort!r} is not supported for Gemini models",
                               "reasoning_effort")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise TranslationError("messages must be a non-empty list", "messages")


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_name, gemini_name in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                                     ("frequency_penalty", "frequencyPenalty"),
                                     ("presence_penalty", "presencePenalty")):
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    kind = fmt.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        config["responseMimeType"] = "application/json"
        if schema is not None:
            config["responseJsonSchema"] = schema
    elif kind not in (None, "text"):
        raise TranslationError(f"response_format {kind!r} is not supported for Gemini models", "response_format")
    effort = body.get("reasoning_effort")
    if effort is not None:
        budget = THINKING_BUDGETS[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def _contents(raw: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id -> function name (a functionResponse names its function)
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        role = msg.get("role")
        if role in ("system", "developer"):
            system += chat_parts.texts(msg.get("content"), where)
            continue
        if role == "user":
            parts, role = _user_parts(msg.get("content"), where), "user"
        elif role == "assistant":
            parts, role = _model_parts(msg, where, call_names), "model"
        elif role == "tool":
            parts, role = [_function_response(msg, where, call_names)], "user"
        else:
            raise TranslationError(f"{where}: role {role!r} is not supported", f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts  # parallel tool results answer one model turn together
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise TranslationError("messages need at least one user or assistant message", "messages")
    return system, contents


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            parts.append(_media((part.get("image_url") or {}).get("url"), f"{where}.content[{j}].image_url"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            media_type = _AUDIO_TYPES.get(str(audio.get("format")))
            if media_type is None:
                raise TranslationError(f"{where}: audio format {audio.get('format')!r} is not supported",
                                       f"{where}.content[{j}].input_audio")
            parts.append({"inlineData": {"mimeType": media_type, "data": audio.get("data", "")}})
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            parts.append(_media(part["file"]["file_data"], f"{where}.content[{j}].file"))
        else:
            raise TranslationError(f"{where}: content part {kind!r} is not supported for Gemini models",
                                   f"{where}.content[{j}]")
    return parts


def _media(url: Any, where: str) -> dict[str, Any]:
    """A ``data:`` URL is sent inline; an http(s) URL as ``fileData`` (Gemini fetches it, and answers with
    its own 400 when it cannot), with the media type its extension names, when it names one."""
    url = str(url or "")
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media_type, _, coding = head[5:].partition(";")
        if not sep or coding != "base64" or not media_type:
            raise TranslationError(f"{where}: a data: URL must be base64 with a media type", where)
        return {"inlineData": {"mimeType": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        file_data = {"fileUri": url}
        guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
        if guessed:
            file_data["mimeType"] = guessed
        return {"fileData": file_data}
    raise TranslationError(f"{where}: only data: and http(s) URLs are supported for Gemini models", where)


def _model_parts(msg: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": t} for t in chat_parts.texts(msg.get("content"), where) if t]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            raise TranslationError(f"{where}: tool call arguments are not JSON", f"{where}.tool_calls") from None
        if not isinstance(args, dict):
            raise TranslationError(f"{where}: tool call arguments must be a JSON object", f"{where}.tool_calls")
        call_names[str(call.get("id"))] = str(fn.get("name"))
        part: dict[str, Any] = {"functionCall": {"name": fn.get("name"), "args": args}}
        signature = _dig(call, *SIGNATURE_KEYS)
        if isinstance(signature, str):
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(msg: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    """A tool result names its function (Gemini pairs results by name and order). A JSON object result is
    the response itself; anything else goes under ``output``, the key Gemini reads a function's output from."""
    name = call_names.get(str(msg.get("tool_call_id")))
    if name is None:
        raise TranslationError(f"{where}: tool_call_id {msg.get('tool_call_id')!r} answers no earlier tool call",
                               f"{where}.tool_call_id")
    text = "\n".join(chat_parts.texts(msg.get("content"), where))
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise TranslationError(f"tool type {tool.get('type')!r} is not supported for Gemini models", "tools")
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("parameters"):
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        mode: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        mode = {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    return {"functionCallingConfig": mode}


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
