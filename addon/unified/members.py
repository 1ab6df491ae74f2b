"""The native requests of a model group's fallback targets, and the switch to the one that answered.

A group's targets may speak different wire families (Anthropic Messages, then an OpenAI-compatible
vendor): the router translates the client's OpenAI request for each target up front (``prepare``), the
retry relay sends a member's own request when it falls back to it, and ``switch`` makes the flow the
answering target's exchange (request, provider, format, model), so the meter parses, the recorder
prices and ``UnifiedResponse`` translates the answer with the family that actually produced it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from addon import metadata as md
from addon.credentials import CREDENTIAL_HEADERS, AmbiguousCredential, credential_fingerprint
from addon.keys.store import PREFIX
from addon.unified import routing
from addon.unified.errors import TranslationError
from addon.unified.families import TRANSLATIONS
from providers.catalog import Catalog

# Client headers a member's request does not inherit: framing and coding follow its own body, Host its
# own upstream, Corral's controls never leave the gateway.
_NOT_INHERITED = frozenset({"host", "content-length", "transfer-encoding", "content-encoding", "connection"})


@dataclass(frozen=True)
class Member:
    requested: str  # "<provider>/<model>" as the group lists it
    provider: str
    model: str  # the provider's own name
    translate: str | None  # family the request was translated to (None: OpenAI-compatible)
    scheme: str
    host: str
    port: int
    path: str  # the upstream path (with the provider's base path)
    host_header: str
    rest: str  # the path after the provider's prefix
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)  # the provider's key among them
    body: bytes = field(repr=False)
    usage_injected: bool = False  # stream_options.include_usage added for the record (the client gets no usage chunk)
    # The client presented a gateway key: KeyCheck checks this target against the key's scope and swaps
    # in its provider credential; a member still awaiting that is never sent (Retrier).
    awaits_key_check: bool = False

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host_header}"

    @property
    def url(self) -> str:
        return self.base + self.path


def prepare(catalog: Catalog, requested: list[str], body: Mapping[str, Any], client_headers: http.Headers,
            keys: Mapping[str, str], forward_client_key: bool,
            inject_usage: bool = True) -> tuple[list[Member], list[str]]:
    """The members for ``requested`` (in order), and a note for each target left out because the
    request cannot be translated for it faithfully. ``inject_usage`` (``[usage] inject``): an
    OpenAI-compatible stream is asked for its usage chunk, as the meter does for a native request."""
    gateway_key = any(PREFIX in client_headers.get(name, "") for name in CREDENTIAL_HEADERS)
    stream = body.get("stream") is True
    asked_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
    members, notes = [], []
    for name in requested:
        target = routing.resolve(catalog, name, stream)  # validated when the group was configured
        provider = target.provider
        injected = False
        try:
            if target.translate is not None:
                native = TRANSLATIONS[target.translate].to_native(copy.deepcopy(dict(body)), target.model)
            else:
                native = {**body, "model": target.model}
                injected = (stream and inject_usage and not asked_usage
                            and catalog.takes_include_usage(provider, target.path))
                if injected:
                    native["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        except (TranslationError, AttributeError, TypeError, KeyError, ValueError) as e:
            notes.append(f"model group: {name} left out, the request cannot be sent to it ({e})")
            continue
        headers = http.Headers([(k, v) for k, v in client_headers.fields
                                if k.lower().decode() not in _NOT_INHERITED and not k.lower().startswith(b"x-corral-")])
        env = keys.get(provider.name)
        routing.place_key(headers, provider, os.environ.get(env) if env else None, forward_client_key)
        scheme, host, port, path, host_header = provider.upstream_target(target.path)
        headers["host"] = host_header
        headers["content-type"] = "application/json"
        members.append(Member(name, provider.name, target.model, target.translate, scheme, host, port, path,
                              host_header, target.path, tuple(headers.fields), json.dumps(native).encode(),
                              injected, gateway_key))
    return members, notes


def switch(flow: http.HTTPFlow, member: Member, catalog: Catalog) -> None:
    """Make ``flow`` the exchange with ``member``, which answered it."""
    meta = flow.metadata
    order = (meta.get(md.UNIFIED) or {}).get("targets") or []
    failed = ", ".join(order[:order.index(member.requested)] if member.requested in order else order[:1])
    req = flow.request
    req.scheme, req.host, req.port, req.path = member.scheme, member.host, member.port, member.path
    req.authority = ""
    req.headers = http.Headers(list(member.headers))
    req.content = member.body
    provider = catalog.get(member.provider)
    assert provider is not None  # the group was validated against this catalog
    meta[md.PROVIDER] = member.provider
    meta[md.FORMAT] = catalog.format_for(provider, member.rest)
    meta[md.MODEL] = member.model  # until the answer names it (the meter)
    meta[md.GATEWAY_PATH] = f"/{provider.prefix}{member.rest}"
    try:
        meta[md.CREDENTIAL] = credential_fingerprint(req.headers.fields, (), provider.auth)
    except AmbiguousCredential:
        meta[md.CREDENTIAL] = None
    meta[md.UNIFIED] = {**meta[md.UNIFIED], "native_model": member.model, "translate": member.translate,
                        "answered_by": member.requested}
    # The first target's request carried these; the member's request never did.
    meta.pop(md.REQUEST_EDIT, None)
    meta.pop(md.INCLUDE_USAGE_INJECTED, None)
    if member.usage_injected:  # the meter drops the usage chunk the client did not ask for
        meta[md.INCLUDE_USAGE_INJECTED] = True
        meta.setdefault(md.CHANGES, []).append(
            f"model group: stream_options.include_usage added to the request to {member.requested} (usage recorded)")
    meta.pop(md.REQUEST_PARAMS, None)
    if meta.get(md.CACHE) in ("miss", "refresh"):
        # The cache key is the first target's native request: another provider's answer is not kept under it.
        meta[md.CACHE] = "skip"
    meta.setdefault(md.CHANGES, []).append(
        f"model group {meta[md.UNIFIED].get('alias')!r}: answered by {member.requested} after {failed} failed "
        "(recorded: its native exchange)")
