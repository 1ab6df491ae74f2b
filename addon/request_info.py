"""What the router reads from a request body: model and stream flag, whatever its encoding.

JSON bodies go to the family's parser; multipart forms (audio transcriptions, image edits, uploads)
give their ``model`` and ``stream`` fields; gzip/deflate bodies are decoded first (up to a ceiling:
a small bomb must not cost the gateway gigabytes). A body that is not meant to be JSON (a file part,
an SDP offer, octets) has nothing to parse: no parse error, only what the path says.
"""

from __future__ import annotations

import zlib

from mitmproxy import http

from addon import delivery
from providers.formats.base import Family, RequestInfo
from providers.formats.forms import form_fields

# Decoded request bodies larger than this are not parsed (they still go upstream unchanged).
DECODE_CEILING = 64 << 20
# Types a JSON body arrives under: curl -d sends form-urlencoded, some clients text/plain or none.
_JSON_CARRIERS = frozenset({"", "application/x-www-form-urlencoded", "text/plain"})


def _decode(raw: bytes, coding: str) -> tuple[bytes | None, str | None]:
    if coding in ("gzip", "x-gzip"):
        d = zlib.decompressobj(wbits=31)
    elif coding == "deflate":
        d = zlib.decompressobj()
    else:
        return None, None  # br, zstd, ...: left unread, not an error
    try:
        out = d.decompress(raw, DECODE_CEILING + 1)
    except zlib.error as e:
        return None, f"request body is not valid {coding}: {e}"
    if len(out) > DECODE_CEILING:
        return None, f"request body decodes to more than {DECODE_CEILING} bytes: not read"
    return out, None


def read_request(family: Family, path: str, request: http.Request) -> RequestInfo:
    raw = request.raw_content or b""
    path_facts = family.parse_request(path, b"")  # what the path alone says (Azure, Gemini, Bedrock)
    if not raw:
        return path_facts
    coding = request.headers.get("content-encoding", "").strip().lower()
    body = raw
    if coding and coding != "identity":
        decoded, error = _decode(raw, coding)
        if decoded is None:
            path_facts.parse_error = error
            return path_facts
        body = decoded
    mtype = delivery.media_type(request.headers)
    if mtype == "multipart/form-data":
        fields = form_fields(body, request.headers.get("content-type", ""))
        path_facts.model = fields.get("model") or path_facts.model
        path_facts.stream = fields.get("stream", "").strip().lower() == "true"
        return path_facts
    if not (delivery.is_json(mtype) or mtype in _JSON_CARRIERS):
        return path_facts
    return family.parse_request(path, body)
