"""Which ``Host`` header values Corral's own HTTP surfaces answer: the viewer, its API and /metrics, and
the gateway's ``/_corral/*`` endpoints.

DNS rebinding: a web page the operator visits resolves its own name to 127.0.0.1; the browser then sends
that name as ``Host`` and lets the page read every answer (same origin as far as the browser knows). A
name that does not name this machine is therefore refused with 403, as mitmweb does. Accepted:

- an IP literal that is an address of this machine (loopback, the address the client connected to, or
  any local interface's), with the listen port or no port;
- ``localhost`` or a name under it (RFC 6761), with the listen port or no port;
- a name the operator configured (``[viewer] hosts``): ``name`` with any port, ``name:port`` with that one.

No ``Host`` at all (HTTP/1.0) is accepted: a browser always sends one, so there is no name to rebind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import exceptions

from addon import netaddr

LOCAL_NAMES = frozenset({"localhost"})
REFUSED = (
    "corral: Host {host!r} does not name this machine; to reach Corral under that name, "
    "add it to [viewer] hosts (corral_viewer_hosts). Refused to protect against DNS rebinding."
)


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (lower-case host without brackets, port).
    None when it is none of these."""
    value = value.strip().lower()
    port: str | None = None
    if value.startswith("["):
        inside, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        host, port = inside, (rest[1:] if rest else None)
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    elif ":" in value:
        return None  # a bare IPv6 address must be bracketed in Host
    else:
        host = value
    if not host:
        return None
    if port is None:
        return host, None
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        return None
    return host, int(port)


def is_local_address(host: str, connected: str | None = None) -> bool:
    """Whether the IP literal ``host`` is an address of this machine. A name is never one here: only a
    name the browser did not resolve itself (an IP literal) is immune to rebinding."""
    ip = netaddr.ip_literal(host)
    if ip is None:
        return False
    if connected is not None and ip == netaddr.ip_literal(connected):
        return True
    return netaddr.is_local_address(ip)


def is_local_name(host: str) -> bool:
    """``localhost`` and its subdomains (RFC 6761: always loopback, never asked of DNS, so no page can
    have them rebound), also in the absolute form with a trailing dot."""
    name = host.removesuffix(".")
    return name in LOCAL_NAMES or name.endswith(".localhost")


def parse_names(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``[viewer] hosts`` entries -> (name, port or None). Raises ValueError naming a bad entry."""
    out = set()
    for entry in entries:
        parsed = split_host(entry)
        if parsed is None or any(c in entry for c in "/*?#@ \t"):
            raise ValueError(f"{entry!r} is not a host name or HOST:PORT")
        out.add(parsed)
    return frozenset(out)


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[tuple[str, int | None]] = frozenset()

    def allows(self, host_header: str | None, listen_port: int | None, connected: str | None = None) -> bool:
        """``host_header`` as the client sent it; ``listen_port`` the port the client connected to;
        ``connected`` the local address it connected to."""
        if host_header is None:
            return True
        parsed = split_host(host_header)
        if parsed is None:
            return False
        host, port = parsed
        if (host, port) in self.names or (host, None) in self.names:
            return True
        if port is not None and port != listen_port:
            return False
        return is_local_name(host) or is_local_address(host, connected)


def policy(entries: Iterable[str], option: str = "corral_viewer_hosts") -> HostPolicy:
    """The policy for configured names, or OptionsError naming the option and the bad entry."""
    try:
        return HostPolicy(parse_names(entries))
    except ValueError as e:
        raise exceptions.OptionsError(f"{option}: {e}") from None
