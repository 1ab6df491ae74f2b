"""Incremental decoder for AWS ``application/vnd.amazon.eventstream`` (Bedrock streams).

Frame layout (all integers big-endian)::

    total_len:u32  headers_len:u32  prelude_crc:u32  headers  payload  message_crc:u32

``prelude_crc`` covers the first 8 bytes, ``message_crc`` everything before it. A checksum
mismatch means the byte stream can no longer be trusted to be framed correctly, so decoding stops
and ``error`` is set; nothing is raised.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

PRELUDE_LEN = 12
MIN_FRAME = PRELUDE_LEN + 4
# AWS caps a message at 16 MiB; a larger length is garbage, not a frame worth waiting for.
MAX_FRAME = 16 * 1024 * 1024

HeaderValue = bool | int | bytes | str


@dataclass
class Message:
    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""

    def header(self, name: str) -> str | None:
        v = self.headers.get(name)
        return v if isinstance(v, str) else None


class EventStreamDecoder:
    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: str | None = None
        self.max_buffer = MAX_FRAME  # the gateway may bound a frame (and so this buffer) lower

    def feed(self, chunk: bytes) -> list[Message]:
        if self.error is not None:
            return []
        self._buf += chunk
        out: list[Message] = []
        while self.error is None and len(self._buf) >= PRELUDE_LEN:
            total = self._check_prelude()
            if total is None or len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            msg = self._decode_frame(frame)
            if msg is not None:
                out.append(msg)
        return out

    def finish(self) -> list[Message]:
        if self.error is None and self._buf:
            self.error = f"truncated event-stream frame ({len(self._buf)} bytes left over)"
        return []

    def _check_prelude(self) -> int | None:
        total, headers_len, crc = struct.unpack_from(">III", self._buf, 0)
        if zlib.crc32(self._buf[:8]) != crc:
            self.error = "event-stream prelude checksum mismatch"
            return None
        if not MIN_FRAME <= total <= min(MAX_FRAME, self.max_buffer) or headers_len > total - MIN_FRAME:
            self.error = f"event-stream frame with impossible lengths ({total}, {headers_len})"
            return None
        return total

    def _decode_frame(self, frame: bytes) -> Message | None:
        (crc,) = struct.unpack_from(">I", frame, len(frame) - 4)
        if zlib.crc32(frame[:-4]) != crc:
            self.error = "event-stream message checksum mismatch"
            return None
        (headers_len,) = struct.unpack_from(">I", frame, 4)
        try:
            headers = decode_headers(frame[PRELUDE_LEN : PRELUDE_LEN + headers_len])
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            self.error = f"bad event-stream headers: {e}"
            return None
        return Message(headers, frame[PRELUDE_LEN + headers_len : -4])


# type id -> struct format for the fixed-size header value types
_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    i = 0
    while i < len(data):
        name_len = data[i]
        name = data[i + 1 : i + 1 + name_len].decode("utf-8")
        i += 1 + name_len
        if i >= len(data):
            raise ValueError("header without a value type")
        vtype = data[i]
        i += 1
        value: HeaderValue
        if vtype in (0, 1):
            value = vtype == 0
        elif vtype in _FIXED:
            fmt = _FIXED[vtype]
            (value,) = struct.unpack_from(fmt, data, i)
            i += struct.calcsize(fmt)
        elif vtype in (6, 7):
            (vlen,) = struct.unpack_from(">H", data, i)
            raw = data[i + 2 : i + 2 + vlen]
            if len(raw) != vlen:
                raise ValueError("header value runs past the header block")
            value = raw.decode("utf-8") if vtype == 7 else raw
            i += 2 + vlen
        elif vtype == 9:
            raw = data[i : i + 16]
            if len(raw) != 16:
                raise ValueError("short uuid header")
            value = str(uuid.UUID(bytes=raw))
            i += 16
        else:
            raise ValueError(f"unknown header value type {vtype}")
        headers[name] = value
    return headers
