"""Who may reach the viewer: loopback addresses, the listen setting, and the token check."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions

from addon.netaddr import is_loopback
from addon.viewer.auth import check_listen, token_ok


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)
    assert check_listen(f"[{host}]:8081" if ":" in host else f"{host}:8081", "") is not None


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "10.1.2.3:8081", "[::]:8081", ":8081", "viewer.example.com:8081"])
def test_non_loopback_without_token_is_refused(listen: str) -> None:
    with pytest.raises(exceptions.OptionsError, match="token"):
        check_listen(listen, "")
    assert check_listen(listen, "s3cret") is not None


def test_empty_listen_turns_the_viewer_off_and_bad_listen_is_an_error() -> None:
    assert check_listen("", "") is None
    with pytest.raises(exceptions.OptionsError):
        check_listen("127.0.0.1", "")


def test_token_comparison() -> None:
    assert token_ok("", None, None)
    assert token_ok("abc", "Bearer abc", None)
    assert token_ok("abc", None, "abc")
    assert not token_ok("abc", None, None)
    assert not token_ok("abc", "Bearer abd", None)
    assert not token_ok("abc", None, "ab")
    assert not token_ok("abc", "Basic abc", None)
