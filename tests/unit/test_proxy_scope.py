"""Unit tests of the explicit-proxy pieces: which hosts are intercepted, the open-proxy guard,
WebSocket trimming, `corral env` rendering and the mitmweb annotation."""

from __future__ import annotations

import re

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyauth import ProxyAuth
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.annotate import MARK_CACHE_HIT, MARK_ERROR, Annotator, annotation
from addon.cli import env as cli_env
from addon.meter import Meter
from addon.proxy_scope import ProxyScope, open_listeners
from addon.recorder import Recorder
from addon.router import Router
from addon.services import CatalogService, PricingService, parse_intercept_hosts
from providers.catalog import Catalog


def intercepted(regexes: list[str], host_port: str) -> bool:
    """Exactly mitmproxy's allow_hosts test (addons/next_layer.py): re.search, ignoring case."""
    return any(re.search(rx, host_port, re.IGNORECASE) for rx in regexes)


@pytest.mark.parametrize("host_port,expected", [
    ("api.openai.com:443", True),
    ("API.OpenAI.com:443", True),
    ("api.anthropic.com:443", True),
    ("api.openai.com.example.test:443", False),
    ("evil-api.openai.com:443", False),
    ("xapi.openai.com:443", False),
    ("api.openai.com:8443", False),
    ("example.com:443", False),
    ("127.0.0.1:443", False),
])
def test_only_catalog_hosts_are_intercepted(host_port: str, expected: bool) -> None:
    regexes = Catalog.load().intercept_regexes()
    assert all(rx.startswith("^") and rx.endswith("$") for rx in regexes)
    assert intercepted(regexes, host_port) is expected


def test_intercept_hosts_entries() -> None:
    assert parse_intercept_hosts(["openai=^llm\\.corp:443$", " anthropic = ^a\\.b:443$"]) == {
        "openai": ["^llm\\.corp:443$"], "anthropic": ["^a\\.b:443$"]}
    for bad in ("^llm\\.corp:443$", "openai=llm\\.corp:443", "openai=^llm(:443$", "=^a:1$"):
        with pytest.raises(exceptions.OptionsError):
            parse_intercept_hosts([bad])
    catalog = Catalog.load(None, parse_intercept_hosts(["openai=^llm\\.corp:443$"]))
    assert catalog.by_host("llm.corp", 443).name == "openai"
    assert intercepted(catalog.intercept_regexes(), "llm.corp:443")


def test_router_and_scope_agree_on_intercepted_hosts() -> None:
    catalog = CatalogService()
    with taddons.context(ProxyAuth(), catalog, Router(catalog), ProxyScope(catalog)) as tctx:
        tctx.options.listen_host = "127.0.0.1"
        tctx.configure(catalog, corral_gateway_intercept_hosts=["groq=^llm\\.corp:443$"])
        assert "^llm\\.corp:443$" in tctx.options.allow_hosts
        assert "^api\\.openai\\.com:443$" in tctx.options.allow_hosts
        with pytest.raises(exceptions.OptionsError, match="anchored"):
            tctx.configure(catalog, corral_gateway_intercept_hosts=["groq=llm"])


@pytest.mark.parametrize("modes,host,open_", [
    (["regular"], "127.0.0.1", False),
    (["regular"], "localhost", False),
    (["regular"], "::1", False),
    (["regular"], "", True),  # mitmdump's default: every interface
    (["regular"], "0.0.0.0", True),
    (["regular"], "192.168.1.5", True),
    (["regular@0.0.0.0:8080"], "127.0.0.1", True),
    (["socks5"], "0.0.0.0", True),
    (["reverse:http://127.0.0.1:9@0.0.0.0:8081"], "127.0.0.1", False),
])
def test_open_listeners(modes: list[str], host: str, open_: bool) -> None:
    assert bool(open_listeners(modes, host)) is open_


def test_open_proxy_needs_auth_or_explicit_consent() -> None:
    catalog = CatalogService()
    scope = ProxyScope(catalog)
    with taddons.context(ProxyAuth(), catalog, scope) as tctx:
        tctx.options.listen_host = "127.0.0.1"
        with pytest.raises(exceptions.OptionsError, match="beyond loopback"):
            tctx.options.listen_host = "0.0.0.0"
        tctx.configure(scope, corral_gateway_proxyauth="user:secret")
        assert tctx.options.proxyauth == "user:secret"
        tctx.options.listen_host = "0.0.0.0"  # authenticated: fine
        tctx.options.listen_host = "127.0.0.1"
        tctx.configure(scope, corral_gateway_proxyauth="", proxyauth=None)
        tctx.configure(scope, corral_gateway_allow_open_proxy=True)
        tctx.options.listen_host = "0.0.0.0"


