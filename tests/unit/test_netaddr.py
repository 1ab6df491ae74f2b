"""addon/netaddr.py: the one loopback test and the one HOST:PORT parser every command and addon uses."""

from __future__ import annotations

import pytest

from addon import netaddr


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost", "LocalHost", "ip6-localhost",
    "::ffff:127.0.0.1",  # a dual-stack listener's view of an IPv4 loopback peer
])
def test_loopback(host: str) -> None:
    assert netaddr.is_loopback(host)


@pytest.mark.parametrize("host", [
    "", "0.0.0.0", "::", "[::]", "10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "localhost.evil.example", "gateway",
])
def test_not_loopback(host: str) -> None:
    assert not netaddr.is_loopback(host)


@pytest.mark.parametrize("value,parsed", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("localhost:0", ("localhost", 0)),
    ("gateway.example.com:65535", ("gateway.example.com", 65535)),
    (":8080", ("", 8080)),  # every interface: what that means is the caller's call
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:9000", ("::", 9000)),
    ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    (":::8080", ("::", 8080)),  # unbracketed: the port follows the last colon
    ("::1:8080", ("::1", 8080)),
])
def test_parse_hostport(value: str, parsed: tuple[str, int]) -> None:
    assert netaddr.parse_hostport(value) == parsed


@pytest.mark.parametrize("value,says", [
    ("127.0.0.1", "HOST:PORT"),
    ("", "HOST:PORT"),
    ("127.0.0.1:", "HOST:PORT"),
    ("127.0.0.1:http", "HOST:PORT"),
    ("127.0.0.1:-1", "HOST:PORT"),
    ("127.0.0.1:٨٠", "HOST:PORT"),  # non-ASCII digits
    ("127.0.0.1:65536", "out of range"),
    ("::1", "neither a host name nor an IPv6 address"),  # would be host ":" port 1
    ("[::1]", "HOST:PORT"),
    ("[::1]8080", "HOST:PORT"),
    ("[gateway]:8080", "not an IPv6 address"),
    ("[::1:8080", "HOST:PORT"),
])
def test_parse_hostport_errors_say_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        netaddr.parse_hostport(value)


@pytest.mark.parametrize("host,port,address", [
    ("127.0.0.1", 8080, "127.0.0.1:8080"),
    ("", 8080, "127.0.0.1:8080"),
    ("0.0.0.0", 8080, "127.0.0.1:8080"),
    ("::", 8080, "[::1]:8080"),  # an IPv6 wildcard listener is IPv6 only (asyncio sets IPV6_V6ONLY)
    ("::1", 9000, "[::1]:9000"),
    ("gateway.local", 1, "gateway.local:1"),
])
def test_local_hostport(host: str, port: int, address: str) -> None:
    assert netaddr.local_hostport(host, port) == address


def test_callers_wrap_the_error_in_their_own() -> None:
    from mitmproxy import exceptions

    from addon import gateway
    from addon.cli import env, limits
    from addon.viewer import auth

    assert gateway.parse_listen(":8080") == ("127.0.0.1", 8080)  # `corral start`: empty host is loopback
    assert auth.parse_listen(":8082") == ("", 8082)  # the viewer: empty host is every interface
    with pytest.raises(ValueError, match=r"^--listen must be HOST:PORT"):
        gateway.parse_listen("8080")
    with pytest.raises(exceptions.OptionsError, match=r"^corral_viewer_listen .*out of range"):
        auth.parse_listen("127.0.0.1:70000")
    # `corral limits` and `corral env` agree on where a wildcard listener is reached (they did not for "::").
    assert limits.endpoint("[::]:8080") == "http://[::1]:8080/_corral/limits"
    assert env.proxy_url("[::]:8080") == "http://[::1]:8080"
