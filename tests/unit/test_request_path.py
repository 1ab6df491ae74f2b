"""The request path's guards in process: who the gateway is, loops, header caps, credentials, secrets."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.net.http import http1
from mitmproxy.test import taddons, tflow

from addon import credentials, netaddr, request_form
from addon.credentials import AmbiguousCredential, credential_fingerprint, fingerprint, redact_headers, redact_url_path
from addon.request_guard import HOP_HEADER, RequestGuard
from addon.router import Router
from addon.services import CatalogService, SecretsService
from providers.formats import FAMILIES
from tests.support.reliability import reliability


@pytest.mark.parametrize("spelling", ["127.1", "0x7f000001", "2130706433", "017700000001", "[::ffff:127.0.0.1]",
                                      "::1", "[::1]", "0.0.0.0", "::", "127.9.8.7"])
def test_every_spelling_of_this_machine_is_local(spelling: str) -> None:
    ip = netaddr.ip_literal(spelling)
    assert ip is not None and netaddr.is_local_address(ip)


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1", "8.8.8.8"])
def test_other_addresses_are_not_local(host: str) -> None:
    ip = netaddr.ip_literal(host)
    assert ip is not None and not netaddr.is_local_address(ip)


@pytest.mark.parametrize("host", ["localhost", "api.openai.com", "0x7g", "1.2.3.4.5", ""])
def test_names_are_not_ip_literals(host: str) -> None:
    assert netaddr.ip_literal(host) is None


def origin_form(path: str, port: int = 8080) -> tflow.HTTPFlow:
    request_form.install()
    flow = tflow.tflow()
    flow.request = http1.read_request_head([b"POST " + path.encode() + b" HTTP/1.1", b"Host: 10.1.2.3:9"])
    flow.request.host, flow.request.port = "10.1.2.3", 9  # what mitmproxy takes from the Host header
    flow.server_conn.address = None  # no CONNECT tunnel: a request to the gateway itself
    flow.client_conn.sockname = ("127.0.0.1", port)
    return flow


def test_the_catalog_default_at_the_gateways_own_port_starts_and_answers_508() -> None:
    # llamacpp's default upstream 127.0.0.1:8080 is Corral's default listen address: the default
    # configuration must start, and a request routed there must not loop.
    catalog = CatalogService()
    router = Router(catalog)
    with taddons.context(catalog, router) as tctx:
        tctx.options.listen_port = 8080
        tctx.configure(router)
        flow = origin_form("/llamacpp/v1/chat/completions")
        asyncio.run(router.requestheaders(flow))
        assert flow.response is not None and flow.response.status_code == 508
        assert "upstream" in json.loads(flow.response.content)["error"]["message"]
        # The Host header named another server: it chose nothing.
        flow = origin_form("/nope/x")
        asyncio.run(router.requestheaders(flow))
        assert flow.request.host == "10.1.2.3" and flow.metadata["corral.route_error"].startswith("corral: unknown")


def test_a_configured_upstream_at_the_gateways_own_address_is_refused() -> None:
    catalog = CatalogService()
    router = Router(catalog)
    with taddons.context(catalog, router) as tctx:
        tctx.options.listen_port = 8399
        with pytest.raises(exceptions.OptionsError, match=r"\[providers.llamacpp\] .* own listen address"):
            tctx.options.update(corral_providers=json.dumps({"llamacpp": {"upstream": "http://0x7f000001:8399"}}))


def guarded(headers: list[tuple[bytes, bytes]], **options) -> tflow.HTTPFlow:
    guard = RequestGuard()
    with taddons.context(guard) as tctx:
        tctx.options.update(**options)
        flow = tflow.tflow()
        flow.request.headers.fields = tuple(headers)
        guard.requestheaders(flow)
        return flow


def test_header_caps_are_configurable() -> None:
    hundred = [(b"x-h%d" % i, b"v") for i in range(100)]
    assert guarded(hundred).response is None
    assert guarded([*hundred, (b"x-one", b"more")]).response.status_code == 431
    assert guarded(hundred, corral_gateway_max_headers=99).response.status_code == 431
    assert guarded([(b"x-a", b"a" * 100)], corral_gateway_max_header_bytes=50).response.status_code == 431
    with pytest.raises(exceptions.OptionsError, match="max_headers"):
        guarded([], corral_gateway_max_headers=0)


def test_the_hop_marker_is_added_and_its_own_return_refused() -> None:
    flow = guarded([(b"x-a", b"1")])
    mine = flow.request.headers[HOP_HEADER]
    assert flow.response is None and len(mine) == 12
    assert guarded([(HOP_HEADER.encode(), b"other1234567")]).request.headers[HOP_HEADER] == f"other1234567, {mine}"
    assert guarded([(HOP_HEADER.encode(), b"other1234567, " + mine.encode())]).response.status_code == 508
    assert guarded([(HOP_HEADER.encode(), b",".join(b"g%d" % i for i in range(10)))]).response.status_code == 508


AUTH = [(b"Authorization", b"Bearer sk-real"), (b"x-api-key", b"junk"), (b"x-goog-api-key", b"goog")]


@pytest.mark.parametrize("auth,query,expected", [
    ("bearer", [], "sk-real"),
    ("x-api-key", [], "junk"),
    ("x-goog-api-key", [("key", "q")], "goog"),
    ("query-key", [("key", "q")], "q"),
    ("api-key", [], "sk-real"),  # no api-key header: Azure's Entra bearer token
    ("none", [], "sk-real"),
])
def test_the_credential_follows_the_providers_auth_style(auth: str, query: list, expected: str) -> None:
    assert credential_fingerprint(AUTH, query, auth) == fingerprint(expected)


@pytest.mark.parametrize("fields,query", [
    ([(b"authorization", b"Bearer a"), (b"Authorization", b"Bearer b")], []),
    ([(b"x-api-key", b"a"), (b"X-API-KEY", b"a")], []),
    ([], [("key", "a"), ("KEY", "b")]),
])
def test_duplicate_credentials_are_ambiguous(fields: list, query: list) -> None:
    with pytest.raises(AmbiguousCredential):
        credential_fingerprint(fields, query, "x-goog-api-key")


@reliability("secrets", "secrets outside the catalog's auth styles (xi-api-key, x-auth-token, openai-api-key, "
             "`;key=`, names from [secrets] headers / query)", "passed through to the provider",
             "only fp_ fingerprints")
def test_more_secret_names_are_redacted_and_configurable() -> None:
    stored = redact_headers([("xi-api-key", "s1"), ("X-Auth-Token", "s2"), ("openai-api-key", "s3"), ("a", "b")])
    assert [v for _, v in stored] == [fingerprint("s1"), fingerprint("s2"), fingerprint("s3"), "b"]
    assert redact_url_path("/v1/x?a=1;key=s4&b=2") == f"/v1/x?a=1;key={fingerprint('s4')}&b=2"
    service = SecretsService()
    with taddons.context(service) as tctx:
        tctx.options.update(corral_secrets_headers=["X-Private"], corral_secrets_query=["pw"])
        assert redact_headers([("x-private", "s5")]) == [("x-private", fingerprint("s5"))]
        assert redact_url_path("/x?pw=s6&monkey=1") == f"/x?pw={fingerprint('s6')}&monkey=1"
        tctx.options.update(corral_secrets_headers=[], corral_secrets_query=[])
    assert credentials.is_secret_header("xi-api-key") and not credentials.is_secret_header("x-private")


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"gemini", "bedrock"}))  # those name the model in the path
def test_a_duplicate_model_key_resolves_last_wins_like_the_upstreams_json_parser(family: str) -> None:
    # One parse (Router.request, via the family) feeds limits, the cache key and the record: all see "b".
    body = b'{"model": "a", "messages": [], "model": "b"}'
    assert FAMILIES[family].parse_request("/v1/chat/completions", body).model == "b"
