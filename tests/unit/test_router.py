"""Router in process: what it keeps of the request as the client sent it (the viewer's request headers
and its copy as curl), before it re-addresses the request to the upstream."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.credentials import fingerprint
from addon.router import Router
from addon.services import CatalogService

CLIENT_HEADERS = {"host": "127.0.0.1:8080", "authorization": "Bearer sk-client-secret", "x-corral-cache": "use",
                  "content-type": "application/json"}


async def routed(url: str, tls: bool = False, port: int = 8080, **options) -> http.HTTPFlow:
    catalog = CatalogService()
    router = Router(catalog)
    with taddons.context(catalog, router) as tctx:
        if options:
            tctx.configure(catalog, **options)
        flow = tflow.tflow()
        flow.client_conn.tls = tls
        flow.client_conn.sockname = ("127.0.0.1", port)
        flow.request = http.Request.make("POST", url, b"{}", CLIENT_HEADERS)
        await router.requestheaders(flow)
    return flow


async def test_reverse_mode_keeps_the_client_headers_and_path_before_the_rewrite() -> None:
    flow = await routed("http://127.0.0.1:8080/openai/v1/chat/completions?key=AIza-secret")
    assert flow.request.host == "api.openai.com" and flow.request.headers["host"] == "api.openai.com"
    sent = dict(flow.metadata[md.CLIENT_HEADERS])
    assert sent["host"] == "127.0.0.1:8080" and sent["x-corral-cache"] == "use"
    assert sent["authorization"] == fingerprint("sk-client-secret")  # never the secret itself
    assert flow.metadata[md.GATEWAY_PATH] == f"/openai/v1/chat/completions?key={fingerprint('AIza-secret')}"


async def test_explicit_mode_gets_the_equivalent_reverse_path() -> None:
    flow = await routed("https://api.anthropic.com/v1/messages", tls=True, port=443)
    assert flow.metadata[md.MODE] == "explicit"
    assert flow.metadata[md.GATEWAY_PATH] == "/anthropic/v1/messages"
    assert dict(flow.metadata[md.CLIENT_HEADERS])["x-corral-cache"] == "use"


async def test_no_reverse_path_where_reverse_mode_cannot_reach_the_same_upstream() -> None:
    # Azure in explicit mode goes to the resource host the client named, which reverse mode cannot.
    azure = await routed("https://myres.openai.azure.com/openai/v1/chat/completions", tls=True, port=443)
    assert azure.metadata[md.PROVIDER] == "azure" and md.GATEWAY_PATH not in azure.metadata
    bedrock = await routed("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse", tls=True, port=443)
    assert bedrock.metadata[md.PROVIDER] == "bedrock" and md.GATEWAY_PATH not in bedrock.metadata


async def test_flows_that_are_not_corrals_business_keep_nothing() -> None:
    flow = await routed("https://example.com/", tls=True, port=443)
    assert md.CLIENT_HEADERS not in flow.metadata and md.GATEWAY_PATH not in flow.metadata
