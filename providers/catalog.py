"""The provider catalog: where each vendor lives, how it authenticates, which wire format it speaks.

The data is in ``catalog.toml`` next to this file. Users change it with ``[providers.<name>]``
tables in corral.toml, which have exactly the shape of the built-in entries: any key of a known
provider can be overridden, and a new name with ``custom = true`` adds a custom provider (format
defaults to "openai", prefix to the name, hosts to none). A new name without it is refused with the
nearest known names: ``[providers.openia]`` is far more often a typo than a new vendor, and a typo
would otherwise leave the real provider's traffic going to its default upstream.

Host regexes match ``"host:port"`` and must be anchored (``^...$``): mitmproxy's ``allow_hosts``
uses ``re.search``, so an unanchored ``api\\.openai\\.com`` would also intercept
``api.openai.com.evil.test``.
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FAMILIES = frozenset({"openai", "anthropic", "gemini", "cohere", "bedrock", "ollama"})
AUTH_SCHEMES = frozenset({"bearer", "x-api-key", "x-goog-api-key", "query-key", "api-key", "sigv4", "none"})
PROVIDER_KEYS = frozenset(
    {"prefix", "upstream", "hosts", "auth", "format", "reverse", "per_host", "docs", "note", "pricing_id",
     "path_formats", "include_usage_paths", "custom", "chat_path"}
)
CATALOG_PATH = Path(__file__).with_name("catalog.toml")

# A prefix is one URL path segment; keep it boring so it never needs percent-encoding.
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# Marks a default upstream that only documents the shape (per-resource vendors).
_PLACEHOLDER_MARK = "YOUR-"


class CatalogError(ValueError):
    """The built-in catalog or a user override is invalid."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'openai'?)`` for the closest known names, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def unknown_provider(where: str, name: str, known: Iterable[str]) -> str:
    """One message for every setting that names a provider the catalog does not have."""
    return f"{where}: unknown provider {name!r}{did_you_mean(name, known)}; see `corral providers`"


@dataclass(frozen=True)
class Provider:
    name: str
    prefix: str
    upstream: str
    hosts: tuple[str, ...] = ()
    auth: str = "bearer"
    format: str = "openai"
    reverse: bool = True
    docs: str | None = None
    note: str | None = None
    # None: price under `name`; "": never priced from genai-prices (self-hosted servers).
    pricing_id: str | None = None
    # (path prefix, family), longest prefix first.
    path_formats: tuple[tuple[str, str], ...] = ()
    # Explicit-proxy mode should forward to the host the client asked for (region/resource hosts).
    per_host: bool = False
    # Path endings (query ignored) whose request schema has stream_options.include_usage; None: the
    # family's list from [formats.<family>] in catalog.toml.
    include_usage_paths: tuple[str, ...] | None = None
    # OpenAI-compatible chat completions path for the unified endpoint (None: addon/unified/routing.py's default)
    chat_path: str | None = None
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once: by_host runs for every intercepted connection.
        object.__setattr__(self, "_compiled", tuple(re.compile(rx) for rx in self.hosts))

    @property
    def upstream_is_placeholder(self) -> bool:
        """True while the default upstream is a placeholder that must be overridden (Azure, Databricks)."""
        return _PLACEHOLDER_MARK in self.upstream

    @property
    def genai_prices_id(self) -> str | None:
        """Provider id to use with genai-prices, or None when it must not be priced there."""
        if self.pricing_id == "":
            return None
        return self.pricing_id or self.name

    def upstream_target(self, rest: str) -> tuple[str, str, int, str, str]:
        """(scheme, host, port, path, Host header) for ``rest``: the router sets these on the request
        directly, cheaper than mitmproxy's ``Request.url`` setter, which re-parses the URL (docs/decisions.md)."""
        scheme, host, port, base, host_header = _split_upstream(self.upstream)
        if not rest:
            path = base or "/"
        elif rest.startswith("?"):
            path = (base or "/") + rest
        else:
            path = base + (rest if rest.startswith("/") else "/" + rest)
        return scheme, host, port, path, host_header

    def upstream_url(self, rest: str) -> str:
        """The upstream URL for ``rest`` (path + query after the prefix, forwarded unchanged)."""
        scheme, _host, _port, path, host_header = self.upstream_target(rest)
        return f"{scheme}://{host_header}{path}"

    def format_for(self, path: str) -> str:
        """Family for a request path (the part after the prefix; query ignored)."""
        bare = path.split("?", 1)[0]
        for path_prefix, family in self.path_formats:
            if bare.startswith(path_prefix):
                return family
        return self.format

    def matches_host(self, host_port: str) -> bool:
        return any(rx.fullmatch(host_port) for rx in self._compiled)


