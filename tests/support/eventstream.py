"""AWS ``application/vnd.amazon.eventstream`` frames, encoded (the gateway's decoder is
providers/formats/eventstream.py): for streams the tests build from documented events."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any


def encode_header(name: str, value: bool | int | bytes | str) -> bytes:
    out = bytes([len(name.encode())]) + name.encode()
    if isinstance(value, bool):
        return out + bytes([0 if value else 1])
    if isinstance(value, int):
        return out + b"\x05" + struct.pack(">q", value)
    if isinstance(value, bytes):
        return out + b"\x06" + struct.pack(">H", len(value)) + value
    raw = value.encode()
    return out + b"\x07" + struct.pack(">H", len(raw)) + raw


def encode_frame(headers: dict[str, bool | int | bytes | str], payload: bytes) -> bytes:
    hdr = b"".join(encode_header(k, v) for k, v in headers.items())
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + hdr + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One ConverseStream event frame, headed as Bedrock heads them."""
    return encode_frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                        json.dumps(payload).encode())


def exception(exception_type: str, message: str) -> bytes:
    """A mid-stream exception frame (``throttlingException``, ``modelStreamErrorException``, ...)."""
    return encode_frame({":exception-type": exception_type, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())
