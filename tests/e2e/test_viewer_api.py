"""The viewer's JSON API and /metrics, on a database filled through the gateway by real SDK calls."""

from __future__ import annotations

import httpx
import pytest

from tests.support.reliability import reliability
from tests.support.viewer import ViewerGateway
from tests.support.waiting import until


@pytest.fixture
def vg(viewer: ViewerGateway) -> ViewerGateway:
    return viewer  # one filled viewer gateway for the viewer modules (tests/conftest.py)


def mine(vg: ViewerGateway, flows: list[dict]) -> list[dict]:
    return [f for f in flows if f["id"] in vg_ids(vg)]


def vg_ids(vg: ViewerGateway) -> set[str]:
    return {r["id"] for r in vg.gw.rows() if vg.tag in (r.get("request_headers") or "")}


def test_list_is_newest_first_with_the_columns_the_table_shows(vg: ViewerGateway) -> None:
    page = vg.api("api/flows").json()
    flows = page["flows"]
    assert {f["id"] for f in flows} == vg_ids(vg)
    keys = [(f["started_at"], f["id"]) for f in flows]
    assert keys == sorted(keys, reverse=True)
    for col in ("started_at", "mode", "provider", "model", "status", "stream", "ttfb_ms", "duration_ms",
                "input_tokens", "output_tokens", "cost_usd", "unpriced", "cache", "retries"):
        assert col in flows[0]
    assert "request_body" not in flows[0]  # the list stays light
    providers = {f["provider"] for f in flows}
    assert providers == {"openai", "anthropic", "gemini"}
    stream = next(f for f in flows if f["provider"] == "openai" and f["stream"])
    assert stream["input_tokens"] and stream["output_tokens"] and stream["ttfb_ms"] is not None


@pytest.mark.parametrize("params,expect", [
    ({"provider": "anthropic"}, lambda f: f["provider"] == "anthropic"),
    ({"provider": "openai"}, lambda f: f["provider"] == "openai"),
    ({"status": "2xx"}, lambda f: 200 <= f["status"] < 300),
    ({"status": "4xx"}, lambda f: 400 <= f["status"] < 500),
    ({"cache": "off"}, lambda f: f["cache"] == "off"),
])
def test_filters(vg: ViewerGateway, params: dict, expect) -> None:
    flows = vg.api("api/flows", **params).json()["flows"]
    everything = vg.api("api/flows").json()["flows"]
    wanted = [f["id"] for f in everything if expect(f)]
    assert flows and [f["id"] for f in flows] == wanted
    assert len(wanted) < len(everything) or params == {"cache": "off"}


def test_model_filter_and_facets(vg: ViewerGateway) -> None:
    facets = vg.api("api/facets").json()
    assert {"openai", "anthropic", "gemini"} <= set(facets["providers"])
    model = next(m for m in facets["models"] if m.startswith("claude"))
    flows = vg.api("api/flows", model=model).json()["flows"]
    assert flows and all(f["model"] == model for f in flows)


def test_text_search_in_bodies(vg: ViewerGateway) -> None:
    flows = vg.api("api/flows", q="viewer test openai-chat-json-1").json()["flows"]
    assert len(flows) == 1 and flows[0]["stream"] is False
    assert vg.api("api/flows", q="no-such-text-anywhere-0xdead").json()["flows"] == []


def test_status_filter_rejects_nonsense(vg: ViewerGateway) -> None:
    r = vg.api("api/flows", status="9xx")
    assert r.status_code == 400 and "status" in r.json()["error"]
    assert vg.api("api/flows", before="garbage").status_code == 400


