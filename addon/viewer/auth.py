"""Who may reach the viewer: where it listens (loopback, or a token) and the token check."""

from __future__ import annotations

import hmac
import ipaddress

from mitmproxy import exceptions


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise exceptions.OptionsError(
            f"corral_viewer_listen must be HOST:PORT (or empty to turn the viewer off), got {value!r}"
        )
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost" are loopback; "", 0.0.0.0 and any other name are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, token: str) -> tuple[str, int] | None:
    """The address to listen on (None: viewer off). Raises OptionsError off loopback without a token."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    if not is_loopback(host) and not token:
        raise exceptions.OptionsError(
            f"the viewer would listen on {listen}, which is not loopback: set [viewer] token "
            "(corral_viewer_token) so the API needs it, or listen on 127.0.0.1"
        )
    return host, port


def token_ok(expected: str, authorization: str | None, query_token: str | None) -> bool:
    """Bearer header or ?token=, compared in constant time. No token configured: everything passes."""
    if not expected:
        return True
    given = ""
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    elif query_token:
        given = query_token
    return hmac.compare_digest(given.encode(), expected.encode())