class Catalog:
    """All providers, in catalog order (built-ins first, then custom ones)."""

    def __init__(
        self, providers: Iterable[Provider], include_usage_paths: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._providers: tuple[Provider, ...] = tuple(providers)
        # family -> path endings of endpoints that take stream_options.include_usage ([formats.<family>]).
        self.include_usage_paths = {f: tuple(p) for f, p in (include_usage_paths or {}).items()}
        self._by_name = {p.name: p for p in self._providers}
        self._by_prefix: dict[str, Provider] = {}
        for p in self._providers:
            if (other := self._by_prefix.get(p.prefix)) is not None:
                raise CatalogError(f"provider {p.name!r}: prefix {p.prefix!r} is already used by {other.name!r}")
            self._by_prefix[p.prefix] = p

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        extra_hosts: Mapping[str, Sequence[str]] | None = None,
        *,
        allow_keys: Iterable[str] = (),
        path: Path = CATALOG_PATH,
    ) -> Catalog:
        """Built-in catalog with corral.toml ``[providers.<name>]`` tables applied.

        ``overrides`` replaces keys (``hosts`` included); ``extra_hosts`` maps a provider name to
        more regexes appended to its hosts. ``allow_keys`` names extra per-provider keys that the
        caller handles itself (e.g. key settings) and that are therefore ignored here; any other
        unknown key is an error, so a typo such as ``upsteam`` does not pass silently.
        """
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"cannot read built-in catalog {path}: {exc}") from exc
        builtin = data.get("providers", {})
        usage_paths = {
            family: _paths(f"[formats.{family}]", table.get("include_usage_paths", []))
            for family, table in data.get("formats", {}).items()
        }
        ignored = frozenset(allow_keys)
        merged: dict[str, dict[str, Any]] = {name: dict(entry) for name, entry in builtin.items()}
        for name, table in (overrides or {}).items():
            if not isinstance(table, Mapping):
                raise CatalogError(f"provider {name!r}: [providers.{name}] must be a table")
            _reject_unknown_keys(name, table, ignored)
            if name not in builtin and table.get("custom") is not True:
                raise CatalogError(
                    f"[providers.{name}]: unknown provider {name!r}{did_you_mean(name, builtin)}; "
                    "a provider of your own needs custom = true (and an upstream)"
                )
            merged.setdefault(name, {}).update({k: v for k, v in table.items() if k not in ignored})
        for name, regexes in (extra_hosts or {}).items():
            if name not in merged:
                raise CatalogError(unknown_provider("[gateway] intercept_hosts", name, merged))
            merged[name]["hosts"] = [*merged[name].get("hosts", []), *_as_str_list(name, "extra_hosts", regexes)]
        return cls((_build_provider(name, entry) for name, entry in merged.items()), usage_paths)

    # --- lookups ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [p.name for p in self._providers]

    def get(self, name: str) -> Provider | None:
        return self._by_name.get(name)

    def by_prefix(self, segment: str) -> Provider | None:
        return self._by_prefix.get(segment)

    def by_host(self, host: str, port: int) -> Provider | None:
        # DNS names are case-insensitive and may carry a trailing root dot.
        host_port = f"{host.lower().rstrip('.')}:{port}"
        for p in self._providers:
            if p.matches_host(host_port):
                return p
        return None

    def intercept_regexes(self) -> list[str]:
        """Every anchored host regex, for mitmproxy's ``allow_hosts``."""
        return [rx for p in self._providers for rx in p.hosts]

    def format_for(self, provider: Provider | str, path: str) -> str:
        p = self._by_name.get(provider) if isinstance(provider, str) else provider
        if p is None:
            raise KeyError(f"unknown provider {provider!r}")
        return p.format_for(path)

    def takes_include_usage(self, provider: Provider, path: str) -> bool:
        """True when ``path`` (after the prefix, query ignored) is an endpoint whose request schema has
        ``stream_options.include_usage`` (OpenAI chat and legacy completions and their copies): the only
        place Corral may add that option. Assistants runs, /responses and image endpoints have
        ``stream`` but not this option (tests/data/openapi)."""
        family = provider.format_for(path)
        if family != "openai":
            return False  # the injection is OpenAI-shaped; no other family has the option
        bare = path.split("?", 1)[0].rstrip("/")
        paths = provider.include_usage_paths
        if paths is None:
            paths = self.include_usage_paths.get(family, ())
        return any(bare.endswith(ending) for ending in paths)

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    # --- presentation ----------------------------------------------------------------------

    def as_rows(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "prefix": p.prefix, "upstream": p.upstream, "format": p.format, "auth": p.auth,
             "hosts": list(p.hosts)}
            for p in self._providers
        ]

    def markdown_table(self) -> str:
        lines = [
            "| Name | Prefix | Default upstream | Format | Auth | Intercepted hosts |",
            "|---|---|---|---|---|---|",
        ]
        for p in self._providers:
            hosts = "<br>".join(f"`{_md_escape(rx)}`" for rx in p.hosts) or "— (local)"
            fmt = p.format + "".join(f", {fam} on `{pre}`" for pre, fam in p.path_formats)
            mode = "" if p.reverse else " (explicit proxy only)"
            lines.append(f"| {p.name} | `/{p.prefix}/` | {p.upstream}{mode} | {fmt} | {p.auth} | {hosts} |")
        return "\n".join(lines) + "\n"


# --- building and validation ----------------------------------------------------------------


