"""The viewer's "copy as curl": a recorded request as a curl command that goes through Corral again.

The command targets the gateway, never the upstream: run, it is a new flow Corral routes, meters and
records like the original. A flow with a reverse-mode path (``gateway_path``, every flow the router
could express as ``/<prefix>/...``) becomes ``http://<gateway>/<prefix>/...``; the others (SigV4,
per-host explicit upstreams, rows recorded before that column) go through the gateway as an explicit
proxy, trusting Corral's CA.

Credentials were never recorded: the credential header comes back as a shell variable
(``$OPENAI_API_KEY``) the user sets, every other secret header is left out.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from pathlib import Path
from typing import Any

from mitmproxy import ctx
from mitmproxy.proxy.mode_specs import ProxyMode

from addon import netaddr
from addon.ca import CaFiles
from addon.credentials import CREDENTIAL_HEADERS, SECRET_HEADERS

# Framing headers curl recomputes itself, and the Host the gateway's URL sets.
_CURL_SKIP = SECRET_HEADERS | {"content-length", "host", "connection", "transfer-encoding", "accept-encoding"}
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # a browser elsewhere cannot dial these
_SAFE_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def gateway_address(viewer_host: str) -> tuple[str, int]:
    """Where clients reach the gateway: its regular-mode listener. A listener on every interface is
    reached by the name the viewer itself was reached by (the browser's machine can resolve it)."""
    host, port = "127.0.0.1", 8080
    for spec in ctx.options.mode:
        mode = ProxyMode.parse(spec)
        if mode.type_name == "regular":
            host = mode.listen_host(ctx.options.listen_host)
            port = mode.listen_port(ctx.options.listen_port) or port
            break
    if host in _WILDCARD_HOSTS:
        host = viewer_host.strip("[]") or "127.0.0.1"
    return host, port


def _base_url(address: tuple[str, int]) -> str:
    return "http://" + netaddr.local_hostport(*address)


def key_variable(provider: str | None) -> str:
    """The environment variable most SDKs read the provider's key from: OPENAI_API_KEY, ..."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", provider or "").strip("_").upper()
    return f"{name or 'PROVIDER'}_API_KEY"


def curl_command(flow: dict[str, Any], gateway: tuple[str, int]) -> str:
    """The recorded request as a curl command line through the gateway at ``gateway``."""
    method = flow.get("method") or "GET"
    if flow.get("gateway_path"):
        head = ["curl", "-X", method, _base_url(gateway) + flow["gateway_path"]]
    else:
        upstream = urllib.parse.urlsplit(flow.get("upstream") or "")
        netloc = upstream.netloc or flow.get("host") or "localhost"
        url = f"{upstream.scheme or 'https'}://{netloc}{flow.get('path') or '/'}"
        head = ["curl", "-X", method, url, "--proxy", _base_url(gateway)]
        if url.startswith("https:"):
            head += ["--cacert", str(CaFiles(Path(ctx.options.confdir).expanduser()).cert)]
    parts = [shlex.quote(p) for p in head]
    if flow.get("stream"):
        parts.append("-N")  # print the stream as it arrives
    for name, value in flow.get("request_headers") or []:
        lower = name.lower()
        if lower == "accept-encoding":
            parts.append("--compressed")  # curl asks for what it can decode, and decodes it
        elif lower in CREDENTIAL_HEADERS and _SAFE_NAME.match(name):
            # Double quotes: the shell expands the variable, the recorded fingerprint is not sent.
            scheme = "Bearer " if lower == "authorization" else ""
            parts += ["-H", f'"{name}: {scheme}${key_variable(flow.get("provider"))}"']
        elif lower not in _CURL_SKIP:
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    body = flow.get("request_body")
    if body and not body.startswith("base64:"):
        parts += ["--data-raw", shlex.quote(body)]
    return " ".join(parts)