def test_keyset_pagination_walks_every_row_once(vg: ViewerGateway) -> None:
    seen, cursor = [], None
    for _ in range(100):  # a cursor that does not advance fails here instead of looping forever
        page = vg.api("api/flows", limit=2, before=cursor).json()
        assert len(page["flows"]) <= 2
        seen += [f["id"] for f in page["flows"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert cursor is None
    assert len(seen) == len(set(seen))
    assert seen == [f["id"] for f in vg.api("api/flows").json()["flows"]]


def test_after_cursor_returns_only_newer_rows(vg: ViewerGateway) -> None:
    first = vg.api("api/flows", limit=1).json()["flows"][0]
    cursor = f"{first['started_at']}|{first['id']}"
    assert vg.api("api/flows", after=cursor).json()["flows"] == []
    vg.chat("openai-chat-json-2", stream=False)
    new = until(lambda: vg.api("api/flows", after=cursor).json()["flows"])
    assert len(new) == 1 and new[0]["id"] != first["id"]


@reliability("secrets", "viewer API detail and copy-as-curl", "fingerprints, never the key", "-")
def test_detail_has_headers_bodies_reassembled_stream_and_no_secret(vg: ViewerGateway) -> None:
    flows = vg.api("api/flows", provider="openai").json()["flows"]
    stream = next(f for f in flows if f["stream"] and f["status"] == 200)
    d = vg.api(f"api/flows/{stream['id']}").json()
    assert d["response_text"] and "data:" in d["response_body"]
    assert "viewer test" in d["request_body"]
    assert "stream_options" not in d["request_body"]  # the body the client sent, not the one with usage injected
    names = {k.lower(): v for k, v in d["request_headers"]}
    assert names["authorization"].startswith("fp_")
    assert "sk-viewer-test-secret" not in str(d)
    assert any(k.lower() == "content-type" for k, _ in d["response_headers"])
    assert "sk-viewer-test-secret" not in d["curl"] and "fp_" not in d["curl"]
    assert '-H "authorization: Bearer $OPENAI_API_KEY"' in d["curl"]  # the key comes from the user's shell
    assert d["curl"].startswith(f"curl -X POST {vg.gw.base('openai')}/v1/chat/completions")
    curl = vg.api(f"api/flows/{stream['id']}/curl")
    assert curl.headers["content-type"].startswith("text/plain") and curl.text.strip() == d["curl"]
    assert vg.api("api/flows/nope").status_code == 404


def test_analytics_totals_series_and_breakdowns(vg: ViewerGateway) -> None:
    a = vg.api("api/analytics", since="1h").json()
    ids = vg_ids(vg)
    assert a["total"]["requests"] == len(ids)
    assert a["total"]["errors"] >= 1 and 0 < a["total"]["error_rate"] < 1
    assert a["total"]["input_tokens"] > 0 and a["total"]["duration_p95_ms"] is not None
    assert sum(p["requests"] for p in a["series"]) == len(ids)
    assert {p["provider"] for p in a["by_provider"]} == {"openai", "anthropic", "gemini"}
    assert sum(p["requests"] for p in a["by_model"]) == len(ids)
    only = vg.api("api/analytics", since="1h", provider="anthropic").json()
    assert only["total"]["requests"] == 1
    future = vg.api("api/analytics", since="2099-01-01T00:00:00").json()
    assert future["total"]["requests"] == 0


def test_metrics_counts_what_went_through(vg: ViewerGateway) -> None:
    text = vg.api("metrics").text
    assert (
        'corral_requests_total{cache="off",model="gpt-4o-mini-2024-07-18"' in text or "corral_requests_total{" in text
    )
    lines = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}
    total = sum(v for k, v in lines.items() if k.startswith("corral_requests_total{"))
    assert total == len(vg_ids(vg))
    assert any(k.startswith('corral_tokens_total{') and 'provider="anthropic"' in k for k in lines)
    assert any(k.startswith("corral_duration_seconds_bucket{") for k in lines)
    assert any(
        k.startswith("corral_upstream_errors_total{")
        or (k.startswith("corral_requests_total{") and 'status_class="4xx"' in k)
        for k in lines
    )
    assert lines.get('corral_ttfb_seconds_count{provider="openai"}', 0) >= 2


def test_static_files_are_served(vg: ViewerGateway) -> None:
    index = vg.api("")
    assert index.status_code == 200 and "Corral" in index.text and "uPlot" in index.text
    assert vg.api("vendor/uplot/uPlot.iife.min.js").status_code == 200
    assert vg.api("../pyproject.toml").status_code in (403, 404)


def test_no_token_needed_on_loopback_by_default(vg: ViewerGateway) -> None:
    assert vg.api("api/flows").status_code == 200
    assert httpx.get(vg.url + "api/flows", headers={"Authorization": "Bearer whatever"}).status_code == 200
