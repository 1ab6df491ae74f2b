"""Off loopback the viewer needs a token; with a token the API refuses every request without it."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest
from mitmproxy import exceptions

from addon.netaddr import is_loopback
from addon.viewer.auth import check_listen, token_ok
from tests.support.gateway import REPO_ROOT, Gateway, free_port, new_tag
from tests.support.reliability import reliability
from tests.support.viewer import viewer_gateway


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)
    assert check_listen(f"[{host}]:8081" if ":" in host else f"{host}:8081", "") is not None


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "10.1.2.3:8081", "[::]:8081", ":8081", "viewer.example.com:8081"])
def test_non_loopback_without_token_is_refused(listen: str) -> None:
    with pytest.raises(exceptions.OptionsError, match="token"):
        check_listen(listen, "")
    assert check_listen(listen, "s3cret") is not None


def test_empty_listen_turns_the_viewer_off_and_bad_listen_is_an_error() -> None:
    assert check_listen("", "") is None
    with pytest.raises(exceptions.OptionsError):
        check_listen("127.0.0.1", "")


def test_token_comparison() -> None:
    assert token_ok("", None, None)
    assert token_ok("abc", "Bearer abc", None)
    assert token_ok("abc", None, "abc")
    assert not token_ok("abc", None, None)
    assert not token_ok("abc", "Bearer abd", None)
    assert not token_ok("abc", None, "ab")
    assert not token_ok("abc", "Basic abc", None)


@reliability("isolation", "viewer/API on a non-loopback address without a token", "the gateway refuses to start", "-")
def test_gateway_refuses_to_start_with_an_open_viewer_and_no_token(mock, tmp_path) -> None:
    port = free_port()
    gw = Gateway(mock.url, workdir=tmp_path, config={"viewer": {"listen": f"0.0.0.0:{port}"}})
    proc = subprocess.run(gw.command(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "not loopback" in proc.stdout + proc.stderr and "token" in proc.stdout + proc.stderr
    with socket.socket() as s:  # nothing was left listening on the viewer port
        assert s.connect_ex(("127.0.0.1", port)) != 0


@reliability("isolation", "viewer API call without or with a wrong token", "401", "-")
def test_api_with_a_token_refuses_requests_without_it(mock, tmp_path) -> None:
    for vg in viewer_gateway(mock, tmp_path, new_tag(), token="t0ken-for-test"):
        url = vg.url
        for path in ("api/flows", "api/facets", "api/analytics", "api/flows/x", "metrics"):
            r = httpx.get(url + path)
            assert r.status_code == 401, path
            assert "t0ken" not in r.text
            assert httpx.get(url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "api/flows", headers={"Authorization": "Bearer t0ken-for-test"}).status_code == 200
        assert httpx.get(url + "api/flows", params={"token": "t0ken-for-test"}).status_code == 200
        assert httpx.get(url + "metrics", params={"token": "t0ken-for-test"}).status_code == 200
        assert httpx.get(url).status_code == 200  # the static page itself holds no data


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
