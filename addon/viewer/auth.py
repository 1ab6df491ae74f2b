"""Who may reach the viewer: where it listens (loopback, or a token) and the token check."""

from __future__ import annotations

import hmac

from mitmproxy import exceptions

from addon import netaddr


def parse_listen(value: str) -> tuple[str, int]:
    """``[viewer] listen``: an empty host means every interface, as for mitmproxy's listen_host."""
    try:
        return netaddr.parse_hostport(value)
    except ValueError as e:
        raise exceptions.OptionsError(f"corral_viewer_listen {e} (or empty to turn the viewer off)") from None


def check_listen(listen: str, token: str) -> tuple[str, int] | None:
    """The address to listen on (None: viewer off). Raises OptionsError off loopback without a token."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    if not netaddr.is_loopback(host) and not token:
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
