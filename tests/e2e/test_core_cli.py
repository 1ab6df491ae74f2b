"""The `corral` command: flows, providers, and the README table generated from the catalog."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest

from providers.catalog import Catalog
from providers.formats.include_usage import is_usage_only_event
from tests.support import cli, corpus
from tests.support.gateway import CORRAL, REPO_ROOT, Gateway


def corral(*args: str) -> str:
    done = cli.corral(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def make_call(gateway: Gateway, tag: str, name: str = "openai-chat-json-1") -> None:
    ex = corpus.load(name)
    httpx.post(gateway.base("openai") + "/v1/chat/completions", json=ex["request"]["body"], timeout=20,
               headers={"x-mock-exchange": name, "x-test-id": tag, "authorization": "Bearer sk-cli-test"})
    gateway.row_for(tag)


def test_flows_json_has_the_documented_fields(gateway: Gateway, fresh_mock, tag: str) -> None:
    make_call(gateway, tag)
    lines = corral(
        "flows", "--db", gateway.db, "--json", "--limit", "500", "--config", str(gateway.config_path)
    ).splitlines()
    rows = [json.loads(line) for line in lines]
    mine = [r for r in rows if r["id"] == gateway.row_for(tag)["id"]]
    assert len(mine) == 1
    row = mine[0]
    for field in ("id", "started_at", "mode", "provider", "method", "path", "model", "status", "stream", "ttfb_ms",
                  "duration_ms", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                  "cost_usd", "cache", "retries", "error"):
        assert field in row, field
    assert isinstance(row["status"], int) and row["status"] == 200
    assert row["stream"] is False and row["mode"] == "reverse" and row["provider"] == "openai"
    assert row["input_tokens"] == corpus.load("openai-chat-json-1")["expect"]["input_tokens"]


def test_flows_table_and_limit(gateway: Gateway, fresh_mock, tag: str) -> None:
    make_call(gateway, tag)
    make_call(gateway, tag + "b")
    out = corral("flows", "--db", gateway.db, "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["time", "mode", "provider", "model"]
    assert len(lines) == 3  # header + 2 rows, newest first
    assert "openai" in lines[1]


def test_flows_on_missing_database_says_so() -> None:
    done = cli.corral("flows", "--db", "sqlite:////nonexistent/x.db")
    assert done.returncode == 1 and "no database" in done.stdout


def test_providers_lists_at_least_40_with_their_fields() -> None:
    rows = [json.loads(line) for line in corral("providers", "--json").splitlines()]
    assert len(rows) >= 40
    assert {"name", "prefix", "upstream", "format", "hosts"} <= set(rows[0])
    assert len({r["prefix"] for r in rows}) == len(rows)


def test_readme_provider_table_matches_the_catalog() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"<!-- providers-table -->\n(.*?)\n<!-- /providers-table -->", readme, re.S)
    assert found, "README lost its generated provider table"
    assert found.group(1).strip() == Catalog.load().markdown_table().strip(), \
        "README provider table is stale: regenerate it with `corral providers --markdown`"


def test_include_usage_is_injected_and_the_extra_chunk_removed(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "openai-chat-stream-1"  # its upstream stream ends with a usage-only chunk
    body = dict(corpus.load(name)["request"]["body"])
    body.pop("stream_options", None)  # this client did not ask for usage
    resp = httpx.post(gateway.base("openai") + "/v1/chat/completions", json=body, timeout=20,
                      headers={"x-mock-exchange": name, "x-test-id": tag, "authorization": "Bearer sk-iu"})
    sent_upstream = json.loads(fresh_mock.requests[-1].body)
    assert sent_upstream["stream_options"] == {"include_usage": True}
    upstream_events = corpus.response_bytes(corpus.load(name)).split(b"\n\n")
    expected = b"\n\n".join(e for e in upstream_events if not is_usage_only_event(e + b"\n\n"))
    assert resp.content == expected
    assert len(resp.content) < len(corpus.response_bytes(corpus.load(name)))
    row = gateway.row_for(tag)
    assert row["input_tokens"] == corpus.load(name)["expect"]["input_tokens"]


def test_unknown_model_is_unpriced_not_free(gateway: Gateway, fresh_mock, tag: str) -> None:
    ex = corpus.load("together-chat-json-1")  # open model via Together
    raw = corpus.response_bytes(ex).replace(ex["expect"]["model"].encode(), b"acme/no-such-model-7b")
    from tests.support.mock_upstream import Reply
    fresh_mock.enqueue(Reply(status=200, headers={"content-type": "application/json"}, body=raw))
    httpx.post(
        gateway.base("together") + "/v1/chat/completions",
        json={"model": "acme/no-such-model-7b", "messages": []},
        headers={"x-test-id": tag, "authorization": "Bearer sk-x"},
        timeout=20,
    )
    row = gateway.row_for(tag)
    assert row["input_tokens"] is not None
    assert row["cost_usd"] is None and row["unpriced"]
    table = corral("flows", "--db", gateway.db, "--limit", "1")
    assert "unpriced" in table


def test_known_model_cost_is_the_genai_prices_figure(gateway: Gateway, fresh_mock, tag: str) -> None:
    from genai_prices import Usage, calc_price

    name = "openai-chat-json-1"
    make_call(gateway, tag, name)
    row = gateway.row_for(tag)
    expect = corpus.load(name)["expect"]
    usage = Usage(input_tokens=expect["input_tokens"], output_tokens=expect["output_tokens"],
                  cache_read_tokens=expect.get("cached_input_tokens") or 0)
    price = calc_price(usage, model_ref=expect["model"], provider_id="openai")
    assert row["cost_usd"] == pytest.approx(float(price.total_price), rel=1e-9)
    assert not row["unpriced"]


def test_mitmproxy_options_of_addons_corral_start_leaves_out_say_where_to_get_them(tmp_path) -> None:
    """`corral start` runs a lean master; an option of a left-out mitmproxy addon is a clear error."""
    out = subprocess.run([*CORRAL, "start", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path / 'c.db'}",
                          "--certs", str(tmp_path / "certs"), "--set", "modify_headers=/~q/x/y"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stdout.startswith("corral: --set modify_headers=/~q/x/y: unknown option; ")
    assert "mitmdump -s addon/corral.py" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
