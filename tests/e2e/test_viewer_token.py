"""The viewer's listen setting in a real gateway process: an open viewer without a token refuses to
start; a viewer port already taken is a warning, and the gateway keeps proxying. (The checks themselves,
and the token on every API call, are tested in process: tests/unit/viewer/.)"""

from __future__ import annotations

import socket
import subprocess

import httpx

from tests.support.gateway import REPO_ROOT, Gateway, free_port, new_tag
from tests.support.reliability import reliability


@reliability("isolation", "viewer/API on a non-loopback address without a token", "the gateway refuses to start", "-")
def test_gateway_refuses_to_start_with_an_open_viewer_and_no_token(mock, tmp_path) -> None:
    port = free_port()
    gw = Gateway(mock.url, workdir=tmp_path, config={"viewer": {"listen": f"0.0.0.0:{port}"}})
    proc = subprocess.run(gw.command(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "not loopback" in proc.stdout + proc.stderr and "token" in proc.stdout + proc.stderr
    with socket.socket() as s:  # nothing was left listening on the viewer port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_viewer_port_taken_warns_and_the_gateway_still_proxies(mock, tmp_path) -> None:
    """Two gateways with the default-style viewer setting: the second cannot have the port, says so,
    and keeps proxying (mitmproxy exits on an error logged at startup, so this must be a warning)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gw = Gateway(mock.url, workdir=tmp_path, config={"viewer": {"listen": f"127.0.0.1:{port}"}}).start()
        try:
            tag = new_tag()
            r = httpx.post(gw.base("openai/v1/chat/completions"), json={"model": "gpt-4o-mini", "messages": []},
                           headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag,
                                    "authorization": "Bearer sk-viewer-port"}, timeout=10)
            assert r.status_code == 200
            assert gw.row_for(tag)["status"] == 200
            assert "viewer could not listen" in gw.log()
        finally:
            gw.stop()
