"""`corral spend` and the viewer's /api/spend over flows the real openai SDK sent through the gateway with
gateway keys: exact recorded cost per key, provider and model; unpriced flows shown as such, never $0.

Each gpt-4o-mini chat of the corpus costs $0.000024.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import corpus
from tests.support.cli import corral
from tests.support.gateway import Gateway, free_port, wait_listening
from tests.support.mock_upstream import MockUpstream, Reply

CHAT_USD = 0.000024
VIEWER_PORT = free_port()


@pytest.fixture(scope="module")
def spent(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, str]]]:
    """A gateway and its keys after: a 2 chats, b 1 chat and 1 unpriced chat, c 1 unpriced chat only."""
    config = {"providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
              "viewer": {"listen": f"127.0.0.1:{VIEWER_PORT}"}}
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("spend")).start(
        env={**os.environ, "CORRAL_TEST_OPENAI_KEY": "sk-provider-spend"})
    wait_listening(VIEWER_PORT)
    try:
        keys = {}
        for name in ("a", "b", "c"):
            result = corral("keys", "create", "--db", gw.db, "--config", "-", "--json", "--name", f"spend-{name}")
            keys[name] = json.loads(result.stdout)["key"]
        ex = corpus.load("openai-chat-json-1")
        raw = corpus.response_bytes(ex)
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        unpriced = raw.replace(ex["expect"]["model"].encode(), b"acme-unpriced-1")
        mock.reset()
        for name, kind in (("a", "priced"), ("a", "priced"), ("b", "priced"), ("b", "unpriced"), ("c", "unpriced")):
            if kind == "unpriced":
                mock.enqueue(Reply(status=200, headers={"content-type": "application/json"}, body=unpriced))
            client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=keys[name], max_retries=0)
            client.chat.completions.create(
                model="acme-unpriced-1" if kind == "unpriced" else "gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-test-id": "spend"} | (
                    {} if kind == "unpriced" else {"x-mock-exchange": "openai-chat-json-1"}))
        gw.wait_rows(lambda r: r["gateway_key"] is not None, 5)
        yield gw, {name: key[:11] for name, key in keys.items()}
    finally:
        gw.stop()


def spend(gw: Gateway, *args: str) -> str:
    result = corral("spend", "--db", gw.db, "--config", "-", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_spend_by_key_is_the_exact_cost_with_unpriced_flows_apart(spent) -> None:
    gw, prefixes = spent
    data = json.loads(spend(gw, "--by", "key", "--since", "1h", "--format", "json"))
    rows = {r["key"]: r for r in data["rows"]}
    a, b, c = (rows[prefixes[n]] for n in "abc")
    assert a["name"] == "spend-a" and a["flows"] == 2 and a["unpriced"] == 0
    assert a["cost_usd"] == pytest.approx(2 * CHAT_USD, abs=1e-9)
    assert b["flows"] == 2 and b["unpriced"] == 1 and b["cost_usd"] == pytest.approx(CHAT_USD, abs=1e-9)
    assert c["flows"] == 1 and c["unpriced"] == 1 and c["cost_usd"] is None  # unknown, not $0
    assert [r["key"] for r in data["rows"]][:3] == [prefixes["a"], prefixes["b"], prefixes["c"]]
    assert data["total"]["unpriced"] == 2

    table = spend(gw, "--since", "1h").splitlines()
    line = {n: next(row for row in table if prefixes[n] in row) for n in "abc"}
    assert "$0.000048" in line["a"]
    assert "$0.000024 + 1 unpriced" in line["b"]
    assert " unpriced " in line["c"] and "$0" not in line["c"]
    assert "5 flows" in table[0]

    rows_csv = list(csv.DictReader(io.StringIO(spend(gw, "--since", "1h", "--format", "csv"))))
    c_csv = next(r for r in rows_csv if r["key"] == prefixes["c"])
    assert c_csv["cost_usd"] == "" and c_csv["unpriced"] == "1"


def test_spend_by_provider_model_team_and_a_range(spent) -> None:
    gw, _ = spent
    by_model = json.loads(spend(gw, "--by", "model", "--since", "1h", "--format", "json"))["rows"]
    models = {r["model"]: r for r in by_model}
    assert models["openai/acme-unpriced-1"]["cost_usd"] is None and models["openai/acme-unpriced-1"]["unpriced"] == 2
    assert sum(r["flows"] for r in by_model) == 5
    by_team = json.loads(spend(gw, "--by", "team", "--since", "1h", "--format", "json"))["rows"]
    assert by_team[0]["team"] == "(no team)" and by_team[0]["flows"] == 5
    assert "0 flows" in spend(gw, "--since", "2099-01-01", "--until", "2099-01-02")
    refused = corral("spend", "--db", gw.db, "--config", "-", "--since", "2026-12-02", "--until", "2026-12-01")
    assert refused.returncode == 1 and "--until must be after --since" in refused.stdout


def test_viewer_spend_has_the_same_numbers_and_a_series_per_key(spent) -> None:
    _, prefixes = spent
    data = httpx.get(f"http://127.0.0.1:{VIEWER_PORT}/api/spend", params={"by": "key", "since": "1h"}).json()
    rows = {r["key"]: r for r in data["rows"]}
    assert rows[prefixes["a"]]["cost_usd"] == pytest.approx(2 * CHAT_USD, abs=1e-9)
    lines = data["series"]["lines"]
    assert len(data["series"]["t"]) == len(lines[prefixes["a"]])
    assert sum(lines[prefixes["a"]]) == pytest.approx(2 * CHAT_USD, abs=1e-9)
    assert prefixes["c"] not in lines  # no priced flow: no line of made-up zeros
    bad = httpx.get(f"http://127.0.0.1:{VIEWER_PORT}/api/spend", params={"by": "nope"})
    assert bad.status_code == 400 and "--by must be one of" in bad.json()["error"]
