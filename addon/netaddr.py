"""Host and HOST:PORT helpers shared by the CLI, the gateway, the viewer and the rate limiter's endpoint.

Listen addresses follow mitmproxy and Python's ``socket``: an empty host means every interface, an IPv6
address is written in brackets when a port follows (``[::1]:8080``). A bare ``:::8080`` (``::`` and port
8080) is accepted too, as the port always follows the last colon.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # listening everywhere -> reachable here on


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not, or IPv4-mapped) and "localhost" are loopback. "" (every
    interface), 0.0.0.0, :: and any other name are not: assume they are reachable from outside."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return ip.is_loopback


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:::port`` or ``:port`` -> (host without brackets, port).
    The host may be empty (every interface); callers decide what that means for them.
    Raises ValueError naming what is wrong."""
    shape = f"must be HOST:PORT ([ADDR]:PORT for IPv6), got {value!r}"
    if value.startswith("["):
        inside, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(shape)
        host = inside
        if not _is_ipv6(host):
            raise ValueError(f"{host!r} in brackets is not an IPv6 address ({shape})")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(shape)
        if ":" in host and not _is_ipv6(host):
            raise ValueError(f"{host!r} is neither a host name nor an IPv6 address ({shape})")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(shape)
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} is out of range (0-65535) in {value!r}")
    return host, number


def local_hostport(host: str, port: int) -> str:
    """``host:port`` a client on this machine dials to reach a listener on ``host`` (a wildcard listener
    is reached on loopback), with IPv6 in brackets, ready for a URL."""
    host = WILDCARDS.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as an IP literal names, in every spelling a resolver accepts:
    dotted, short (``127.1``), hex or octal (``0x7f000001``), bracketed IPv6; an IPv4-mapped IPv6
    address (``::ffff:127.0.0.1``) as its IPv4 address. None for a name."""
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # a zone id (fe80::1%eth0) does not change the address
    except ValueError:
        if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))  # what getaddrinfo does with 127.1 or 0x7f000001
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=1024)
def is_local_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when connecting to ``ip`` reaches this machine: a loopback or wildcard address, or one of
    its interfaces' addresses. Asks the kernel (a socket binds only to a local address) instead of
    listing interfaces, so every interface and both address families count without a dependency."""
    if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 and :: connect to this machine too
        return True
    family = socket.AF_INET6 if isinstance(ip, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(ip), 0))
    except OSError:
        return False
    return True
