"""Credentials never reach the database or the log: only fingerprints do."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from addon.credentials import fingerprint
from tests.support import corpus
from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.reliability import reliability

SECRETS = {
    "authorization": "Bearer sk-proj-SECRETopenai0123456789abcdef",
    "x-api-key": "sk-ant-api03-SECRETanthropic0123456789",
    "x-goog-api-key": "AIzaSySECRETgoogle0123456789abcdefgh",
    "api-key": "SECRETazure0123456789abcdef0123",
    "cookie": "session=SECRETcookie0123456789",
}
QUERY_KEY = "AIzaSyQUERYSECRET0123456789abcdefghi"


@reliability(
    "secrets",
    "API keys in Authorization, x-api-key, x-goog-api-key, api-key, cookie, ?key=",
    "credentials pass through to the provider",
    "only fp_ fingerprints in database, log and exports (jsonl, csv, har)",
)
def test_no_secret_reaches_the_database_or_log(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "gemini-generatecontent-json-2"
    ex = corpus.load(name)
    with httpx.Client(timeout=20) as client:
        for header, value in SECRETS.items():
            client.post(
                gateway.base("gemini") + corpus.request_path(ex) + f"?key={QUERY_KEY}",
                content=json.dumps(ex["request"]["body"]),
                headers={header: value, "x-mock-exchange": name, "x-test-id": tag},
            )
    rows = gateway.wait_rows(lambda r: tag in (r["request_headers"] or ""), len(SECRETS))
    # The upstream did get the credentials: Corral passes them through untouched.
    assert any(r.headers.get("authorization") == SECRETS["authorization"] for r in fresh_mock.requests)
    if gateway.is_postgres:  # every stored value of every row
        stored = json.dumps(gateway.query("SELECT * FROM flows"), default=str).encode()
    else:  # the raw SQLite files, WAL included
        db_path = Path(gateway.db.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    log = gateway.log()
    exports = "".join(
        corral("export", "--format", fmt, "--db", gateway.db).stdout
        for fmt in ("jsonl", "csv", "har")
    )
    assert tag in exports  # the exports did contain these flows
    for value in [*SECRETS.values(), QUERY_KEY]:
        secret = value.split(" ")[-1].split("=")[-1]
        assert secret.encode() not in stored, f"{secret[:12]}... reached the database"
        assert secret not in log
        assert secret not in exports, f"{secret[:12]}... reached an export"
    credentials = {r["credential"] for r in rows}
    # Gemini authenticates with x-goog-api-key, else ?key=: the other headers are not its credential.
    assert credentials == {fingerprint(SECRETS["x-goog-api-key"]), fingerprint(QUERY_KEY)}
    assert all(c and c.startswith("fp_") for c in credentials)
    assert all(QUERY_KEY not in r["path"] and "key=fp_" in r["path"] for r in rows)