def _build_provider(name: str, entry: Mapping[str, Any]) -> Provider:
    _reject_unknown_keys(name, entry, frozenset())
    _bool(name, "custom", entry.get("custom", False))
    if "upstream" not in entry:
        raise CatalogError(f"provider {name!r}: 'upstream' is required")
    hosts = tuple(_as_str_list(name, "hosts", entry.get("hosts", [])))
    for rx in hosts:
        _check_host_regex(name, rx)
    return Provider(
        name=name,
        prefix=_prefix(name, entry.get("prefix", name)),
        upstream=_upstream(name, entry["upstream"]),
        hosts=hosts,
        auth=_choice(name, "auth", entry.get("auth", "bearer"), AUTH_SCHEMES),
        format=_choice(name, "format", entry.get("format", "openai"), FAMILIES),
        reverse=_bool(name, "reverse", entry.get("reverse", True)),
        per_host=_bool(name, "per_host", entry.get("per_host", False)),
        docs=_opt_str(name, "docs", entry.get("docs")),
        note=_opt_str(name, "note", entry.get("note")),
        pricing_id=_opt_str(name, "pricing_id", entry.get("pricing_id")),
        path_formats=_path_formats(name, entry.get("path_formats", {})),
        include_usage_paths=(
            _paths(f"provider {name!r}", entry["include_usage_paths"]) if "include_usage_paths" in entry else None
        ),
        chat_path=_chat_path(name, entry.get("chat_path")),
    )


def _chat_path(name: str, value: Any) -> str | None:
    if value is not None and not str(_opt_str(name, "chat_path", value)).startswith("/"):
        raise CatalogError(f"provider {name!r}: chat_path must be a path starting with '/'")
    return value


def _reject_unknown_keys(name: str, table: Mapping[str, Any], ignored: frozenset[str]) -> None:
    unknown = sorted(set(table) - PROVIDER_KEYS - ignored)
    if unknown:
        raise CatalogError(
            f"provider {name!r}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(PROVIDER_KEYS))}"
        )


def _prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value):
        raise CatalogError(f"provider {name!r}: prefix {value!r} must be one lowercase path segment ([a-z0-9._-])")
    return value


def _upstream(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CatalogError(f"provider {name!r}: upstream must be a string URL")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise CatalogError(f"provider {name!r}: upstream {value!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CatalogError(f"provider {name!r}: upstream {value!r} must be an http(s) URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CatalogError(f"provider {name!r}: upstream {value!r} must not carry a query, fragment or credentials")
    return value.rstrip("/")


def _check_host_regex(name: str, rx: str) -> None:
    if not (rx.startswith("^") and rx.endswith("$") and not rx.endswith("\\$")):
        raise CatalogError(f"provider {name!r}: host regex {rx!r} must be anchored as ^...$")
    if _has_top_level_alternation(rx):
        # '^a|b$' is anchored on one side only per branch; mitmproxy would search it.
        raise CatalogError(f"provider {name!r}: host regex {rx!r} has a top-level '|': wrap alternatives in (...)")
    if ":" not in rx:
        raise CatalogError(
            f"provider {name!r}: host regex {rx!r} must match 'host:port', e.g. ^api\\.example\\.com:443$"
        )
    try:
        re.compile(rx)
    except re.error as exc:
        raise CatalogError(f"provider {name!r}: host regex {rx!r} does not compile: {exc}") from exc


def _has_top_level_alternation(rx: str) -> bool:
    depth, in_class, escaped = 0, False, False
    for ch in rx:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _path_formats(name: str, value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        pairs = [tuple(v) for v in value]
    else:
        raise CatalogError(f"provider {name!r}: path_formats must be a table {{ \"/v1/\" = \"openai\" }}")
    for path_prefix, family in pairs:
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            raise CatalogError(f"provider {name!r}: path_formats key {path_prefix!r} must start with '/'")
        _choice(name, f"path_formats[{path_prefix!r}]", family, FAMILIES)
    # Longest prefix first so "/v1/messages" wins over "/v1/".
    return tuple(sorted(((str(p), str(f)) for p, f in pairs), key=lambda pf: -len(pf[0])))


def _paths(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) and v.startswith("/") for v in value
    ):
        raise CatalogError(f"{where}: include_usage_paths must be a list of path endings starting with '/'")
    return tuple(v.rstrip("/") for v in value)


def _choice(name: str, key: str, value: Any, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise CatalogError(f"provider {name!r}: {key} {value!r} is not one of {', '.join(sorted(allowed))}")
    return str(value)


def _bool(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CatalogError(f"provider {name!r}: {key} must be true or false, not {value!r}")
    return value


def _opt_str(name: str, key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"provider {name!r}: {key} must be a string")
    return value


def _as_str_list(name: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"provider {name!r}: {key} must be a list of strings")
    return list(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


@functools.lru_cache(maxsize=1024)
def _split_upstream(upstream: str) -> tuple[str, str, int, str, str]:
    parts = urlsplit(upstream.rstrip("/"))
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    return scheme, host, port, parts.path.rstrip("/"), shown if port == default else f"{shown}:{port}"
