"""`corral flows` on a record made here: filters, the retries column, clipped errors, "no such
provider", and --follow printing rows as they are recorded."""

from __future__ import annotations

import argparse
import datetime
import uuid
from pathlib import Path

import pytest

from addon.cli import flows
from addon.storage import db as dbmod
from addon.storage.models import Flow
from tests.support.cli import corral

NOW = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def add(**fields) -> Flow:
    row = {"id": uuid.uuid4().hex, "started_at": NOW, "mode": "reverse", "provider": "openai", "method": "POST",
           "path": "/v1/chat/completions", "model": "gpt-4o-mini", "status": 200, **fields}
    Flow.insert(row).execute()
    return Flow.get_by_id(row["id"])


@pytest.fixture
def record(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = dbmod.connect(url)
    add(started_at=NOW - datetime.timedelta(hours=3), model="old-model")
    add(provider="anthropic", model="claude-x", status=429, retries=2,
        error="Rate limit reached for claude-x in organization org-123 on tokens per min\n(TPM): Limit 1000")
    add(status=None, error="client disconnected", cache="miss", cost_usd=0.0000042, input_tokens=3, output_tokens=1)
    add(cache="hit", cost_usd=0.0, input_tokens=3, output_tokens=1)
    yield url
    db.close()


def lines(*args: str) -> list[str]:
    done = corral("flows", "--config", "/dev/null", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_filters(record: str) -> None:
    def count(*args: str) -> int:
        return len(lines("--db", record, *args)) - 1  # minus the header
    assert count() == 4
    assert count("--provider", "anthropic") == 1
    assert count("--model", "claude-x") == 1
    assert count("--status", "429") == 1 and count("--status", "4xx") == 1 and count("--status", "none") == 1
    assert count("--errors") == 2
    assert count("--since", "1h") == 3
    assert count("--cache", "hit") == 1


def test_table_has_retries_clipped_errors_and_no_trailing_blanks(record: str) -> None:
    out = lines("--db", record, "--provider", "anthropic")
    assert out[0].split() == flows.HEADERS
    row = out[1]
    assert row.split()[12] == "2"  # retries
    assert row.endswith("Rate limit reached for claude-x in organization…")
    assert len(row.split("  ")[-1]) <= flows.ERROR_CHARS
    assert all(line == line.rstrip() for line in lines("--db", record))


def test_small_costs_keep_their_digits(record: str) -> None:
    out = "\n".join(lines("--db", record))
    assert "$0.0000042" in out and "$0.000000 " not in out


def test_no_such_provider(record: str) -> None:
    done = corral("flows", "--db", record, "--provider", "opnai", "--config", "/dev/null")
    assert done.returncode == 1
    assert done.stdout.strip() == "corral: no such provider 'opnai' (did you mean 'openai'?); see `corral providers`"


def test_bad_status_is_one_line(record: str) -> None:
    done = corral("flows", "--db", record, "--status", "teapot", "--config", "/dev/null")
    assert done.returncode == 1 and done.stdout.startswith("corral: --status must be")


def test_follow_prints_the_latest_oldest_first_then_new_rows(record: str) -> None:
    args = argparse.Namespace(provider=None, model=None, status=None, errors=False, since=None, cache=None)
    out: list[str] = []
    arrivals = iter([[], [{"model": "late-1"}, {"model": "late-2", "started_at": NOW - datetime.timedelta(minutes=5)}],
                     []])

    def sleep(_: float) -> None:  # a poll interval passes: the gateway records what it finished
        for fields in next(arrivals):
            add(**fields)

    flows.follow(flows.build_query(args), 2, out.append, as_json=False, full=False, sleep=sleep, polls=3,
                 now=lambda: NOW)
    assert out[0].split() == flows.HEADERS
    models = [line.split()[3] for line in out[1:]]
    assert len(models) == 4 and "old-model" not in models[:2]  # the newest two of the record first
    assert models[2:] == ["late-2", "late-1"]  # then each new row once, in order of start
    assert all(line == line.rstrip() for line in out)


def test_csv_export_writes_small_costs_as_plain_decimals(record: str) -> None:
    done = corral("export", "--format", "csv", "--db", record, "--config", "/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ",0.0000042," in done.stdout and "e-06" not in done.stdout


def test_follow_escapes_client_chosen_text_too(record: str) -> None:
    add(model="evil\x1b]0;owned\x07", error="line one\nline two", started_at=NOW + datetime.timedelta(seconds=1))
    args = argparse.Namespace(provider=None, model=None, status=None, errors=False, since=None, cache=None)
    out: list[str] = []
    flows.follow(flows.build_query(args), 1, out.append, as_json=False, full=False, sleep=lambda _: None, polls=0)
    assert "\x1b" not in out[1] and "evil\\x1b]0;owned\\x07" in out[1] and out[1].endswith("line one line two")
