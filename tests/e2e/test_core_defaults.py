"""`corral start` with nothing but a port: the defaults alone must give a recording gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
from playhouse import db_url

from addon import paths
from tests.support.gateway import CORRAL, REPO_ROOT, free_port, new_tag


def test_no_config_no_db_flag_still_records_to_the_default_database(tmp_path) -> None:
    port, tag = free_port(), new_tag()
    proc = subprocess.Popen([*CORRAL, "start", "--listen", f"127.0.0.1:{port}", "--certs", str(tmp_path / "certs"),
                             "--set", "corral_viewer_listen="], cwd=tmp_path, env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/no-such-provider/x", headers={"x-test-id": tag}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        assert resp.status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    db = db_url.connect(paths.default_db_url())
    rows = db.execute_sql("SELECT status FROM flows WHERE request_headers LIKE ?", (f"%{tag}%",)).fetchall()
    assert rows == [(404,)]
    assert (REPO_ROOT / "data" / "corral.db").exists()
