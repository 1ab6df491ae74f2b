"""KeyCheck in process: where a gateway key is found, what replaces it, and the refusals' shapes."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from addon import metadata as md
from addon.keys import store
from addon.keys.book import KeyBook
from addon.keys.check import KeyCheck, presented_key
from addon.services import CatalogService
from tests.support.clock import FakeClock

KEY = "ck-0123abcd_" + "s" * 43
CHAT = "https://api.openai.com/v1/chat/completions"
RECORD = store.KeyRecord("0123abcd", "app", ("openai", "gemini", "azure", "anthropic"), ("gpt-4o*",),
                         None, None, None, None)


class FakeBook(KeyBook):
    def __init__(self, record: store.KeyRecord | None = RECORD, spent: float = 0.0) -> None:
        clock = FakeClock()
        super().__init__(clock=clock, wallclock=clock)
        self.record, self.spent_usd = record, spent
        self.credentials = {"openai": ["sk-prov-oai"], "gemini": ["AIza-prov"], "azure": ["az-prov"],
                            "anthropic": ["sk-ant-prov"]}

    async def verify(self, token: str) -> store.KeyRecord | None:
        return self.record if token == KEY else None

    async def _read(self, budget, start, pending):  # the database's sum of every budget
        return self.spent_usd, set()


async def admit(check: KeyCheck, flow: http.HTTPFlow) -> None:
    """Both hooks, as mitmproxy runs them (the Router reads the model in between)."""
    await check.requestheaders(flow)
    if flow.response is None:
        flow.metadata.setdefault(md.MODEL, "gpt-4o-mini")
        await check.request(flow)


def flow_for(provider: str, fmt: str, url: str, headers: dict[str, str]) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request = http.Request.make("POST", url, b"{}", headers)
    flow.metadata[md.PROVIDER] = provider
    flow.metadata[md.FORMAT] = fmt
    return flow


@pytest.mark.parametrize(("headers", "url"), [
    ({"authorization": f"Bearer {KEY}"}, "https://x/v1"),
    ({"authorization": f"bearer  {KEY}"}, "https://x/v1"),
    ({"x-api-key": KEY}, "https://x/v1"),
    ({"api-key": KEY}, "https://x/v1"),
    ({"x-goog-api-key": KEY}, "https://x/v1"),
    ({}, f"https://x/v1/models/m:generateContent?key={KEY}"),
])
def test_the_key_is_found_where_each_sdk_puts_it(headers: dict[str, str], url: str) -> None:
    assert presented_key(http.Request.make("POST", url, b"", headers)) == KEY


def test_a_provider_key_is_not_a_gateway_key() -> None:
    request = http.Request.make("POST", "https://x/v1?key=AIza-x", b"", {"authorization": "Bearer sk-x"})
    assert presented_key(request) is None


@pytest.mark.parametrize(("provider", "fmt", "url", "headers", "header", "value"), [
    ("openai", "openai", "https://api.openai.com/v1/chat/completions", {"authorization": f"Bearer {KEY}"},
     "authorization", "Bearer sk-prov-oai"),
    ("anthropic", "anthropic", "https://api.anthropic.com/v1/messages", {"x-api-key": KEY},
     "x-api-key", "sk-ant-prov"),
    ("azure", "openai", "https://r.openai.azure.com/openai/v1/chat/completions", {"api-key": KEY},
     "api-key", "az-prov"),
    ("gemini", "gemini", f"https://g/v1beta/models/gemini-2.0-flash:generateContent?alt=sse&key={KEY}", {},
     "x-goog-api-key", "AIza-prov"),
])
async def test_the_provider_credential_replaces_the_key(provider, fmt, url, headers, header, value) -> None:
    check = KeyCheck(FakeBook(), CatalogService())
    flow = flow_for(provider, fmt, url, headers)
    await admit(check, flow)
    assert flow.response is None
    assert flow.request.headers[header] == value
    assert KEY not in repr(flow.request.headers.fields) and KEY not in flow.request.path
    assert flow.metadata[md.GATEWAY_KEY] == "0123abcd"


@pytest.mark.parametrize(("provider", "fmt", "fields", "expected"), [
    # the key's header goes whole; an own authorization is replaced in place, its second field dropped
    ("openai", "openai",
     ((b"Host", b"x"), (b"X-Api-Key", KEY.encode()), (b"Authorization", b"Bearer sk-own"),
      (b"authorization", b"Bearer sk-two"), (b"Accept", b"*/*")),
     ((b"Host", b"x"), (b"Authorization", b"Bearer sk-prov-oai"), (b"Accept", b"*/*"))),
    # credential in x-api-key: authorization goes, the key's header is removed and set again at the end
    ("anthropic", "anthropic",
     ((b"Host", b"x"), (b"Authorization", b"Bearer sk-own"), (b"X-Api-Key", KEY.encode()),
      (b"x-api-key", b"other"), (b"Accept", b"*/*")),
     ((b"Host", b"x"), (b"Accept", b"*/*"), (b"x-api-key", b"sk-ant-prov"))),
])
async def test_the_swap_edits_the_header_fields_as_mitmproxys_headers_would(provider, fmt, fields, expected) -> None:
    check = KeyCheck(FakeBook(), CatalogService())
    flow = flow_for(provider, fmt, "https://x/v1/messages", {})
    flow.request.headers.fields = fields
    await admit(check, flow)
    assert flow.response is None
    assert flow.request.headers.fields == expected


async def test_model_scope_is_checked_once_the_model_is_known() -> None:
    check = KeyCheck(FakeBook(), CatalogService())
    flow = flow_for("openai", "openai", CHAT, {"authorization": f"Bearer {KEY}"})
    flow.metadata[md.MODEL] = "o3-mini"
    await admit(check, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert json.loads(flow.response.content)["error"]["code"] == "forbidden"


async def test_over_budget_is_429_with_budget_headers() -> None:
    record = store.KeyRecord("0123abcd", "app", None, None, 0.01, "month", None, None)
    check = KeyCheck(FakeBook(record, spent=0.0123), CatalogService())
    flow = flow_for("anthropic", "anthropic", "https://api.anthropic.com/v1/messages", {"x-api-key": KEY})
    await admit(check, flow)
    assert flow.response is not None and flow.response.status_code == 429
    body = json.loads(flow.response.content)
    assert body["error"]["type"] == "rate_limit_error"
    assert "gateway key ck-0123abcd (app) has spent $0.012 of its $0.010 monthly budget" in body["error"]["message"]
    headers = flow.response.headers
    assert headers["x-corral-budget-limit"] == "0.010000" and headers["x-corral-budget-spent"] == "0.012300"
    assert headers["x-corral-budget"] == "key:0123abcd"
    assert headers["x-corral-budget-reset"] == "2023-12-01T00:00:00Z"  # the fake clock's month ends then
    assert headers["x-should-retry"] == "false"


async def test_no_provider_credential_never_forwards_the_key() -> None:
    book = FakeBook()
    book.credentials = {}
    check = KeyCheck(book, CatalogService())
    flow = flow_for("openai", "openai", CHAT, {"authorization": f"Bearer {KEY}"})
    await admit(check, flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert b"[providers.openai] api_key" in flow.response.content


async def test_without_a_key_the_request_passes_unless_keys_are_required() -> None:
    book = FakeBook()
    check = KeyCheck(book, CatalogService())
    flow = flow_for("openai", "openai", CHAT, {"authorization": "Bearer sk-own"})
    await admit(check, flow)
    assert flow.response is None and flow.request.headers["authorization"] == "Bearer sk-own"
    book.required = True
    await admit(check, flow)
    assert flow.response is not None and flow.response.status_code == 401


async def test_a_failing_check_fails_closed() -> None:
    class Broken(FakeBook):
        async def verify(self, token: str) -> store.KeyRecord | None:
            raise OSError("database is locked")

    flow = flow_for("openai", "openai", CHAT, {"authorization": f"Bearer {KEY}"})
    await admit(KeyCheck(Broken(), CatalogService()), flow)
    assert flow.response is not None and flow.response.status_code == 503

    class BrokenSpend(FakeBook):
        async def _read(self, budget, start, pending):
            raise OSError("database is locked")

    budgeted = store.KeyRecord("0123abcd", "app", None, None, 1.0, "day", None, None)
    flow = flow_for("openai", "openai", CHAT, {"authorization": f"Bearer {KEY}"})
    await admit(KeyCheck(BrokenSpend(budgeted), CatalogService()), flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.request.headers["authorization"] == f"Bearer {KEY}"  # never swapped, never sent
