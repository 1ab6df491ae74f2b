"""What makes two requests "the same" for the response cache, and who decides a flow is cached.

The key is exact: provider, method, path with its query (secret parameters such as Gemini's ``key=``
left out, the rest sorted), the JSON body in canonical form (sorted keys, no whitespace, so key order
and formatting do not matter), and the credential's fingerprint, so two API keys never share an entry.
A provider listed in ``shared_providers`` uses one namespace for all credentials instead. A request's
``x-corral-cache-namespace`` header seeds the key too. ``stream: true`` and ``stream: false`` are part
of the body, so they are separate entries.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import urllib.parse

from mitmproxy import http

from addon import metadata as md
from addon.credentials import is_secret_query

HEADER = "x-corral-cache"
TTL_HEADER = "x-corral-cache-ttl"
NAMESPACE_HEADER = "x-corral-cache-namespace"
MODES = ("use", "skip", "refresh")


@dataclasses.dataclass
class Policy:
    enabled: bool = False
    providers: frozenset[str] = frozenset()
    models: tuple[str, ...] = ()
    shared_providers: frozenset[str] = frozenset()

    def applies(self, provider: str, model: str | None) -> bool:
        if self.enabled or provider in self.providers:
            return True
        if not model:
            return False
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


@dataclasses.dataclass
class Directives:
    """What the request itself asks of the cache (headers)."""

    mode: str | None = None  # use / skip / refresh, None when not asked
    ttl: float | None = None
    namespace: str = ""
    error: str | None = None


def directives(headers: http.Headers) -> Directives:
    d = Directives()
    # One pass over the raw header fields: most requests carry none of these, and Headers.get
    # (case-insensitive scan) per name would cost more than the rest of a cache hit.
    found: dict[bytes, str] = {}
    for name, value in headers.fields:
        lower = name.lower()
        if lower.startswith(b"x-corral-cache") or lower == b"cache-control":
            found[lower] = value.decode("latin-1")
    if not found:
        return d
    mode = found.get(HEADER.encode(), "").strip().lower()
    if mode:
        if mode in MODES:
            d.mode = mode
        else:
            d.error = f"{HEADER}: unknown value {mode[:32]!r} (use, skip or refresh); ignored"
    if "no-store" in found.get(b"cache-control", "").lower() and d.mode != "refresh":
        d.mode = "skip"
    ttl = found.get(TTL_HEADER.encode(), "").strip()
    if ttl:
        try:
            d.ttl = float(ttl)
            if not d.ttl >= 0:  # also rejects NaN
                raise ValueError
        except ValueError:
            d.ttl, d.error = None, f"{TTL_HEADER}: not a number of seconds: {ttl[:32]!r}; ignored"
    d.namespace = found.get(NAMESPACE_HEADER.encode(), "")
    return d


def canonical_body(body: bytes) -> bytes:
    """Sorted keys, no whitespace; a body that is not JSON stands for itself."""
    if not body:
        return b""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return body
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, RecursionError, UnicodeEncodeError):
        return body


def canonical_path(path: str) -> str:
    base, sep, query = path.partition("?")
    if not sep:
        return base
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    kept = sorted((k, v) for k, v in pairs if not is_secret_query(k))
    return base + ("?" + urllib.parse.urlencode(kept) if kept else "")


def cache_key(flow: http.HTTPFlow, policy: Policy, namespace: str = "") -> str:
    provider = flow.metadata.get(md.PROVIDER) or ""
    owner = "shared" if provider in policy.shared_providers else f"cred:{flow.metadata.get(md.CREDENTIAL) or '-'}"
    h = hashlib.sha256()
    for part in (owner, namespace, provider, flow.request.method, canonical_path(flow.request.path)):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    h.update(canonical_body(flow.request.raw_content or b""))
    return h.hexdigest()