def test_upstream_ca_setting(tmp_path) -> None:
    catalog = CatalogService()
    scope = ProxyScope(catalog)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with taddons.context(ProxyAuth(), catalog, scope) as tctx:
        tctx.options.listen_host = "127.0.0.1"
        tctx.configure(scope, corral_gateway_upstream_ca=str(ca))
        assert tctx.options.ssl_verify_upstream_trusted_ca == str(ca)
        with pytest.raises(exceptions.OptionsError, match="no such file"):
            tctx.configure(scope, corral_gateway_upstream_ca=str(tmp_path / "missing.pem"))


def test_websocket_messages_are_trimmed() -> None:
    catalog = CatalogService()
    scope = ProxyScope(catalog)
    with taddons.context(ProxyAuth(), catalog, scope) as tctx:
        tctx.options.listen_host = "127.0.0.1"
        tctx.configure(scope, corral_gateway_websocket_messages=3)
        flow = tflow.twebsocketflow()
        template = flow.websocket.messages[0]
        for i in range(10):
            flow.websocket.messages.append(type(template)(template.type, True, f"m{i}".encode()))
            scope.websocket_message(flow)
        assert [m.content for m in flow.websocket.messages] == [b"m7", b"m8", b"m9"]


@pytest.mark.parametrize("listen,auth,url", [
    ("127.0.0.1:8080", "", "http://127.0.0.1:8080"),
    ("0.0.0.0:9000", "", "http://127.0.0.1:9000"),
    ("[::]:9000", "", "http://[::1]:9000"),
    ("127.0.0.1:8080", "me:p@ss:w", "http://me:p%40ss%3Aw@127.0.0.1:8080"),
    ("127.0.0.1:8080", "@/etc/htpasswd", "http://127.0.0.1:8080"),
])
def test_proxy_url(listen: str, auth: str, url: str) -> None:
    assert cli_env.proxy_url(listen, auth) == url


def test_env_rendering() -> None:
    env = {"SSL_CERT_FILE": "/a b/it's.pem"}
    assert cli_env.render(env, "sh") == "export SSL_CERT_FILE='/a b/it'\"'\"'s.pem'"
    assert cli_env.render(env, "fish") == "set -gx SSL_CERT_FILE '/a b/it'\"'\"'s.pem';"
    assert cli_env.render(env, "powershell") == "$env:SSL_CERT_FILE = '/a b/it''s.pem'"


def llm_flow(status: int = 200, **meta) -> tflow.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.response.status_code = status
    flow.metadata.update({md.PROVIDER: "openai", md.MODEL: "gpt-4o-mini"}, **meta)
    return flow


def test_annotation_text() -> None:
    flow = llm_flow(**{md.USAGE: {"input_tokens": 25, "output_tokens": 32}, md.COST_USD: 0.00002295,
                       md.CACHE: "miss"})
    assert annotation(flow) == ("openai gpt-4o-mini · 25→32 tok · $0.000023 · cache miss", "")
    hit = llm_flow(**{md.USAGE: {"input_tokens": 25, "output_tokens": None}, md.COST_USD: 0.0, md.CACHE: "hit",
                      md.STREAM: True})
    assert annotation(hit) == ("openai gpt-4o-mini · 25→? tok · stream · $0.00 · cache hit", MARK_CACHE_HIT)
    err = llm_flow(429, **{md.RESPONSE_ERROR: "Rate limit reached for gpt-4o-mini " + "x" * 100})
    unpriced = llm_flow(**{md.USAGE: {"input_tokens": 25, "output_tokens": 32}, md.COST_USD: None})
    assert annotation(unpriced)[0] == "openai gpt-4o-mini · 25→32 tok · unpriced"
    comment, mark = annotation(err)
    assert comment.startswith("openai gpt-4o-mini · HTTP 429 · error: Rate limit reached")
    assert len(comment) < 140 and mark == MARK_ERROR


def test_annotator_uses_the_recorders_cost(tmp_path) -> None:
    """End of the chain in one process: the Recorder prices the flow, the Annotator shows that price."""
    pricing = PricingService(CatalogService())
    recorder, annotator = Recorder(pricing), Annotator()
    with taddons.context(pricing, Meter(), recorder, annotator) as tctx:
        tctx.configure(recorder, corral_storage_db=f"sqlite:///{tmp_path / 'x.db'}",
                       corral_prices='{"openai/gpt-4o-mini": {"input": 0.15, "output": 0.60}}')
        flow = llm_flow(**{md.USAGE: {"input_tokens": 25, "output_tokens": 32}, md.MODE: "explicit"})
        recorder.response(flow)
        annotator.response(flow)
        assert flow.metadata[md.COST_USD] == pytest.approx(25 * 0.15e-6 + 32 * 0.60e-6)
        assert flow.comment == "openai gpt-4o-mini · 25→32 tok · $0.000023"
        other = tflow.tflow(resp=True)  # not an LLM flow: left alone
        annotator.response(other)
        assert other.comment == ""
        recorder.done()
