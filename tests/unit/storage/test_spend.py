"""Spend grouping: unpriced flows apart (never $0), team and tags from the key's row, a series per group."""

from __future__ import annotations

import datetime

import pytest

from addon.storage import db as dbmod, spend
from addon.storage.models import Flow, GatewayKey
from addon.storage.queries import QueryError

T0 = datetime.datetime(2026, 12, 1, 10, 0)


@pytest.fixture
def db(tmp_path):
    database = dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    yield database
    database.close()


def flow(n: int, key: str | None, cost: float | None, unpriced: bool = False, minutes: int = 0) -> None:
    Flow.insert(id=f"f{n}", started_at=T0 + datetime.timedelta(minutes=minutes), mode="reverse", method="POST",
                path="/", provider="openai", model="gpt-4o-mini", gateway_key=key, cost_usd=cost,
                unpriced=unpriced).execute()


def test_groups_by_key_with_unpriced_apart_and_a_series(db) -> None:
    for key_id, name in (("aaaaaaaa", "a"), ("bbbbbbbb", "b")):
        GatewayKey.insert(id=key_id, name=name, prefix=f"ck-{key_id}", salt="s", key_hash="h",
                          created_at=T0).execute()
    flow(1, "aaaaaaaa", 0.5)
    flow(2, "aaaaaaaa", 0.25, minutes=90)
    flow(3, "bbbbbbbb", None, unpriced=True)
    flow(4, None, 9.0)  # no gateway key: not in a per-key view
    data = spend.spend("key", T0, T0 + datetime.timedelta(hours=3))
    assert [(r["key"], r["name"], r["flows"], r["cost_usd"], r["unpriced"]) for r in data["rows"]] == [
        ("ck-aaaaaaaa", "a", 2, 0.75, 0), ("ck-bbbbbbbb", "b", 1, None, 1)]
    assert data["total"] == {"flows": 3, "cost_usd": 0.75, "unpriced": 1, "input_tokens": 0, "output_tokens": 0}
    lines = data["series"]["lines"]
    assert sum(lines["ck-aaaaaaaa"]) == pytest.approx(0.75) and "ck-bbbbbbbb" not in lines
    assert spend.spend("provider", T0, T0 + datetime.timedelta(hours=3))["rows"][0]["cost_usd"] == 9.75


def test_team_and_tags_come_from_the_key_row() -> None:
    row = {"team": "search", "tags": '{"env": "prod", "app": "web"}'}
    assert spend.labels_of("team", row, "a", None, None) == ["search"]
    assert spend.labels_of("tag", row, "a", None, None) == ["app=web", "env=prod"]
    assert spend.labels_of("tag", {}, "a", None, None) == [spend.NO_TAG]
    assert spend.labels_of("team", None, None, None, None) == [spend.NO_KEY]


def test_bad_group_or_range(db) -> None:
    with pytest.raises(QueryError, match="--by"):
        spend.spend("user", T0)
    with pytest.raises(QueryError, match="--until"):
        spend.spend("key", T0, T0)
