"""The viewer against a hostile web page and a careless log: DNS rebinding (Host check), security headers
on every answer, a page without inline script, and no token in any log line."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

from addon.storage import db as dbmod
from addon.viewer.security import mask_token
from addon.viewer.server import WEB_DIR, Viewer
from tests.support.gateway import free_port
from tests.support.reliability import reliability

PATHS = ("", "index.html", "app.js", "api/flows", "api/facets", "api/analytics", "api/flows/x", "metrics",
         "no-such-file.js")


@pytest.fixture
async def viewer(tmp_path) -> AsyncIterator[tuple[taddons.context, Viewer, str, int]]:
    dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    viewer = Viewer(CollectorRegistry())
    port = free_port()
    with taddons.context(viewer) as tctx:
        tctx.configure(viewer, corral_viewer_listen=f"127.0.0.1:{port}")
        yield tctx, viewer, f"http://127.0.0.1:{port}/", port
        viewer.done()


@reliability("isolation", "DNS rebinding: viewer, API or /metrics asked under a name that is not this machine",
             "403 JSON, nothing read", "-")
async def test_a_rebound_name_is_refused_everywhere(viewer) -> None:
    _tctx, addon, url, port = viewer
    addon.running()
    async with httpx.AsyncClient(timeout=10) as client:
        for path in PATHS:
            for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example", f"localhost:{port + 1}"):
                r = await client.get(url + path, headers={"Host": host})
                assert r.status_code == 403, (path, host)
                assert "DNS rebinding" in r.json()["error"]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
                r = await client.get(url + path, headers={"Host": host})
                assert r.status_code in (200, 404), (path, host)


async def test_configured_names_are_answered(viewer) -> None:
    tctx, addon, url, port = viewer
    tctx.configure(addon, corral_viewer_hosts=["corral.lan", "viewer.example:443"])
    addon.running()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url + "api/flows", headers={"Host": f"corral.lan:{port}"})).status_code == 200
        assert (await client.get(url + "api/flows", headers={"Host": "viewer.example:443"})).status_code == 200
        assert (await client.get(url + "api/flows", headers={"Host": "viewer.example"})).status_code == 403


@reliability("isolation", "viewer page framed, sniffed or scripted by injected markup",
             "CSP without inline script, X-Frame-Options DENY, nosniff, no-referrer on every answer", "-")
async def test_every_answer_carries_the_security_headers(viewer) -> None:
    tctx, addon, url, _port = viewer
    tctx.configure(addon, corral_viewer_token="t0ken")
    addon.running()
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await client.get(url + p, params={"token": "t0ken"}) for p in PATHS]
        answers += [await client.get(url + "api/flows"), await client.get(url, headers={"Host": "x.example"})]
        answers += [await client.get(url + "api/flows", params={"token": "t0ken", "status": "7xx"})]
    assert {r.status_code for r in answers} >= {200, 400, 401, 403, 404}
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_the_page_has_no_inline_script() -> None:
    """What the CSP would block: an inline <script> body, an on* handler attribute, a javascript: URL."""
    for page in WEB_DIR.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), page
        assert "javascript:" not in html.lower(), page


@pytest.mark.parametrize("uri,masked", [
    ("/api/flows?token=s3cret", "/api/flows?token=***"),
    ("/api/x?a=1&token=s3cret&b=2", "/api/x?a=1&token=***&b=2"),
    ("/api/x?%74oken=s3cret", "/api/x?%74oken=***"),
    ("/api/x?tokens=1", "/api/x?tokens=1"),
    ("/api/x", "/api/x"),
])
def test_mask_token(uri: str, masked: str) -> None:
    assert mask_token(uri) == masked


@reliability("secrets", "viewer token in a logged URL (?token=)", "-", "the log shows token=***")
async def test_the_token_never_reaches_the_log(viewer, caplog: pytest.LogCaptureFixture) -> None:
    tctx, addon, url, _port = viewer
    tctx.configure(addon, corral_viewer_token="t0ken-in-url")
    addon.running()
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("api/flows", "api/flows/nope", "no-such-file", "api/flows"):
            await client.get(url + path, params={"token": "t0ken-in-url", "status": "bad"})
        await client.get(url + "api/flows?%74oken=t0ken-in-url&before=zzz")
        await client.get(url + "api/flows", params={"token": "wrong-t0ken-in-url"})
    # The server's lines only: httpx logs the URL it asked for on the client side.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "api/flows" in logged  # the failures were logged, with their URL
    assert "t0ken-in-url" not in logged
