"""/_corral/ready says not ready, with the reason, when the record database refuses writes or the
shared state store does not answer; other peers get the verdict without the details."""

from __future__ import annotations

import json
from pathlib import Path

import peewee
import pytest
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.health import Health
from addon.services import SharedState
from addon.storage import db as dbmod
from addon.storage.models import database_proxy
from tests.support.gateway import refused_port


def probe(endpoint: str, peer: str = "127.0.0.1") -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.peername = (peer, 40000)
    flow.metadata[md.INTERNAL] = endpoint
    return flow


@pytest.fixture
def record(tmp_path: Path):
    db = dbmod.connect(f"sqlite:///{tmp_path / 'c.db'}")
    yield tmp_path / "c.db"
    db.close()


async def test_ready_when_database_writable_and_state_in_memory(record: Path) -> None:
    health = Health(SharedState())
    with taddons.context(health):
        flow = probe("/ready")
        await health.requestheaders(flow)
        assert flow.response.status_code == 200
        assert json.loads(flow.response.content) == {"status": "ready", "checks": {"database": "ok", "state": "ok"}}


async def test_not_ready_when_the_database_is_read_only(record: Path) -> None:
    database_proxy.initialize(peewee.SqliteDatabase(f"file:{record}?mode=ro", uri=True))
    health = Health(SharedState())
    with taddons.context(health):
        flow = probe("/ready")
        await health.requestheaders(flow)
        body = json.loads(flow.response.content)
        assert flow.response.status_code == 503 and body["status"] == "not ready"
        assert body["checks"]["database"].startswith("failed: ") and "readonly" in body["checks"]["database"]
        assert body["checks"]["state"] == "ok"


async def test_not_ready_when_redis_does_not_answer(record: Path) -> None:
    shared = SharedState()
    shared.url = f"redis://127.0.0.1:{refused_port()}"  # nothing listens there
    health = Health(shared)
    with taddons.context(health):
        flow = probe("/ready")
        await health.requestheaders(flow)
        assert flow.response.status_code == 503
        assert json.loads(flow.response.content)["checks"]["state"].startswith("failed: ")
        remote = probe("/ready", peer="10.1.2.3")
        await health.requestheaders(remote)
        assert json.loads(remote.response.content)["checks"] == {"database": "ok", "state": "failed"}


async def test_health_is_liveness_only() -> None:
    health = Health(SharedState())
    with taddons.context(health):
        flow = probe("/health")
        await health.requestheaders(flow)
        assert (flow.response.status_code, json.loads(flow.response.content)) == (200, {"status": "ok"})
        other = probe("/limits")
        await health.requestheaders(other)
        assert other.response is None  # another addon's endpoint
