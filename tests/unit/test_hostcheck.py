"""Which Host values Corral's own surfaces answer (addon/hostcheck.py), and the /_corral/* guard on the
gateway port (addon/internal_hosts.py) that uses the same check."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addon import hostcheck, metadata as md
from addon.internal_hosts import InternalHosts
from tests.support.reliability import reliability

PORT = 8082


@pytest.mark.parametrize("value,parsed", [
    ("localhost", ("localhost", None)), ("LocalHost:8082", ("localhost", 8082)), ("[::1]:80", ("::1", 80)),
    ("[::1]", ("::1", None)), ("10.0.0.1:1", ("10.0.0.1", 1)),
])
def test_split_host(value: str, parsed) -> None:
    assert hostcheck.split_host(value) == parsed


@pytest.mark.parametrize("value", ["", ":80", "a:b", "::1", "[::1", "[::1]x", "a:99999", "a:-1", "a:\uff11"])
def test_split_host_refuses_malformed(value: str) -> None:
    assert hostcheck.split_host(value) is None


@pytest.mark.parametrize("host", [
    "127.0.0.1:8082", "127.0.0.1", "localhost:8082", "localhost", "[::1]:8082", "127.9.9.9:8082",
    "[::ffff:127.0.0.1]:8082", "0.0.0.0:8082", "localhost.:8082", "corral.localhost:8082", None,
])
def test_local_names_on_the_listen_port_are_allowed(host: str | None) -> None:
    assert hostcheck.HostPolicy().allows(host, PORT)


@pytest.mark.parametrize("host", [
    "rebind.attacker.example:8082", "rebind.attacker.example", "localhost.attacker.example:8082",
    "127.0.0.1.nip.io:8082", "localhost:9999", "127.0.0.1:80", "8.8.8.8:8082", "localhost.attacker.example.:8082",
    "evil@127.0.0.1:8082", "", "127.0.0.1:8082/x",
])
def test_other_names_are_refused(host: str) -> None:
    assert not hostcheck.HostPolicy().allows(host, PORT)


def test_the_address_the_client_connected_to_is_local() -> None:
    # 192.0.2.7 (TEST-NET) is no interface here; as the connection's own local address it is this machine.
    assert not hostcheck.HostPolicy().allows("192.0.2.7:8082", PORT)
    assert hostcheck.HostPolicy().allows("192.0.2.7:8082", PORT, connected="192.0.2.7")


def test_configured_names_with_and_without_port() -> None:
    policy = hostcheck.policy(["corral.internal", "viewer.example:443"])
    assert policy.allows("corral.internal", PORT) and policy.allows("CORRAL.internal:9000", PORT)
    assert policy.allows("viewer.example:443", PORT)
    assert not policy.allows("viewer.example:8082", PORT) and not policy.allows("viewer.example", PORT)


@pytest.mark.parametrize("entry", ["*", "http://x", "a b", "", "x:99999", "*.example"])
def test_bad_configured_names_are_refused_at_configure(entry: str) -> None:
    with pytest.raises(exceptions.OptionsError, match="corral_viewer_hosts"):
        hostcheck.policy([entry])


def _internal(host: str) -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.sockname = ("127.0.0.1", 8080)
    flow.request.host, flow.request.port, flow.request.path = "127.0.0.1", 8080, "/_corral/limits"
    flow.request.headers["host"] = host
    flow.metadata[md.INTERNAL] = "/limits"
    return flow


@reliability("isolation", "DNS rebinding: /_corral/* with a Host that does not name this machine",
             "403 JSON, the endpoint never runs", "-")
def test_internal_endpoints_refuse_a_foreign_host() -> None:
    guard = InternalHosts()
    with taddons.context() as tctx:
        tctx.options.add_option("corral_viewer_hosts", Sequence[str], [], "")  # the Viewer's, in the chain
        tctx.master.addons.add(guard)
        tctx.configure(guard, corral_viewer_hosts=["corral.lan"])
        refused = _internal("rebind.attacker.example:8080")
        guard.requestheaders(refused)
        assert refused.response is not None and refused.response.status_code == 403
        assert b"DNS rebinding" in refused.response.content
        for ok in ("127.0.0.1:8080", "localhost:8080", "corral.lan"):
            flow = _internal(ok)
            guard.requestheaders(flow)
            assert flow.response is None, ok
        other = tflow.tflow()  # not an internal endpoint: not this addon's business
        other.request.headers["host"] = "rebind.attacker.example"
        guard.requestheaders(other)
        assert other.response is None
