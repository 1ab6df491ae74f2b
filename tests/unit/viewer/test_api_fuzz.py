"""The viewer API under bad and hostile parameters: a JSON 400 or 404, never a 500 or a traceback."""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import AsyncIterator

import httpx
import pytest
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

from addon.storage import db as dbmod
from addon.viewer.server import Viewer
from tests.support.gateway import free_port
from tests.support.reliability import reliability

PARAMS = ("provider", "model", "status", "cache", "q", "since", "until", "limit", "before", "after", "token")
VALUES = [
    "100000000d", "99999999999999999999w", "1e309s", "-5h", "nan", "inf", "0d", "2026-13-45", "9999-12-31T23:59:59",
    "0001-01-01", "-1", "0", "99999999999999999999999", "1e3", "%00", "a%00b", "%ff%fe", "%", "_", "\\", "'\";--",
    "../../etc/passwd", "x" * 20000, "%E2%80%AE", "7xx", "2xx,4xx", "eyJ4Ijoi", "MjAyNg==",
]
PATHS = ["%00", "app.js%00", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "%ff", "a" * 5000,
         "index.html/", "vendor/%00/x", "//etc/passwd", "api/flows/%00", "api/flows/x%00/curl", "api/%00",
         "vendor/uplot/../../app.js", "\\..\\..\\x", "api/flows/" + "x" * 5000]


@pytest.fixture
async def url(tmp_path) -> AsyncIterator[str]:
    dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    viewer = Viewer(CollectorRegistry())
    port = free_port()
    with taddons.context(viewer) as tctx:
        tctx.configure(viewer, corral_viewer_listen=f"127.0.0.1:{port}")
        viewer.running()
        yield f"http://127.0.0.1:{port}/"
        viewer.done()


def _check(r: httpx.Response, what: str, allowed: tuple[int, ...] = (200, 400, 404)) -> None:
    assert r.status_code in allowed, (what, r.status_code, r.text[:300])
    assert "Traceback" not in r.text and 'File "' not in r.text, what
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str), what


async def _fuzz(client: httpx.AsyncClient, url: str, endpoints, params, values: list[str]) -> None:
    for endpoint in endpoints:
        for name in params:
            for value in values:
                query = value if value in VALUES and "%" in value else urllib.parse.quote(value, safe="")
                r = await client.get(f"{url}{endpoint}?{name}={query}")
                _check(r, f"{endpoint}?{name}={value[:40]!r}")


@reliability("bad client input", "viewer API with out-of-range or malformed parameters (since=100000000d, %00)",
             "400 or 404 JSON, never a 500 or a traceback", "-")
async def test_bad_query_parameters_get_400_never_500(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        # The parameters the API parses itself, with every case; the plain equality filters with a few.
        await _fuzz(client, url, ("api/flows",), ("since", "until", "limit", "before", "after", "status"), VALUES)
        await _fuzz(client, url, ("api/analytics",), ("since", "until"), VALUES)
        await _fuzz(client, url, ("api/flows",), ("provider", "q", "token"), ["%00", "%ff%fe", "%", "x" * 20000])
        for since, until in (("0001-01-01", "9999-12-31"), ("1h", "9999-12-31"), ("99999999d", "")):
            r = await client.get(f"{url}api/analytics", params={"since": since, "until": until})
            _check(r, f"analytics {since}..{until}")
            assert r.status_code != 200 or len(r.json()["series"]) <= 130  # bounded work whatever the range
        for endpoint in ("api/facets", "metrics", "api/flows/nope", "api/flows/nope/curl"):
            r = await client.get(f"{url}{endpoint}?since=100000000d&limit=%00")
            _check(r, endpoint)


@pytest.mark.heavy
async def test_fuzzed_query_parameters_never_get_500(url: str) -> None:
    """Every parameter of both list endpoints with every case, and random strings of control, bidi
    and other characters."""
    rng = random.Random(16)  # a fixed seed: the same cases on every run
    randoms = ["".join(chr(rng.choice([0, 7, 27, 37, 43, 127, 0xD7FF, 0x202E, rng.randrange(32, 0x3000)]))
                       for _ in range(rng.randrange(1, 12))) for _ in range(40)]
    async with httpx.AsyncClient(timeout=30) as client:
        await _fuzz(client, url, ("api/flows", "api/analytics"), PARAMS, VALUES + randoms)


async def test_bad_static_and_api_paths_get_404_never_500(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for path in PATHS:
            r = await client.get(url + path)
            _check(r, path, (200, 400, 403, 404))  # 403: tornado's answer to a path out of web/
            assert r.status_code != 200 or path in ("index.html/", "vendor/uplot/../../app.js"), path
