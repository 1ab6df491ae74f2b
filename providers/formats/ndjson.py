"""Incremental newline-delimited JSON splitter (Ollama, Cohere v1 streams)."""

from __future__ import annotations


class NDJSONDecoder:
    """Yields each non-blank line as text; JSON decoding is left to the family, which knows what a
    bad line means for it."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: str | None = None

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        cut = self._buf.rfind(b"\n")
        if cut < 0:
            return []
        lines = bytes(self._buf[:cut]).split(b"\n")
        del self._buf[: cut + 1]
        return [t for t in (_text(line) for line in lines) if t]

    def finish(self) -> list[str]:
        rest = _text(bytes(self._buf))
        self._buf.clear()
        return [rest] if rest else []


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").strip()
