"""Getting usage out of OpenAI-compatible streams whose client did not ask for it.

Without ``stream_options.include_usage`` an OpenAI stream carries no token counts at all. The
gateway therefore adds the option to the request bytes (``inject_include_usage``) and removes the extra
usage-only chunk from the response (``UsageChunkStripper``), so the client sees exactly the stream
it asked for while the gateway still reads the counts from the unmodified upstream bytes.
"""

from __future__ import annotations

import json
from typing import Any

from providers.formats.json_edit import Edit, set_nested_true

CR, LF = 0x0D, 0x0A
# A usage-only event is a few hundred bytes: an event already longer than this is forwarded as it
# comes instead of being held back whole (an endless event must neither grow memory nor stall).
MAX_HELD_EVENT = 64 * 1024


def inject_include_usage(body: bytes) -> Edit | None:
    """The edit that adds ``stream_options.include_usage: true`` to the client's bytes (nothing else
    changes: see json_edit), or None when the request is not a streaming JSON object, already asks for
    usage, or cannot be edited safely. Only for endpoints whose schema has that option: the caller
    checks (catalog ``include_usage_paths``)."""
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return None
    # An explicit include_usage: false is overridden too: the stripper hides the chunk again.
    return set_nested_true(body, "stream_options", "include_usage")


def is_usage_only_event(event: bytes) -> bool:
    """True for the SSE event the client did not ask for: ``"choices": []`` and a usage object.
    (Azure's first chunk also has empty choices but no usage; it is kept.)"""
    data: list[str] = []
    text = event.decode("utf-8", errors="replace")
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if not data:
        return False
    try:
        obj: Any = json.loads("\n".join(data))
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and obj.get("usage") is not None


class UsageChunkStripper:
    """Forwards an SSE byte stream unchanged except for the usage-only event.

    Only an incomplete trailing event is held back; every complete event goes out at once, so
    streaming latency is unaffected. Events are cut at blank lines with any mix of ``\\r\\n``,
    ``\\n`` and ``\\r`` line endings.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._line_empty = True  # nothing but the terminator so far on the current line
        self._after_cr = False  # last byte scanned was a CR ending a line
        # An event ended on a CR at the end of a chunk: a following LF still belongs to it.
        self._pending_lf: bool | None = None  # None: no; True: drop it; False: forward it
        self.stripped = 0
        self._passing = False  # the current event outgrew MAX_HELD_EVENT: not usage-only, forwarded

    def feed(self, chunk: bytes) -> bytes:
        if self._pending_lf is not None and chunk:
            drop, self._pending_lf = self._pending_lf, None
            if chunk[:1] == b"\n":
                prefix = b"" if drop else b"\n"
                return prefix + self.feed(chunk[1:])
        self._buf += chunk
        out = bytearray()
        while (end := self._event_end()) is not None:
            event = bytes(self._buf[:end])
            del self._buf[:end]
            self._pos = 0
            self._line_empty, self._after_cr = True, False
            drop = not self._passing and is_usage_only_event(event)
            self._passing = False
            if drop:
                self.stripped += 1
            else:
                out += event
            if event.endswith(b"\r") and not self._buf:
                self._pending_lf = drop
        if len(self._buf) > MAX_HELD_EVENT:
            out += self._buf[: self._pos]  # everything scanned so far; the scan state stays valid
            del self._buf[: self._pos]
            self._pos = 0
            self._passing = True
        return bytes(out)

    def finish(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        self._pos = 0
        self._pending_lf = None
        if rest and not self._passing and is_usage_only_event(rest):
            # The stream ended without the blank line after the usage chunk: still not asked for.
            self.stripped += 1
            return b""
        return rest

    def _event_end(self) -> int | None:
        """Index just past the blank line that ends the first event in ``_buf``, or None."""
        buf, n = self._buf, len(self._buf)
        while self._pos < n:
            c = buf[self._pos]
            if self._after_cr:
                self._after_cr = False
                if c == LF:  # second half of a CRLF
                    self._pos += 1
                    continue
            if c != CR and c != LF:
                # Jump to the next terminator: lines are long, terminators are rare.
                nxt = _next_terminator(buf, self._pos)
                self._line_empty = False
                self._pos = n if nxt < 0 else nxt
                continue
            self._pos += 1
            if self._line_empty:
                if c == CR and self._pos < n and buf[self._pos] == LF:
                    self._pos += 1
                return self._pos
            self._line_empty = True
            self._after_cr = c == CR
        return None


def _next_terminator(buf: bytearray, start: int) -> int:
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start, lf if lf >= 0 else len(buf))
    return cr if cr >= 0 else lf
