"""`corral stats` and `corral export` over a database filled through the gateway by real SDK calls."""

from __future__ import annotations

import csv
import datetime
import io
import json
import subprocess

import pytest
from haralyzer import HarEntry, HarParser

from tests.support import cli
from tests.support.viewer import ViewerGateway


@pytest.fixture
def vg(viewer: ViewerGateway) -> ViewerGateway:
    return viewer  # one filled viewer gateway for the viewer modules (tests/conftest.py)


def corral(vg: ViewerGateway, *args: str) -> subprocess.CompletedProcess:
    return cli.corral(*args, "--db", vg.gw.db, "--config", str(vg.gw.config_path))


def db_rows(vg: ViewerGateway) -> list[dict]:
    return vg.gw.query("SELECT * FROM flows ORDER BY started_at, id")


def same_time(exported: str, stored: str | datetime.datetime) -> bool:
    if isinstance(stored, str):  # SQLite hands back text; PostgreSQL a datetime
        stored = datetime.datetime.fromisoformat(stored)
    return datetime.datetime.fromisoformat(exported).replace(tzinfo=None) == stored


def test_stats_tables_per_provider_and_model(vg: ViewerGateway) -> None:
    r = corral(vg, "stats", "--since", "1h")
    assert r.returncode == 0, r.stderr
    rows = db_rows(vg)
    assert f"{len(rows)} requests" in r.stdout
    for provider in ("openai", "anthropic", "gemini"):
        assert provider in r.stdout
    header = next(line for line in r.stdout.splitlines() if line.split()[:2] == ["provider", "model"])
    for col in ("requests", "errors", "in", "out", "cost", "p50", "p95", "cache hits"):
        assert col in header
    data = json.loads(corral(vg, "stats", "--since", "1h", "--json").stdout)
    assert data["total"]["requests"] == len(rows)
    assert data["total"]["input_tokens"] == sum(r["input_tokens"] or 0 for r in rows)
    openai = next(p for p in data["by_provider"] if p["provider"] == "openai")
    assert openai["requests"] == sum(1 for r in rows if r["provider"] == "openai")
    assert openai["errors"] == sum(1 for r in rows if r["provider"] == "openai" and r["status"] >= 400)


def test_stats_bad_since_is_a_clear_error(vg: ViewerGateway) -> None:
    r = corral(vg, "stats", "--since", "yesterday-ish")
    assert r.returncode == 1 and "--since" in r.stdout


def test_jsonl_round_trip_matches_the_database(vg: ViewerGateway, tmp_path) -> None:
    out = tmp_path / "flows.jsonl"
    r = corral(vg, "export", "--format", "jsonl", "--output", str(out))
    assert r.returncode == 0, r.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    stored = db_rows(vg)
    assert len(exported) == len(stored) >= 5
    for e, s in zip(exported, stored, strict=True):
        assert set(e) == set(s)
        for key, value in s.items():
            if key == "started_at":
                assert same_time(e[key], value)
            elif key in ("stream", "unpriced", "complete"):
                assert e[key] == bool(value), key
            else:
                assert e[key] == value, key
    assert "sk-viewer-test-secret" not in out.read_text()


def test_csv_export_has_every_row_and_column(vg: ViewerGateway) -> None:
    r = corral(vg, "export", "--format", "csv", "--provider", "openai")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    stored = [s for s in db_rows(vg) if s["provider"] == "openai"]
    assert [row["id"] for row in rows] == [s["id"] for s in stored]
    assert set(rows[0]) == set(stored[0])


HAR_ENTRY_REQUIRED = {"startedDateTime", "time", "request", "response", "cache", "timings"}
HAR_REQUEST_REQUIRED = {"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"}
HAR_RESPONSE_REQUIRED = {"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                         "headersSize", "bodySize"}


def test_har_export_validates(vg: ViewerGateway) -> None:
    r = corral(vg, "export", "--format", "har", "--progress")
    assert r.returncode == 0, r.stderr
    har = json.loads(r.stdout)
    parser = HarParser(har)  # raises on a document that is not HAR
    assert parser.version == "1.2" and parser.creator["name"] == "corral"
    stored = db_rows(vg)
    entries = har["log"]["entries"]
    assert len(entries) == len(stored)
    for raw, s in zip(entries, stored, strict=True):
        assert HAR_ENTRY_REQUIRED <= set(raw)
        assert HAR_REQUEST_REQUIRED <= set(raw["request"]) and HAR_RESPONSE_REQUIRED <= set(raw["response"])
        assert {"send", "wait", "receive"} <= set(raw["timings"])
        assert all(set(h) == {"name", "value"} for h in raw["request"]["headers"] + raw["response"]["headers"])
        entry = HarEntry(raw)
        assert entry.request.method == s["method"]
        assert entry.url.endswith(s["path"]) and entry.url.startswith("http")
        assert entry.response.status == s["status"]
        assert same_time(entry.startTime.isoformat(), s["started_at"])
        assert raw["response"]["content"]["text"] == (s["response_body"] or "")
    assert "sk-viewer-test-secret" not in r.stdout
