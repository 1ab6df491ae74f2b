"""Shared fixtures: one replaying mock upstream and a few gateway subprocesses per test session.

Per-test isolation comes from a unique ``x-test-id`` header (``tag`` fixture) that ends up in the
recorded request headers, and from ``mock.reset()`` before each test. Gateways are started on first
use: in-process tests (tests/unit) never start one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import httpx._transports.default
import pytest

from tests.support import corpus, pgdb
from tests.support.gateway import Gateway, free_port, new_tag, refused_port
from tests.support.mock_upstream import MockUpstream
from tests.support.viewer import ViewerGateway, viewer_gateway
from tests.support.waiting import until

# Tests never leave loopback: make sure no proxy settings of the machine interfere.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

# httpx builds a new SSL context for every client it makes (~50 ms of CPU: it loads certifi's bundle),
# and the tests make many hundreds, directly and through the provider SDKs, nearly all for plain-HTTP
# loopback URLs. A default context is configuration only: build each kind once. (Contexts a test
# makes itself, e.g. trusting the gateway's CA, are passed as they are.)
_new_ssl_context = httpx._transports.default.create_ssl_context
_ssl_contexts: dict[tuple, object] = {}


def _default_ssl_context(verify=True, cert=None, trust_env=True):
    if cert is not None or not isinstance(verify, bool):
        return _new_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
    key = (verify, trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    if key not in _ssl_contexts:
        _ssl_contexts[key] = _new_ssl_context(verify=verify, trust_env=trust_env)
    return _ssl_contexts[key]


httpx._transports.default.create_ssl_context = _default_ssl_context


def pytest_sessionstart(session: pytest.Session) -> None:
    # Without the recorded traffic most tests cannot run: say so once instead of failing hundreds.
    if not any(corpus.CORPUS_DIR.glob("*.json")):
        pytest.exit(f"no recorded provider traffic in {corpus.CORPUS_DIR}: put shared/corpus beside the "
                    "checkout or set CORRAL_CORPUS_DIR (see README, Development)", returncode=4)


@pytest.fixture(scope="session")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as m:
        yield m


@pytest.fixture(autouse=False)
def fresh_mock(mock: MockUpstream) -> MockUpstream:
    mock.reset()
    mock.default = None
    mock.chunk_delay = 0.001  # stream chunks apart in time (each its own read), without slowing the suite
    return mock


@pytest.fixture(scope="session")
def gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The default gateway: every catalog provider of the corpus pointed at the mock. Also: its viewer
    and /metrics on ``gateway.viewer_url``, and a custom provider ``deadend`` whose upstream refuses
    every connection (retried without noticeable waits)."""
    viewer_port = free_port()
    config = {
        "viewer": {"listen": f"127.0.0.1:{viewer_port}"},
        "providers.deadend": {"custom": True, "upstream": f"http://127.0.0.1:{refused_port()}"},  # refuses all
        "retries.providers.deadend": {"backoff": 0.01, "backoff_max": 0.02},
    }
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("gateway"))
    gw.viewer_url = f"http://127.0.0.1:{viewer_port}/"
    with gw:
        # The proxy port answers first; the viewer binds its own port in `running`, a moment later.
        until(lambda: _listening(viewer_port), timeout=20, message=f"viewer not listening:\n{gw.log()[-2000:]}")
        yield gw


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def cache_gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with the response cache on (tests/e2e/test_cache*.py)."""
    with Gateway(mock.url, config={"cache": {"enabled": True}}, workdir=tmp_path_factory.mktemp("cache")) as gw:
        yield gw


@pytest.fixture(scope="session")
def viewer(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerGateway]:
    """A gateway with its viewer, filled by real SDK calls of every kind (tests/e2e/test_viewer_*.py).
    Nothing else records into it; tests that add flows add them with the same tag."""
    mock.reset()
    mock.default = None
    for vg in viewer_gateway(mock, tmp_path_factory.mktemp("viewer"), new_tag()):
        vg.populate()
        yield vg


@pytest.fixture
def tag() -> str:
    return new_tag()


def pytest_report_header(config: pytest.Config) -> str:
    return f"corral record backend: {pgdb.backend()} (CORRAL_TEST_DB)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pgdb.drop_all()  # the throwaway PostgreSQL databases of CORRAL_TEST_DB=postgres
