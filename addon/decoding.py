"""Bounded, incremental decoding of HTTP content codings (gzip, deflate, br, zstd).

Every place Corral looks inside a response body (the meter's usage parse, the recorder's stored copy)
decodes through ``BoundedDecoder``: a compressed body can inflate a thousandfold (1 MB of gzip is
1 GiB of zeros), so the decoder never produces more than its ``limit`` and never holds more than
that in memory, whatever the input. Past the limit it stops and says so (``too_large``); the client's
bytes are not touched by any of this: they pass through as they came.

Codings are the ones mitmproxy decodes (mitmproxy/net/encoding.py): gzip/x-gzip (zlib's header
auto-detection, as mitmproxy), deflate (zlib-wrapped, or raw as some servers send it), br, zstd.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

TOO_LARGE = "response too large to decode"


class _Stage(Protocol):
    def decompress(self, data: bytes, max_length: int) -> bytes:
        """Up to ``max_length`` bytes; with ``data`` empty, more of what earlier input holds."""
        ...

    def more(self, produced: int, max_length: int) -> bool:
        """Whether earlier input may still hold output (the last call stopped at ``max_length``)."""
        ...


class _Zlib:
    def __init__(self, wbits: int, raw_fallback: bool = False) -> None:
        self.d = zlib.decompressobj(wbits)
        self.raw_fallback = raw_fallback  # deflate: retry as raw DEFLATE if the zlib header is wrong
        self.started = False

    def decompress(self, data: bytes, max_length: int) -> bytes:
        data = data or self.d.unconsumed_tail
        try:
            out = self.d.decompress(data, max_length)
        except zlib.error:
            if not self.raw_fallback or self.started:
                raise
            self.d, self.raw_fallback = zlib.decompressobj(-15), False
            out = self.d.decompress(data, max_length)
        self.started = True
        return out

    def more(self, produced: int, max_length: int) -> bool:
        return bool(self.d.unconsumed_tail) or produced >= max_length


class _Brotli:
    def __init__(self) -> None:
        self.d = brotli.Decompressor()

    def decompress(self, data: bytes, max_length: int) -> bytes:
        # brotli may stop at its buffer limit with input left: the caller stops there too (too large).
        return self.d.process(data, output_buffer_limit=max_length)

    def more(self, produced: int, max_length: int) -> bool:
        # can_accept_more_data() turns true while output may still be pending (brotli 1.2.1): drain
        # until a call yields nothing, or a body is cut short.
        return produced > 0 or not self.d.can_accept_more_data()


class _Zstd:
    def __init__(self) -> None:
        self.d = zstd.ZstdDecompressor()

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self.d.eof:
            return b""  # trailing bytes after the frame: ignored, as by zstd.decompress
        return self.d.decompress(data, max_length)

    def more(self, produced: int, max_length: int) -> bool:
        return not self.d.eof and not self.d.needs_input


def _stage(coding: str) -> _Stage | None:
    if coding in ("gzip", "x-gzip"):
        return _Zlib(47)  # 32 + 15: gzip or zlib header, as mitmproxy
    if coding in ("deflate", "deflateraw"):
        return _Zlib(15, raw_fallback=True)
    if coding == "br":
        return _Brotli()
    if coding == "zstd":
        return _Zstd()
    raise ValueError(f"unsupported content-encoding {coding!r}")


class BoundedDecoder:
    """Feeds compressed chunks, returns decoded bytes; at most ``limit`` of them in all.

    ``too_large`` is set as soon as the input holds more than ``limit`` decoded bytes; from then on
    nothing more is decoded. ``error`` is set when the input is not valid for its coding, or the
    coding is one Corral cannot decode (then nothing is decoded)."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        self.coding = content_encoding.strip().lower()
        self.limit = limit
        self.produced = 0
        self.too_large = False
        self.error: str | None = None
        self._stage: _Stage | None = None
        if self.coding not in ("", "identity"):
            try:
                self._stage = _stage(self.coding)
            except ValueError as e:
                self.error = str(e)

    @property
    def identity(self) -> bool:
        return self.coding in ("", "identity")

    @property
    def stopped(self) -> bool:
        return self.too_large or self.error is not None

    def feed(self, data: bytes) -> bytes:
        """All that ``data`` decodes to (within the limit), in one piece."""
        if self._stage is None and self.error is None and len(data) <= self.limit - self.produced:
            if self.coding in ("", "identity"):  # every chunk of most streams: no generator, no copy
                self.produced += len(data)
                return data
        return b"".join(self.pieces(data, self.limit + 1))

    def pieces(self, data: bytes, step: int) -> Iterator[bytes]:
        """What ``data`` decodes to (within the limit), in pieces of about ``step`` bytes (at most,
        except br, whose output limit is a soft one): a small chunk of a stream may inflate to a great
        deal, which is then never in memory at once."""
        if self.stopped or not data:
            return
        if self.identity:
            room = self.limit - self.produced
            self.too_large = len(data) > room
            self.produced += min(len(data), room)
            yield data[:room]
            return
        assert self._stage is not None
        while True:
            room = self.limit - self.produced
            # One byte more than there is room for: getting it means the body does not fit.
            want = min(step, room + 1)
            try:
                out = self._stage.decompress(data, want)
            except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as e:
                self.error = f"not valid {self.coding}: {e}"
                self._stage = None
                return
            data = b""
            if len(out) > room:
                out, self.too_large = out[:room], True
                self._stage = None  # the decompressor's window and buffers go now, not with the flow
            self.produced += len(out)
            if out:
                yield out
            if self._stage is None or not self._stage.more(len(out), want):
                return


@dataclass
class Decoded:
    data: bytes
    too_large: bool = False
    error: str | None = None


def decode_bounded(raw: bytes | None, content_encoding: str, limit: int) -> Decoded:
    """A whole body, decoded up to ``limit`` bytes (the first ``limit`` when it is larger).

    Large input is fed in slices, so no single decompressor call sees more of a bomb than needed."""
    decoder = BoundedDecoder(content_encoding, limit)
    if not raw:
        return Decoded(b"", error=decoder.error)
    if decoder.identity:
        return Decoded(raw[:limit], too_large=len(raw) > limit)
    parts: list[bytes] = []
    view = memoryview(raw)
    step = 1 << 16
    for start in range(0, len(raw), step):
        parts.append(decoder.feed(bytes(view[start:start + step])))
        if decoder.stopped:
            break
    return Decoded(b"".join(parts), too_large=decoder.too_large, error=decoder.error)
