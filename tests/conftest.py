"""Shared fixtures: one replaying mock upstream and one gateway subprocess per test session.

Per-test isolation comes from a unique ``x-test-id`` header (``tag`` fixture) that ends up in the
recorded request headers, and from ``mock.reset()`` before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import corpus, pgdb
from tests.support.gateway import Gateway, new_tag
from tests.support.mock_upstream import MockUpstream

# Tests never leave loopback: make sure no proxy settings of the machine interfere.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


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
    mock.chunk_delay = 0.005
    return mock


@pytest.fixture(scope="session")
def gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The default gateway: every catalog provider of the corpus pointed at the mock."""
    gw = Gateway(mock.url, workdir=tmp_path_factory.mktemp("gateway"))
    with gw:
        yield gw


@pytest.fixture
def tag() -> str:
    return new_tag()


def pytest_report_header(config: pytest.Config) -> str:
    return f"corral record backend: {pgdb.backend()} (CORRAL_TEST_DB)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pgdb.drop_all()  # the throwaway PostgreSQL databases of CORRAL_TEST_DB=postgres
