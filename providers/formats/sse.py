"""Incremental Server-Sent Events decoder.

Chunks may split anywhere. Line terminators (``\\n``, ``\\r\\n``, ``\\r``) are ASCII and never occur
inside a UTF-8 multi-byte sequence, so lines are cut on raw bytes and only whole lines are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

CR, LF = 0x0D, 0x0A


@dataclass
class SSEEvent:
    # None when the event had no ``event:`` field (the spec's default type "message").
    event: str | None
    data: str


class SSEDecoder:
    def __init__(self) -> None:
        self._buf = bytearray()
        # The previous chunk ended on CR: a leading LF of the next chunk completes that CRLF.
        self._after_cr = False
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] = []
        self.comments: int = 0
        self.error: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if chunk:
            self._after_cr = False
        self._buf += chunk
        events: list[SSEEvent] = []
        start = 0
        buf = self._buf
        n = len(buf)
        while start < n:
            end = _next_terminator(buf, start)
            if end < 0:
                break
            self._line(bytes(buf[start:end]), events)
            if buf[end] == CR:
                if end + 1 < n:
                    start = end + 2 if buf[end + 1] == LF else end + 1
                else:
                    self._after_cr = True
                    start = end + 1
            else:
                start = end + 1
        del self._buf[:start]
        return events

    def finish(self) -> list[SSEEvent]:
        """End of stream: a last event without its trailing blank line is still delivered, because
        usage often sits in exactly that event and losing it to a missing newline helps nobody."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(bytes(self._buf), events)
            self._buf.clear()
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if self._first_line:
            self._first_line = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        if not raw:
            self._dispatch(events)
            return
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            self.comments += 1
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        # id:, retry: and unknown fields carry nothing the gateway needs.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(self._event, "\n".join(self._data)))
        self._event = None
        self._data = []


def _next_terminator(buf: bytearray, start: int) -> int:
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start, lf if lf >= 0 else len(buf))
    return cr if cr >= 0 else lf
