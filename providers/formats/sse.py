"""Incremental Server-Sent Events decoder.

Chunks may split anywhere. Line terminators (``\\n``, ``\\r\\n``, ``\\r``) are ASCII and never occur
inside a UTF-8 multi-byte sequence, so lines are cut on raw bytes and only whole lines are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

CR, LF = 0x0D, 0x0A
DEFAULT_MAX_BUFFER = 4 * 1024 * 1024


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
        # Most bytes of one line, or of one event's data, held at a time: an endless line or event
        # must not grow memory. An overlong one is skipped (and reported); the stream goes on.
        self.max_buffer = DEFAULT_MAX_BUFFER
        self._data_size = 0
        self._skip_line = False  # inside an overlong line: drop bytes up to its terminator
        self._drop_event = False  # the current event lost a line or outgrew max_buffer

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if chunk:
            self._after_cr = False
        if self._skip_line:
            chunk = self._skip(chunk)
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
        if len(self._buf) > self.max_buffer:
            self._overflow(f"SSE line longer than {self.max_buffer} bytes (event skipped)")
            self._buf.clear()
            self._skip_line = True
        return events

    def _skip(self, chunk: bytes) -> bytes:
        """Drop the rest of an overlong line; what follows its terminator is decoded again."""
        end = _next_terminator(bytearray(chunk), 0)
        if end < 0:
            return b""
        self._skip_line = False
        if chunk[end] == CR:
            if end + 1 == len(chunk):
                self._after_cr = True
                return b""
            return chunk[end + 2:] if chunk[end + 1] == LF else chunk[end + 1:]
        return chunk[end + 1:]

    def _overflow(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self._drop_event = True
        self._data, self._data_size = [], 0

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
            if self._drop_event:
                return
            self._data_size += len(raw)
            if self._data_size > self.max_buffer:
                self._overflow(f"SSE event longer than {self.max_buffer} bytes (skipped)")
                return
            self._data.append(value)
        elif name == "event":
            self._event = value
        # id:, retry: and unknown fields carry nothing the gateway needs.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data and not self._drop_event:
            events.append(SSEEvent(self._event, "\n".join(self._data)))
        self._event = None
        self._data, self._data_size, self._drop_event = [], 0, False


def _next_terminator(buf: bytearray, start: int) -> int:
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start, lf if lf >= 0 else len(buf))
    return cr if cr >= 0 else lf
