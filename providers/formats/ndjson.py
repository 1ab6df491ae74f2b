"""Incremental newline-delimited JSON splitter (Ollama, Cohere v1 streams)."""

from __future__ import annotations


class NDJSONDecoder:
    """Yields each non-blank line as text; JSON decoding is left to the family, which knows what a
    bad line means for it."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: str | None = None
        # Most bytes of one pending line: an overlong line is skipped (and reported), the rest decoded.
        self.max_buffer = 4 * 1024 * 1024
        self._skip_line = False

    def feed(self, chunk: bytes) -> list[str]:
        if self._skip_line:
            end = chunk.find(b"\n")
            if end < 0:
                return []
            chunk, self._skip_line = chunk[end + 1:], False
        self._buf += chunk
        cut = self._buf.rfind(b"\n")
        if cut < 0:
            if len(self._buf) > self.max_buffer:
                self.error = self.error or f"NDJSON line longer than {self.max_buffer} bytes (skipped)"
                self._buf.clear()
                self._skip_line = True
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
