"""Incremental splitter for a streamed top-level JSON array (Gemini ``streamGenerateContent``
without ``alt=sse``): ``[{...},\\n{...}]`` arrives in pieces; each element is yielded as soon as its
last byte is in.

Only structure is tracked (nesting depth, strings, escapes); the element text itself is handed to
``json.loads`` by the family. All structural characters are ASCII, so scanning raw bytes is safe
with UTF-8 split across chunks.
"""

from __future__ import annotations

import re

_WS = b" \t\r\n"
# Inside a string only a quote or a backslash matters: jump straight to the next one.
_STRING_STOP = re.compile(rb'["\\]')
_OPEN, _CLOSE = b"{[", b"}]"


class JSONArrayDecoder:
    def __init__(self) -> None:
        self.started = False
        self.closed = False
        self.error: str | None = None
        # Most bytes of one element held: past it decoding stops (an element cannot be skipped safely).
        self.max_buffer = 4 * 1024 * 1024
        self._elem = bytearray()
        self._collecting = False
        self._scalar = False
        self._depth = 0
        self._in_str = False
        self._esc = False

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        i, n = 0, len(chunk)
        while i < n and self.error is None:
            if self._collecting and self._in_str and not self._esc:
                m = _STRING_STOP.search(chunk, i)
                stop = m.start() if m else n
                self._elem += chunk[i:stop]
                i = stop
                if i >= n:
                    break
            i = self._step(chunk, i, out)
        if len(self._elem) > self.max_buffer and self.error is None:
            self.error = f"JSON array element longer than {self.max_buffer} bytes"
            self._elem.clear()
        return out

    def finish(self) -> list[str]:
        out: list[str] = []
        if self.error is None:
            if self._collecting and self._scalar and self._depth == 0:
                self._emit(out)
            if not self.started:
                self.error = "empty body: no JSON array"
            elif not self.closed:
                self.error = "JSON array not closed (truncated stream)"
        return out

    def _step(self, chunk: bytes, i: int, out: list[str]) -> int:
        """Consume one byte at ``chunk[i]``; returns the next index."""
        c = chunk[i]
        if not self.started:
            if c in _WS or (c == 0xEF or c == 0xBB or c == 0xBF):  # whitespace or a UTF-8 BOM
                return i + 1
            if c != ord("["):
                self.error = f"expected '[' at start of JSON array, got {chr(c)!r}"
                return i + 1
            self.started = True
            return i + 1
        if self.closed:
            if c not in _WS:
                self.error = "data after the end of the JSON array"
            return i + 1
        if self._collecting:
            return self._collect(chunk, i, out)
        if c in _WS or c == ord(","):
            return i + 1
        if c == ord("]"):
            self.closed = True
            return i + 1
        self._collecting = True
        self._scalar = c not in _OPEN and c != ord('"')
        return self._collect(chunk, i, out)

    def _collect(self, chunk: bytes, i: int, out: list[str]) -> int:
        c = chunk[i]
        if self._scalar:
            if c in _WS or c == ord(",") or c == ord("]"):
                self._emit(out)
                return i  # the delimiter is looked at again, between elements
            self._elem.append(c)
            return i + 1
        self._elem.append(c)
        if self._in_str:
            if self._esc:
                self._esc = False
            elif c == ord("\\"):
                self._esc = True
            elif c == ord('"'):
                self._in_str = False
                if self._depth == 0:
                    self._emit(out)
        elif c == ord('"'):
            self._in_str = True
        elif c in _OPEN:
            self._depth += 1
        elif c in _CLOSE:
            self._depth -= 1
            if self._depth == 0:
                self._emit(out)
        return i + 1

    def _emit(self, out: list[str]) -> None:
        out.append(bytes(self._elem).decode("utf-8", errors="replace"))
        self._elem.clear()
        self._collecting = False
        self._scalar = False
        self._depth = 0
