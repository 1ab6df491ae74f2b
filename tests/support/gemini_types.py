"""A Gemini REST request body checked against google-genai's own types and request builder.

Each piece is validated by the SDK's pydantic models (camelCase aliases, extra keys refused, base64
checked), then rebuilt into the REST body by the SDK's own ``generate_content`` code path
(``_GenerateContentParameters_to_mldev``): the body must be what google-genai itself would send for
the same contents and config. Key spelling is compared camelCase (the SDK sends nested keys snake_case,
which the REST API also takes), bytes base64 url-safe (as the SDK encodes them; the API takes both
alphabets).
"""

from __future__ import annotations

import re
from typing import Any

from google.genai import _common, models, types
from google.genai._api_client import BaseApiClient

_URLSAFE = str.maketrans("+/", "-_")
_TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


_BYTES = {"data", "thoughtSignature"}


def _camel(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel(v) for k, v in obj.items()}
        return {k: v.translate(_URLSAFE) if k in _BYTES and isinstance(v, str) else v for k, v in out.items()}
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def sdk_rebuilt(body: dict[str, Any], model: str) -> dict[str, Any]:
    """``body`` as google-genai builds it from the same typed request (raises on anything its types refuse)."""
    unknown = set(body) - _TOP_LEVEL
    assert not unknown, f"keys generateContent does not take: {unknown}"
    config = types.GenerateContentConfig.model_validate(
        {**body.get("generationConfig", {}), **{k: body[k] for k in ("systemInstruction", "tools", "toolConfig")
                                                 if k in body}})
    contents = [types.Content.model_validate(c) for c in body["contents"]]
    params = types._GenerateContentParameters(model=model, contents=contents, config=config)
    rebuilt = models._GenerateContentParameters_to_mldev(BaseApiClient(api_key="unused"), params, None, params)
    rebuilt.pop("_url", None)
    rebuilt.pop("config", None)
    if not rebuilt.get("generationConfig"):
        rebuilt.pop("generationConfig", None)  # the SDK sends an empty one
    return _camel(_common.encode_unserializable_types(_common.convert_to_dict(rebuilt)))


def assert_valid_request(body: dict[str, Any], model: str) -> None:
    assert _camel(body) == sdk_rebuilt(body, model)
