"""Credentials never reach the database or the logs: they are replaced by a short fingerprint.

The fingerprint is the first 12 hex digits of SHA-256 over the secret, enough to tell keys apart
(cache isolation, per-key limits, the viewer) and useless for recovering them.
"""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse
from collections.abc import Iterable

# Request and response headers whose values are secrets (lower-case names); [secrets] headers adds more.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-amz-security-token",
        "cookie",
        "set-cookie",
        "x-corral-token",
        "xi-api-key",  # ElevenLabs
        "x-auth-token",
        "openai-api-key",
    }
)
# Headers that carry the client's API credential, in the order they are looked for.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
# Query parameters that carry secrets (Gemini `key=`, Azure SAS `sig=`, ...); [secrets] query adds more.
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token", "sig",
                               "x-amz-security-token", "x-amz-signature", "x-amz-credential"})


class SecretNames:
    """The header and query parameter names redacted in force: the defaults above plus ``[secrets]``
    (set by services.SecretsService). Module state, as redaction runs in free functions everywhere a
    header or URL is stored or shown; every process configures its own."""

    def __init__(self) -> None:
        self.headers = SECRET_HEADERS
        self.query = SECRET_QUERY_KEYS
        self._query_re = _query_pattern(self.query)

    def add(self, headers: Iterable[str], query: Iterable[str]) -> None:
        self.headers = SECRET_HEADERS | {h.strip().lower() for h in headers if h.strip()}
        self.query = SECRET_QUERY_KEYS | {q.strip().lower() for q in query if q.strip()}
        self._query_re = _query_pattern(self.query)


def _query_pattern(names: frozenset[str]) -> re.Pattern[str]:
    # `&` and `;` both separate parameters (some servers still split on `;`): a value ends at either.
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(^|[&;])((?:{alternatives})=)([^&;#]*)", re.IGNORECASE)


SECRETS = SecretNames()


def is_secret_header(name: str) -> bool:
    return name.lower() in SECRETS.headers


def is_secret_query(name: str) -> bool:
    return name.lower() in SECRETS.query


_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)")


@functools.lru_cache(maxsize=4096)  # the same key is fingerprinted several times per flow
def fingerprint(secret: str) -> str:
    return "fp_" + hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _secret_part(header_value: str) -> str:
    """The secret inside a header value: the token of `Bearer <token>`, the access key id of a
    SigV4 `Authorization` (the signature changes on every request; the key id does not)."""
    value = header_value.strip()
    if value.startswith("AWS4-HMAC-SHA256"):
        match = _SIGV4_CREDENTIAL.search(value)
        return match.group(1) if match else value
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() in ("bearer", "basic", "token") else value


class AmbiguousCredential(ValueError):
    """The request names its credential twice (two ``Authorization`` headers, two ``key=`` ...)."""


# Where the upstream reads the credential for each catalog auth style, in the order it reads it.
# The credential Corral counts (limits, cache namespace, attribution) is the one that authenticates:
# a header the upstream ignores (a decoy ``x-api-key`` beside Gemini's ``?key=``) never counts.
AUTH_SOURCES: dict[str, tuple[str, ...]] = {
    "bearer": ("authorization",),
    "sigv4": ("authorization",),
    "x-api-key": ("x-api-key", "authorization"),  # Anthropic: an API key, else an OAuth bearer token
    "api-key": ("api-key", "authorization"),  # Azure: a resource key, else an Entra ID bearer token
    "x-goog-api-key": ("x-goog-api-key", "?key"),
    "query-key": ("?key", "x-goog-api-key"),
}
# A provider without authentication of its own (self-hosted): whatever credential the client sends.
ANY_SOURCE = (*CREDENTIAL_HEADERS, "?key", "?api_key", "?apikey", "?api-key", "?access_token", "?token")


def credential_fingerprint(
    fields: Iterable[tuple[bytes, bytes]], query: Iterable[tuple[str, str]] = (), auth: str = "none",
) -> str | None:
    """Fingerprint of the credential the upstream authenticates the request with (``fields``: the raw
    header fields; ``auth``: the provider's catalog auth style), or None when there is none. Raises
    AmbiguousCredential when a place the upstream reads it from occurs twice."""
    sources = AUTH_SOURCES.get(auth, ANY_SOURCE)
    found: dict[str, str] = {}
    for raw_name, raw_value in fields:  # one pass: Headers.items() is quadratic in the field count
        name = raw_name.decode("latin-1").lower()
        if name in CREDENTIAL_HEADERS or name in sources:
            if name in found:
                raise AmbiguousCredential(f"corral: the request carries {name!r} more than once")
            found[name] = raw_value.decode("utf-8", "surrogateescape")
    for key, value in query:
        name = "?" + key.lower()
        if name in sources or name[1:] in SECRETS.query:
            if name in found:
                raise AmbiguousCredential(f"corral: the query string carries {key!r} more than once")
            found[name] = value
    for name in sources:
        if secret := found.get(name):
            return fingerprint(secret if name.startswith("?") else _secret_part(secret))
    return None


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header list with every secret value replaced by its fingerprint."""
    secret = SECRETS.headers
    return [
        (name, fingerprint(_secret_part(value)) if name.lower() in secret else value)
        for name, value in headers
    ]


def redact_url_path(path: str) -> str:
    """Path with query string whose secret parameters (after ``&`` or ``;``) are replaced by
    fingerprints; everything else stays as it was written."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    return base + "?" + SECRETS._query_re.sub(
        lambda m: m.group(1) + m.group(2) + fingerprint(urllib.parse.unquote_plus(m.group(3))), query
    )
