"""DNS rebinding against a real gateway: a page under an attacker's name that now resolves to 127.0.0.1
reads nothing from the viewer, its API, /metrics or the gateway's /_corral/* endpoints."""

from __future__ import annotations

import socket
import urllib.parse

import httpx

from tests.support.gateway import Gateway


def _port(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    return port


def test_a_rebound_name_reads_nothing(gateway: Gateway) -> None:
    viewer_port = _port(gateway.viewer_url)
    for path in ("", "api/flows", "api/analytics", "metrics"):
        r = httpx.get(gateway.viewer_url + path, headers={"Host": f"rebind.attacker.example:{viewer_port}"},
                      timeout=30)
        assert r.status_code == 403 and "DNS rebinding" in r.json()["error"], path
        assert r.headers["x-frame-options"] == "DENY"
        assert httpx.get(gateway.viewer_url + path, timeout=30).status_code == 200, path


def test_internal_endpoints_answer_only_names_of_this_machine(gateway: Gateway) -> None:
    # The machine's host name is one the router takes as the gateway's own, but a browser reaching it
    # by that name may have been sent there by anyone's DNS: it is no proof of a local client.
    host = f"{socket.gethostname()}:{gateway.port}"
    r = httpx.get(gateway.url + "/_corral/limits", headers={"Host": host}, timeout=30)
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]
    assert httpx.get(gateway.url + "/_corral/limits", timeout=30).status_code == 200
    local = {"Host": f"localhost:{gateway.port}"}
    assert httpx.get(gateway.url + "/_corral/limits", headers=local, timeout=30).status_code == 200
