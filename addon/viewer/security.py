"""What every viewer response shares: the Host check against DNS rebinding, security headers, and an
access log that never shows the API token.

A mixin for tornado handlers (the API's and the static files'), so no answer, error pages included,
goes out without them.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from addon.hostcheck import REFUSED

# The page loads its scripts and styles from files only (no inline script, no eval), talks only to its
# own origin and cannot be framed; it holds prompts and responses.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
}
TOKEN_PARAM = "token"


def mask_token(uri: str) -> str:
    """``uri`` with the value of every ``token`` query parameter replaced (the name compared after
    percent-decoding, as tornado reads it), for logs."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        if eq and urllib.parse.unquote_plus(name) == TOKEN_PARAM:
            pair = f"{name}=***"
        parts.append(pair)
    return path + "?" + "&".join(parts)


class Guarded:
    """Mixed into every viewer handler, before tornado.web.RequestHandler."""

    viewer: Any
    request: Any

    def set_default_headers(self) -> None:
        # tornado calls this again after clear() on errors, so error answers carry the headers too.
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)  # type: ignore[attr-defined]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JSON with the status' reason, never tornado's HTML page or a traceback.
        self.finish({"error": self._reason})  # type: ignore[attr-defined]

    def host_refused(self) -> bool:
        """Answers 403 (JSON) and says True when the Host header does not name this machine."""
        host = self.request.headers.get("Host")
        if self.viewer.host_allowed(host, self._local_address()):
            return False
        self.set_status(403)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json; charset=utf-8")  # type: ignore[attr-defined]
        self.finish({"error": REFUSED.format(host=(host or "")[:200])})  # type: ignore[attr-defined]
        return True

    def _local_address(self) -> str | None:
        stream = getattr(self.request.connection, "stream", None)
        try:
            return stream.socket.getsockname()[0] if stream is not None and stream.socket else None
        except OSError:
            return None

    def _request_summary(self) -> str:
        # tornado's access and error log lines use this; its own version prints request.uri as sent.
        return f"{self.request.method} {mask_token(self.request.uri)} ({self.request.remote_ip})"
