"""addon/services.py and chain.build(): services are built once, handed to the addons that use them,
and follow option changes, so every user sees the same, current object."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyauth import ProxyAuth
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.chain import build
from addon.proxy_scope import ProxyScope
from addon.relay.retrier import Retrier
from addon.router import Router
from addon.services import CatalogService, PricingService, SharedState

CUSTOM = json.dumps({
    "openai": {"upstream": "http://127.0.0.1:9"},
    "mylocal": {"custom": True, "upstream": "http://127.0.0.1:9000", "pricing_id": "",
                "hosts": ["^llm\\.mylocal:443$"]},
})


def _hooks(obj: object) -> bool:
    return any(hasattr(obj, h) for h in ("requestheaders", "request", "responseheaders", "response", "error"))


def test_no_addon_holds_another_addon() -> None:
    children = build()
    addons = [c for c in children if _hooks(c)]
    for child in children:
        held = [v for v in vars(child).values() if any(v is a for a in addons)]
        assert not held, f"{type(child).__name__} holds the addon {type(held[0]).__name__}"


def test_each_service_is_built_once_and_shared() -> None:
    children = build()
    by_type = {type(c).__name__: c for c in children}
    catalog, pricing, state = by_type["CatalogService"], by_type["PricingService"], by_type["SharedState"]
    assert by_type["Router"].catalog is catalog and by_type["ProxyScope"].catalog is catalog
    assert by_type["Retrier"].catalog is catalog and pricing.catalog is catalog
    assert by_type["Recorder"].pricing is pricing and by_type["CacheStore"].pricing is pricing
    assert by_type["CacheLookup"].shared_state is state and by_type["RateLimiter"].shared_state is state
    assert by_type["CacheLookup"].cache is by_type["CacheStore"].cache
    assert by_type["RateLimiter"].book is by_type["RateLimitAccounting"].book
    # Services come before every addon, so they are configured before the addons that read them.
    first_addon = next(i for i, c in enumerate(children) if _hooks(c))
    assert max(children.index(s) for s in (catalog, pricing, state)) < first_addon


def test_a_reloaded_catalog_reaches_every_user() -> None:
    catalog = CatalogService()
    router, scope, retrier = Router(catalog), ProxyScope(catalog), Retrier(catalog)
    with taddons.context(ProxyAuth(), catalog, router, retrier, scope) as tctx:
        tctx.options.listen_host = "127.0.0.1"
        tctx.options.update(corral_providers=CUSTOM,
                            corral_retries_providers=json.dumps({"mylocal": {"attempts": 1}}))
        assert catalog.overridden_upstreams == {"openai", "mylocal"}
        assert "^llm\\.mylocal:443$" in tctx.options.allow_hosts  # the proxy scope's view
        assert retrier.policies["mylocal"].attempts == 1  # the retrier knows the new provider
        flow = tflow.tflow()
        flow.request.host, flow.request.port, flow.request.path = "api.openai.com", 443, "/v1/chat/completions"
        flow.client_conn.tls = True  # inside an intercepted tunnel: explicit mode
        asyncio.run(router.requestheaders(flow))
        assert flow.metadata[md.UPSTREAM] == "http://127.0.0.1:9"  # the router's view: overridden upstream
        with pytest.raises(exceptions.OptionsError, match="intercept_hosts"):
            tctx.options.update(corral_gateway_intercept_hosts=["nosuch=^x:1$"])


def test_pricing_resolves_providers_from_the_current_catalog_and_applies_prices() -> None:
    catalog = CatalogService()
    pricing = PricingService(catalog)
    meta = {md.PROVIDER: "mylocal", md.MODEL: "gpt-4o-mini", md.FORMAT: "openai",
            md.USAGE: {"input_tokens": 1000, "output_tokens": 100}}
    with taddons.context(catalog, pricing) as tctx:
        assert not pricing.price(meta).unpriced  # unknown name: priced by the model alone
        tctx.options.update(corral_providers=CUSTOM)
        assert pricing.price(meta).unpriced  # now a self-hosted provider (pricing_id = ""): no price
        tctx.options.update(corral_prices=json.dumps({"mylocal/gpt-4o-mini": {"input": 1.0, "output": 2.0}}))
        assert pricing.price(meta).cost_usd == pytest.approx(1000e-6 + 200e-6)
        with pytest.raises(exceptions.OptionsError, match=r"\[prices\]"):  # refused, not logged and ignored
            tctx.options.update(corral_prices=json.dumps({"gpt-4o-mini": {"input": -1, "output": 2.0}}))


def test_shared_state_settings() -> None:
    state = SharedState()
    with taddons.context(state) as tctx:
        tctx.options.update(corral_state_url="redis://127.0.0.1:6399", corral_state_on_failure="closed")
        assert (state.url, state.on_failure) == ("redis://127.0.0.1:6399", "closed")
        with pytest.raises(exceptions.OptionsError, match="on_failure"):
            tctx.options.update(corral_state_on_failure="maybe")
