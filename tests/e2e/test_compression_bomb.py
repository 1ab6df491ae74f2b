"""A compression bomb from upstream through a real gateway: ~1 MB of gzip that inflates to 1 GiB.

The client gets the compressed bytes untouched; the gateway process's peak RSS (VmHWM in
/proc/<pid>/status) stays far below the inflated size, and the row says the response was too large
to decode. Heavy (`make test-heavy`): making the bomb costs a few seconds of CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import Gateway, new_tag
from tests.support.raw_server import RawServer
from tests.support.reliability import reliability

pytestmark = pytest.mark.heavy

MiB = 1 << 20
INFLATED = 1024 * MiB


def gzip_bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(4 * MiB)
    return b"".join([c.compress(zero) for _ in range(INFLATED // len(zero))] + [c.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb()


@pytest.fixture(scope="module")
def upstream(bomb: bytes) -> Iterator[RawServer]:
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(bomb))
    with RawServer(head + bomb, read_request=True) as server:
        yield server


@reliability(
    "upstream faults", "compression bomb through the gateway (1 MB gzip inflating to 1 GiB)",
    "the compressed bytes, unchanged", "row with parse_error 'response too large to decode'; gateway peak RSS "
    "stays near its baseline plus parse_limit",
)
def test_gzip_bomb_passes_through_without_inflating_the_gateway(
    upstream: RawServer, bomb: bytes, tmp_path_factory
) -> None:
    config = {"providers.openai": {"upstream": f"http://127.0.0.1:{upstream.port}"}, "retries": {"attempts": 1}}
    with Gateway(None, config=config, workdir=tmp_path_factory.mktemp("bomb")) as gw:
        assert gw.proc is not None
        tag = new_tag()
        with httpx.Client(timeout=60) as client, client.stream(
            "POST", gw.base("openai") + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": []}, headers={"x-test-id": tag, "authorization": "Bearer sk-b"},
        ) as resp:
            received = b"".join(resp.iter_raw())  # raw: the test must not inflate it either
        assert resp.status_code == 200 and received == bomb
        row = gw.row_for(tag, timeout=30)
        peak = gw.peak_rss()
    print(f"gateway peak RSS {peak / MiB:.0f} MiB for a {len(bomb) / MiB:.1f} MB bomb inflating to 1 GiB")
    assert peak < 512 * MiB, f"gateway peak RSS {peak / MiB:.0f} MiB"
    assert (row["parse_error"] or "").startswith("response too large to decode"), row["parse_error"]
