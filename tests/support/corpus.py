"""Access to the recorded provider exchanges in shared/corpus (see its README.md).

The corpus lives beside the repository (``<repo>/../shared/corpus``) so that CI, which
clones the repo fresh and copies ``shared/`` next to it, finds it without configuration. A clone
made elsewhere from a local checkout (``git clone /work/main /tmp/x``) finds it beside the checkout it
was cloned from. ``CORRAL_CORPUS_DIR`` overrides the location.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]


def _find_corpus() -> Path:
    if os.environ.get("CORRAL_CORPUS_DIR"):
        return Path(os.environ["CORRAL_CORPUS_DIR"]).resolve()
    beside = REPO_ROOT.parent / "shared" / "corpus"
    if beside.is_dir():
        return beside.resolve()
    try:  # a clone of a local checkout: look beside the checkout it came from
        origin = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_dir():
        candidate = Path(origin).resolve().parent / "shared" / "corpus"
        if candidate.is_dir():
            return candidate
    return beside.resolve()


CORPUS_DIR = _find_corpus()

Exchange = dict[str, Any]


def names() -> list[str]:
    """All exchange names (file stems), sorted."""
    return sorted(p.stem for p in CORPUS_DIR.glob("*.json"))


@functools.cache
def _load_cached(name: str) -> Exchange:
    path = CORPUS_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no corpus exchange named {name!r} in {CORPUS_DIR}")
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def load(name: str) -> Exchange:
    """The parsed exchange. Cached: treat the result as read-only."""
    return _load_cached(name.removesuffix(".json"))


def _status(name: str) -> int:
    return int(load(name)["response"]["status"])


def _matches(name: str, provider: str | None) -> bool:
    return provider is None or load(name)["provider"] == provider


def success_names(provider: str | None = None) -> list[str]:
    """Exchanges with an HTTP status below 400 (includes streams carrying in-band errors)."""
    return [n for n in names() if _status(n) < 400 and _matches(n, provider)]


def error_names(provider: str | None = None) -> list[str]:
    """Exchanges with an HTTP status of 400 or more."""
    return [n for n in names() if _status(n) >= 400 and _matches(n, provider)]


def response_bytes(exchange: Exchange) -> bytes:
    """The recorded wire bytes of the response body.

    ``body_base64`` holds the exact bytes when they were binary (gzip, AWS event stream);
    otherwise ``body_text`` is the body itself.
    """
    response = exchange["response"]
    if response.get("body_base64"):
        return base64.b64decode(response["body_base64"])
    text = response.get("body_text")
    return b"" if text is None else text.encode("utf-8")


def request_path(exchange: Exchange) -> str:
    """Path plus query string of the recorded request URL (what goes on the request line)."""
    parts = urlsplit(exchange["request"]["url"])
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


# --- stream framing -------------------------------------------------------------------
# The mock replays a stream as one HTTP chunk per event so that tests can observe
# incremental delivery; these helpers find the event boundaries in the recorded bytes.

_STREAM_TYPES = {
    "text/event-stream": "sse",
    "application/x-ndjson": "ndjson",
    "application/stream+json": "ndjson",
    "application/vnd.amazon.eventstream": "aws-eventstream",
}
# A line ending per the SSE spec: CRLF, LF or a lone CR. The lookahead stops "\r\n" from
# being read as two endings, which would split an event in the middle.
_EOL = r"(?:\r\n|\n|\r(?!\n))"
_SSE_EVENT_END = re.compile(_EOL + _EOL)
GZIP_PIECE = 256  # compressed streams cannot be cut at events; use fixed-size pieces


def header_value(headers: dict[str, Any], name: str) -> str:
    """First value of a recorded header (values may be a string or a list)."""
    value = headers.get(name.lower(), "")
    return (value[0] if value else "") if isinstance(value, list) else str(value)


def stream_kind(exchange: Exchange) -> str | None:
    """``sse``/``ndjson``/``aws-eventstream``/``json-array`` for streams, None otherwise."""
    headers = exchange["response"].get("headers") or {}
    media = header_value(headers, "content-type").split(";")[0].strip().lower()
    if media in _STREAM_TYPES:
        return _STREAM_TYPES[media]
    path = request_path(exchange)
    if ":streamGenerateContent" in path and "alt=sse" not in path and media == "application/json":
        return "json-array"
    return None


def split_stream(data: bytes, kind: str) -> list[bytes]:
    """Cut a stream body into events; the pieces always concatenate back to ``data``."""
    splitters = {
        "sse": _split_sse,
        "ndjson": lambda d: d.splitlines(keepends=True),
        "aws-eventstream": _split_aws,
        "json-array": _split_json_array,
        "gzip": lambda d: [d[i : i + GZIP_PIECE] for i in range(0, len(d), GZIP_PIECE)],
    }
    pieces = [p for p in splitters[kind](data) if p]
    assert b"".join(pieces) == data, f"{kind} split lost bytes"
    return pieces


def _split_sse(data: bytes) -> list[bytes]:
    text = data.decode("latin-1")  # byte-preserving; boundaries are ASCII
    cuts = [m.end() for m in _SSE_EVENT_END.finditer(text)]
    return _cut(data, cuts)


def _split_aws(data: bytes) -> list[bytes]:
    # Each frame starts with its own total length (4-byte big-endian prelude field).
    cuts, pos = [], 0
    while pos + 4 <= len(data):
        total = int.from_bytes(data[pos : pos + 4], "big")
        if total <= 0:
            break
        pos = min(pos + total, len(data))
        cuts.append(pos)
    return _cut(data, cuts)


def _split_json_array(data: bytes) -> list[bytes]:
    # Cut after each top-level element and the line break that follows it, by tracking
    # bracket depth outside of JSON strings.
    cuts, depth, in_str, escaped = [], 0, False, False
    for i, byte in enumerate(data):
        ch = chr(byte)
        if in_str:
            escaped, in_str = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 1:
                end = data.find(b"\n", i)
                cuts.append(len(data) if end < 0 else end + 1)
    return _cut(data, cuts)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
