"""Every setting that names a provider is checked against the catalog at configure time, with the
nearest names: a typo would otherwise leave a limit, cache rule or retry rule silently unused."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon.cache.backend import ResponseCache
from addon.cache.lookup import CacheLookup
from addon.limits.limiter import LimitBook, RateLimiter
from addon.relay.retrier import Retrier
from addon.services import CatalogService, SharedState

TYPO = r"unknown provider 'opnai' \(did you mean 'openai'\?\); see `corral providers`"


def test_limit_rule_naming_an_unknown_provider_is_refused() -> None:
    catalog = CatalogService()
    limiter = RateLimiter(LimitBook(), SharedState(), catalog)
    with taddons.context(catalog, limiter) as tctx:
        rule = [{"name": "rpm", "provider": "opnai", "requests_per_minute": 5}]
        with pytest.raises(exceptions.OptionsError, match=r"^\[\[limits\]\] 'rpm' provider: " + TYPO):
            tctx.configure(limiter, corral_limits=json.dumps(rule))
        rule[0]["provider"] = "openai"
        tctx.configure(limiter, corral_limits=json.dumps(rule))


def test_limit_rule_naming_a_custom_provider_is_accepted() -> None:
    catalog = CatalogService()
    limiter = RateLimiter(LimitBook(), SharedState(), catalog)
    with taddons.context(catalog, limiter) as tctx:
        tctx.configure(catalog, corral_providers=json.dumps({"mine": {"custom": True, "upstream": "http://x.test"}}))
        tctx.configure(limiter, corral_limits=json.dumps([{"name": "m", "provider": "mine", "requests_per_minute": 5}]))


@pytest.mark.parametrize("key", ["providers", "shared_providers"])
def test_cache_rule_naming_an_unknown_provider_is_refused(key: str) -> None:
    catalog = CatalogService()
    lookup = CacheLookup(ResponseCache(), SharedState(), catalog)
    with taddons.context(catalog, lookup) as tctx:
        with pytest.raises(exceptions.OptionsError, match=rf"^\[cache\] {key}: " + TYPO):
            tctx.configure(lookup, **{f"corral_cache_{key}": ["opnai"]})


def test_retry_and_fallback_rules_suggest_the_nearest_provider() -> None:
    catalog = CatalogService()
    retrier = Retrier(catalog)
    with taddons.context(catalog, retrier) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"^\[retries.providers.opnai\]: " + TYPO):
            tctx.configure(retrier, corral_retries_providers=json.dumps({"opnai": {"attempts": 2}}))
        with pytest.raises(exceptions.OptionsError, match=r"^\[fallbacks.opnai\]: " + TYPO):
            tctx.configure(retrier, corral_fallbacks=json.dumps({"opnai": {"targets": []}}))


def test_misspelt_provider_table_is_an_options_error() -> None:
    catalog = CatalogService()
    with taddons.context(catalog) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"\[providers.openia\]: unknown provider 'openia' "
                                                          r"\(did you mean 'openai'\?\)"):
            tctx.configure(catalog, corral_providers=json.dumps({"openia": {"upstream": "http://x.test"}}))
