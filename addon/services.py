"""The services Corral's addons share: the provider catalog, the pricer and the ``[state]`` settings.

``chain.build()`` makes one of each and hands it to the addons that use it; no addon reaches a service
through another addon. Options change a service at run time (``[providers]``, ``[gateway]
intercept_hosts``, ``[prices]``, ``[state]``; also mitmweb's options page), so a service owns its options
the way an addon does: it declares them in ``load`` and rebuilds what it holds in ``configure``, raising
``OptionsError`` for a bad value. That makes each service a member of the chain too, placed right after
ConfigFile and before every addon: the chain configures its members in order, so when an addon's
``configure`` sees ``corral_providers`` in ``updated``, the catalog it holds was already reloaded. Addons
keep the service and read its current object (``catalog.current``) where they use it, never a copy.
Services have no flow hooks and write no metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from mitmproxy import ctx, exceptions

from addon import config, credentials, metadata as md
from addon.state import ON_FAILURE
from providers.catalog import Catalog, CatalogError
from providers.pricing import Pricer, PriceResult, PricingConfigError


class CatalogService:
    """The provider catalog in force: the built-in one with ``[providers.<name>]`` tables and
    ``[gateway] intercept_hosts`` applied. Used by the router, the proxy scope, the retrier and pricing."""

    def __init__(self) -> None:
        self.current: Catalog = Catalog.load()
        self.overridden_upstreams: frozenset[str] = frozenset()  # providers whose upstream the user set

    def load(self, loader) -> None:
        loader.add_option(
            "corral_providers", str, "",
            "JSON of corral.toml's [providers.<name>] tables: upstream overrides and custom providers.",
        )
        loader.add_option(
            "corral_gateway_intercept_hosts", Sequence[str], [],
            "More hosts to intercept in explicit-proxy mode, each \"<provider>=<anchored regex over host:port>\", "
            "e.g. \"openai=^llm\\.corp\\.example:443$\": handled (and recorded) as that provider.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_providers" in updated or "corral_gateway_intercept_hosts" in updated:
            self.current, self.overridden_upstreams = catalog_from_options(
                ctx.options.corral_providers, ctx.options.corral_gateway_intercept_hosts,
            )


def catalog_from_options(providers: str, intercept_hosts: Sequence[str]) -> tuple[Catalog, frozenset[str]]:
    """The catalog for ``corral_providers`` (JSON) and ``corral_gateway_intercept_hosts``, and the names
    of the providers whose upstream it overrides. Raises OptionsError. `corral providers` uses it too."""
    overrides = config.parse_json_option("corral_providers", providers)
    try:
        # api_key: the provider credential gateway keys are swapped for (addon/keys/book.py reads it).
        catalog = Catalog.load(overrides, parse_intercept_hosts(intercept_hosts), allow_keys=("api_key",))
    except CatalogError as e:
        message = str(e)  # most name the table already: "[providers.openia]: ..."
        raise exceptions.OptionsError(message if message.startswith("[") else f"[providers]: {message}") from None
    overridden = frozenset(
        name for name, table in overrides.items() if isinstance(table, Mapping) and "upstream" in table
    )
    return catalog, overridden


def parse_intercept_hosts(entries: Sequence[str]) -> dict[str, list[str]]:
    """``["openai=^llm\\.corp:443$", ...]`` -> {"openai": ["^llm\\.corp:443$"]} (validated)."""
    extra: dict[str, list[str]] = {}
    for entry in entries:
        provider, sep, regex = entry.partition("=")
        provider, regex = provider.strip(), regex.strip()
        if not sep or not provider or not regex:
            raise exceptions.OptionsError(
                f"[gateway] intercept_hosts: {entry!r} must be \"<provider>=<regex>\", "
                "e.g. \"openai=^llm\\\\.corp\\\\.example:443$\""
            )
        if not (regex.startswith("^") and regex.endswith("$")):
            raise exceptions.OptionsError(
                f"[gateway] intercept_hosts: {regex!r} must be anchored (^...$): mitmproxy matches "
                "with re.search, so an open-ended regex would also intercept look-alike hosts"
            )
        try:
            re.compile(regex)
        except re.error as e:
            raise exceptions.OptionsError(f"[gateway] intercept_hosts: {regex!r} is not a regex: {e}") from None
        extra.setdefault(provider, []).append(regex)
    return extra


class PricingService:
    """Prices a flow's usage with ``[prices]`` overrides over genai-prices (providers/pricing.py), for the
    recorder (cost of the exchange) and the cache store (what a later hit saves)."""

    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog  # resolves the flow's provider name (custom providers included)
        self.pricer = Pricer()

    def load(self, loader) -> None:
        loader.add_option(
            "corral_prices", str, "",
            "JSON of corral.toml's [prices.\"<provider>/<model>\"] tables: USD per million tokens.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_prices" in updated:
            try:
                self.pricer = Pricer(config.parse_json_option("corral_prices", ctx.options.corral_prices))
            except PricingConfigError as e:
                raise exceptions.OptionsError(f"[prices]: {e}") from None

    def price(self, meta: Mapping[str, Any]) -> PriceResult:
        """Cost of the exchange a flow's metadata describes (provider, model, usage, wire format)."""
        usage = meta.get(md.USAGE) or {}
        name = meta.get(md.PROVIDER) or ""
        return self.pricer.price(
            self.catalog.current.get(name) or name, meta.get(md.MODEL),
            usage.get("input_tokens"), usage.get("output_tokens"),
            usage.get("cached_input_tokens"), usage.get("cache_creation_input_tokens"),
            family=meta.get(md.FORMAT), reasoning_tokens=usage.get("reasoning_tokens"),
        )


class SharedState:
    """``[state]``: where rate-limit windows and the response cache live, and what happens when that
    store is down (addon/state.py says what each setting means). Read by the rate limiter and the cache."""

    def __init__(self) -> None:
        self.url = "memory://"
        self.on_failure = "open"

    def load(self, loader) -> None:
        loader.add_option(
            "corral_state_url", str, "memory://",
            "Shared state: memory:// (this process) or redis://host:6379 / redis+cluster://h:p,h:p "
            "(rate-limit windows and the response cache shared by every gateway).",
        )
        loader.add_option(
            "corral_state_on_failure", str, "open",
            "Shared state unreachable: open (requests pass, not counted) or closed (503) for rate limits.",
        )

    def configure(self, updated: set[str]) -> None:
        if ctx.options.corral_state_on_failure not in ON_FAILURE:
            raise exceptions.OptionsError("[state] on_failure: expected \"open\" or \"closed\", "
                                          f"got {ctx.options.corral_state_on_failure!r}")
        self.url = ctx.options.corral_state_url
        self.on_failure = ctx.options.corral_state_on_failure


class SecretsService:
    """``[secrets]``: more header and query parameter names whose values are secrets, redacted to
    fingerprints wherever Corral stores or shows a request (addon/credentials.py), like the catalog's."""

    def load(self, loader) -> None:
        loader.add_option(
            "corral_secrets_headers", Sequence[str], [],
            "More header names whose values are secrets (besides authorization, x-api-key, xi-api-key, "
            "x-auth-token, openai-api-key, cookie, ...): stored and shown as fingerprints.",
        )
        loader.add_option(
            "corral_secrets_query", Sequence[str], [],
            "More query parameter names whose values are secrets (besides key, api_key, token, sig, ...).",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_secrets_headers" in updated or "corral_secrets_query" in updated:
            credentials.SECRETS.add(ctx.options.corral_secrets_headers, ctx.options.corral_secrets_query)
