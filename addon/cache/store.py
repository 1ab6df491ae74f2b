"""CacheStore: keeps complete, successful answers for the response cache, and labels every response.

Sits after the Meter, so it stores only what the meter judged complete: no error status, no error
inside a 200, no aborted or truncated stream, no empty answer. For streams it wraps the meter's tee
(``flow.response.stream``) and keeps the chunks the client received with their times, so a replay can
keep the original pace. Every response Corral handles carries ``x-corral-cache: hit|miss|refresh|skip|off``,
and ``x-corral-*`` request headers (Corral's own controls) never reach the provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http

from addon import metadata as md, state
from addon.cache import key as cache_key
from addon.cache.backend import Entry, ResponseCache
from addon.cache.replay import TOKEN_HEADER
from addon.credentials import is_secret_header
from addon.services import PricingService

logger = logging.getLogger(__name__)

# Framing is redone on replay; secrets are never stored.
_NOT_STORED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date"})
_WRITES = ("miss", "refresh")


class ChunkRecorder:
    """Wraps the meter's stream tee: passes its output on unchanged and keeps it with timings."""

    def __init__(self, inner: Callable[[bytes], Any], started: float, limit: int) -> None:
        self.inner = inner
        self.started = started
        self.limit = limit
        self.body = bytearray()
        self.chunks: list[tuple[float, int]] = []
        self.too_big = False
        self.ended = False

    def __call__(self, chunk: bytes) -> Any:
        out = self.inner(chunk) if callable(self.inner) else chunk
        try:
            pieces = [out] if isinstance(out, bytes) else list(out)
            now = round(time.time() - self.started, 4)
            for piece in pieces:
                if piece and not self.too_big:
                    if len(self.body) + len(piece) > self.limit:
                        self.too_big, self.body, self.chunks = True, bytearray(), []
                    else:
                        self.body += piece
                        self.chunks.append((now, len(piece)))
            if not chunk:
                self.ended = True
        except Exception:  # keeping a copy must never disturb what the client gets
            logger.exception("corral: cache could not keep a stream chunk")
            self.too_big = True
        return out


class CacheStore:
    def __init__(self, cache: ResponseCache, pricing: PricingService) -> None:
        self.cache = cache
        self.pricing = pricing  # prices the answer, for saved_cost_usd on later hits
        self.recorders: dict[str, ChunkRecorder] = {}

    def request(self, flow: http.HTTPFlow) -> None:
        # Last of the request hooks that need them: Corral's own headers stop here.
        if md.PROVIDER not in flow.metadata:
            return
        # One pass over the fields: deleting by name rescans every header each time.
        replayed = flow.metadata.get(md.CACHE) == "hit" or flow.metadata.get(md.FIXTURE) == "replayed"
        keep = TOKEN_HEADER.encode() if replayed else None
        fields = flow.request.headers.fields
        kept = tuple((k, v) for k, v in fields if not k.lower().startswith(b"x-corral-") or k.lower() == keep)
        if len(kept) != len(fields):
            flow.request.headers.fields = kept

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if not md.is_llm_flow(flow) or flow.response is None:
            return
        meta, response = flow.metadata, flow.response
        outcome = meta.get(md.CACHE, "off")
        response.headers[cache_key.HEADER] = outcome
        if outcome == "hit":
            if flow.request.headers.get(TOKEN_HEADER):
                response.stream = True  # a paced replay from the replay server goes out as it comes
            return
        if outcome in _WRITES and 200 <= response.status_code < 300 and callable(response.stream):
            rec = ChunkRecorder(response.stream, flow.request.timestamp_start, ctx.options.corral_cache_max_entry_bytes)
            self.recorders[flow.id] = rec
            response.stream = rec

    async def response(self, flow: http.HTTPFlow) -> None:
        rec = self.recorders.pop(flow.id, None)
        if flow.error is None:
            await self._store(flow, rec)

    async def error(self, flow: http.HTTPFlow) -> None:
        rec = self.recorders.pop(flow.id, None)
        # The openai SDK hangs up right after `data: [DONE]`, which mitmproxy may report as a client
        # disconnect, even before the stream's end reached us: the stream is whole when the meter saw its
        # own end marker (corral.complete), which the client received.
        if rec is not None and md.client_went_away(flow):
            rec.ended = True
            await self._store(flow, rec)

    def _storable(self, flow: http.HTTPFlow) -> bool:
        meta, response = flow.metadata, flow.response
        return (
            meta.get(md.CACHE) in _WRITES and md.CACHE_KEY in meta and response is not None
            and 200 <= response.status_code < 300 and bool(meta.get(md.COMPLETE))
            and not meta.get(md.RESPONSE_ERROR) and not meta.get(md.PARSE_ERROR) and not meta.get(md.GATEWAY_ERROR)
            and "no-store" not in response.headers.get("cache-control", "").lower()
            and (meta.get(md.CACHE_TTL) or 0) > 0
            and (meta.get(md.USAGE) or {}).get("output_tokens") != 0
            and not any(note.startswith("cache:") for note in meta.get(md.STATE_DEGRADED) or ())
        )

    async def _store(self, flow: http.HTTPFlow, rec: ChunkRecorder | None) -> None:
        response, backend = flow.response, self.cache.backend
        if backend is None or response is None or not self._storable(flow):
            return
        if rec is not None:
            if rec.too_big or not rec.ended:
                return
            body, chunks = bytes(rec.body), rec.chunks
        else:
            body, chunks = response.raw_content or b"", None
            if len(body) > ctx.options.corral_cache_max_entry_bytes:
                return
        if not body:
            return  # an empty answer is not worth replaying
        meta = flow.metadata
        now = time.time()
        entry = Entry(
            key=meta[md.CACHE_KEY], provider=meta[md.PROVIDER], model=meta.get(md.MODEL),
            status=response.status_code, body=body, stream=bool(meta.get(md.STREAM)),
            headers=[(k, v) for k, v in response.headers.items(multi=True) if k.lower() not in _NOT_STORED
                     and not is_secret_header(k) and not k.lower().startswith("x-corral-")],
            headers_at=round(max(0.0, (response.timestamp_start or now) - flow.request.timestamp_start), 4),
            chunks=chunks, usage=meta.get(md.USAGE), cost_usd=self.pricing.price(meta).cost_usd,
            created_at=now, expires_at=now + float(meta[md.CACHE_TTL]),
        )
        try:
            await backend.put(entry)
        except state.StateUnavailable as e:  # the breaker already logged the outage once
            state.note_degraded(flow, f"cache: {e}; not stored")
        except Exception:  # a full disk loses a cache entry, never an answer
            logger.warning("corral: cache write failed", exc_info=True)
