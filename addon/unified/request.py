"""UnifiedRequest: turns a unified OpenAI chat request the Router sent to a translated family (families.py)
into that provider's native request, before the cache keys on it, the limits count it and the retrier
sends it: everything after this addon sees a native request, and the record keeps it as sent."""

from __future__ import annotations

import json

from mitmproxy import http

from addon import metadata as md
from addon.request_info import read_request
from addon.unified.errors import TranslationError, openai_error_bytes
from addon.unified.response import translation_for
from providers.formats import get_family


class UnifiedRequest:
    def request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        family = md.unified_translated(flow)
        if family is None or flow.response is not None or md.ROUTE_ERROR in meta:
            return
        body = json.loads(flow.request.get_content(strict=False) or b"{}")  # the Router parsed it already
        meta[md.MODEL] = meta[md.UNIFIED]["native_model"]  # until the native request says it (or is refused)
        endpoint = meta[md.UNIFIED].get("endpoint", "chat.completions")
        if endpoint == "embeddings" and isinstance(body, dict):
            meta[md.UNIFIED]["encoding_format"] = body.get("encoding_format", "float")  # answered in that encoding
        try:
            native = translation_for(flow).to_native(body, meta[md.UNIFIED]["native_model"])
        except TranslationError as e:
            self._refuse(flow, str(e), e.param)
            return
        except (AttributeError, TypeError, KeyError, ValueError) as e:
            # A value of the wrong type somewhere (a message that is not an object, ...): the client's mistake.
            kind = "chat completions" if endpoint == "chat.completions" else endpoint
            self._refuse(flow, f"the request is not an OpenAI {kind} request ({type(e).__name__}: {e})")
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        meta[md.UNIFIED_STREAM] = {"stream": bool(body.get("stream")), "include_usage": include_usage}
        flow.request.headers.pop("content-encoding", None)
        flow.request.content = json.dumps(native).encode()
        kind = "chat" if endpoint == "chat.completions" else endpoint
        meta.setdefault(md.CHANGES, []).append(
            f"unified endpoint: OpenAI {kind} request translated to {family} ({meta[md.UNIFIED]['requested_model']!r})")
        # What the Router parses for every other flow, now that the body is the native one.
        info = read_request(get_family(meta[md.FORMAT]), flow.request.path, flow.request)
        meta[md.MODEL] = info.model
        meta[md.STREAM_REQUESTED] = info.stream
        if info.parse_error:
            meta[md.REQUEST_PARSE_ERROR] = info.parse_error

    @staticmethod
    def _refuse(flow: http.HTTPFlow, message: str, param: str | None = None) -> None:
        flow.metadata[md.GATEWAY_ERROR] = f"corral: {message}"
        flow.response = http.Response.make(
            400, openai_error_bytes(f"corral: {message}", "invalid_request_error", param),
            {"content-type": "application/json", "x-corral-error": "bad_request"})
