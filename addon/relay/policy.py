"""Retry settings (``[retries]``, ``[retries.providers.<name>]``, ``[fallbacks.<name>]``) and the small
pure functions the relay decides with: which outcomes are retryable, how long the provider asked us to
wait (``retry-after-ms``, ``x-ms-retry-after-ms``, ``retry-after``), and how a fallback's API key is put
into the request for the provider's auth style.
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from providers.catalog import unknown_provider

DEFAULT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Per-provider keys of [retries.providers.<name>]; each overrides the [retries] key of the same name.
PROVIDER_KEYS = frozenset({
    "enabled", "attempts", "statuses", "backoff", "backoff_max", "max_retry_after",
    "connect_timeout", "ttfb_timeout", "idle_timeout",
})
TARGET_KEYS = frozenset({"upstream", "api_key_env", "auth"})
# Auth styles a fallback key can be put into (providers/catalog.py AUTH_SCHEMES minus sigv4/none).
KEY_HEADERS = {"bearer": "authorization", "x-api-key": "x-api-key", "api-key": "api-key",
               "x-goog-api-key": "x-goog-api-key"}
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


class PolicyError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Policy:
    """The retry behaviour of one provider."""

    enabled: bool = True
    attempts: int = 3  # upstream attempts per target, the first one included
    statuses: frozenset[int] = DEFAULT_STATUSES
    backoff: float = 0.5  # seconds: base of the exponential backoff (with full jitter)
    backoff_max: float = 8.0
    max_retry_after: float = 60.0  # a provider asking for a longer wait is answered with its own reply
    connect_timeout: float = 10.0
    ttfb_timeout: float = 600.0  # request sent -> response headers
    idle_timeout: float = 120.0  # between two body chunks

    def merged(self, table: Mapping[str, Any], where: str) -> Policy:
        unknown = sorted(set(table) - PROVIDER_KEYS)
        if unknown:
            raise PolicyError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PROVIDER_KEYS))}"
            )
        changes: dict[str, Any] = {}
        for key, value in table.items():
            if key == "statuses":
                changes[key] = parse_statuses(value, where)
            elif key == "enabled":
                if not isinstance(value, bool):
                    raise PolicyError(f"{where}: enabled must be true or false")
                changes[key] = value
            elif key == "attempts":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise PolicyError(f"{where}: attempts must be an integer >= 1")
                changes[key] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise PolicyError(f"{where}: {key} must be a number of seconds >= 0")
                changes[key] = float(value)
        policy = dataclasses.replace(self, **changes)
        for key in ("connect_timeout", "ttfb_timeout", "idle_timeout"):
            if getattr(policy, key) <= 0:
                raise PolicyError(f"{where}: {key} must be > 0 seconds")
        return policy


def parse_statuses(value: Any, where: str) -> frozenset[int]:
    """``"429, 503"`` or ``[429, 503]`` -> {429, 503}."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        statuses = frozenset(int(str(s).strip()) for s in items if str(s).strip())
    except (TypeError, ValueError):
        raise PolicyError(f"{where}: statuses must be HTTP status codes, e.g. \"429,503\"") from None
    if any(not 100 <= s <= 599 for s in statuses):
        raise PolicyError(f"{where}: statuses must be between 100 and 599")
    return statuses


@dataclasses.dataclass(frozen=True)
class Target:
    """Where an attempt goes: a base URL and, for fallbacks, the key and auth style to use there."""

    upstream: str  # scheme://host[:port][/base path]
    api_key: str | None = dataclasses.field(default=None, repr=False)  # never logged or recorded
    auth: str | None = None
    # A model group's member (addon/unified/members.py): its own URL, headers and body, in its own wire family.
    member: Any = dataclasses.field(default=None, repr=False)


def parse_fallbacks(tables: Mapping[str, Any], auth_of: Mapping[str, str]) -> dict[str, tuple[Target, ...]]:
    """``[fallbacks.<provider>] targets = [{upstream, api_key_env?, auth?}, ...]``."""
    out: dict[str, tuple[Target, ...]] = {}
    for provider, table in tables.items():
        where = f"[fallbacks.{provider}]"
        if provider not in auth_of:
            raise PolicyError(unknown_provider(where, provider, auth_of))
        if not isinstance(table, Mapping) or set(table) - {"targets"} or not isinstance(table.get("targets"), list):
            raise PolicyError(
                f"{where}: expected targets = [{{upstream = \"https://...\", api_key_env = \"VAR\"}}, ...]"
            )
        targets = []
        for n, entry in enumerate(table["targets"], 1):
            here = f"{where} target {n}"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("upstream"), str):
                raise PolicyError(f"{here}: needs upstream = \"https://...\"")
            unknown = sorted(set(entry) - TARGET_KEYS)
            if unknown:
                raise PolicyError(f"{here}: unknown key(s) {', '.join(unknown)}")
            url = urllib.parse.urlsplit(entry["upstream"])
            if url.scheme not in ("http", "https") or not url.hostname:
                raise PolicyError(f"{here}: upstream must be an http(s) URL, got {entry['upstream']!r}")
            auth = entry.get("auth", auth_of[provider])
            key = None
            if "api_key_env" in entry:
                var = entry["api_key_env"]
                key = os.environ.get(var) if isinstance(var, str) else None
                if not key:
                    raise PolicyError(f"{here}: environment variable {var!r} (api_key_env) is not set")
                if auth not in KEY_HEADERS and auth != "query-key":
                    raise PolicyError(f"{here}: cannot put an API key into auth style {auth!r}")
            targets.append(Target(entry["upstream"].rstrip("/"), key, auth))
        out[provider] = tuple(targets)
    return out


def target_url(primary_base: str, url: str, target: Target) -> str:
    """``url`` (which starts with ``primary_base``) moved onto ``target.upstream``."""
    if url.startswith(primary_base):
        rest = url[len(primary_base):]
    else:
        rest = urllib.parse.urlsplit(url)._replace(scheme="", netloc="").geturl()
    url = target.upstream + rest
    if target.api_key and target.auth == "query-key":
        parts = urllib.parse.urlsplit(url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
        query.append(("key", target.api_key))
        url = parts._replace(query=urllib.parse.urlencode(query)).geturl()
    return url


def target_headers(headers: list[tuple[bytes, bytes]], target: Target) -> list[tuple[bytes, bytes]]:
    """Request headers for ``target``: Host follows the target; its key replaces the client's."""
    host = urllib.parse.urlsplit(target.upstream).netloc.encode()
    out = [(k, host if k.lower() == b"host" else v) for k, v in headers]
    if target.api_key and target.auth in KEY_HEADERS:
        out = [(k, v) for k, v in out if k.lower().decode() not in CREDENTIAL_HEADERS]
        name = KEY_HEADERS[target.auth]
        value = f"Bearer {target.api_key}" if target.auth == "bearer" else target.api_key
        out.append((name.encode(), value.encode()))
    return out


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """The wait the provider asked for, from this very response (never a remembered one).

    ``retry-after-ms`` and ``x-ms-retry-after-ms`` (milliseconds, OpenAI/Azure) win over
    ``retry-after`` (seconds, or an HTTP date). Unparseable or negative values count as absent.
    """
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                ms = float(value)
            except ValueError:
                continue
            if ms >= 0:
                return ms / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
