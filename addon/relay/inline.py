"""The relay's short cut for answers mitmproxy would buffer anyway: made inside the ``request`` hook.

A provider flow normally reaches the upstream through the in-process relay (addon/relay/relay.py): mitmproxy
sends the request to 127.0.0.1:<relay>, the relay makes the attempts and streams the answer back. That
second HTTP hop costs CPU on every request (docs/decisions.md), and a JSON answer gains nothing from it:
mitmproxy buffers a non-streamed response whole before the client sees a byte. So for a POST that did
not ask for a stream the Retrier runs the same attempts right in its (async) ``request`` hook and sets
``flow.response``; mitmproxy then answers the client without opening any server connection.

If the upstream answers with a stream after all (a 2xx whose content type the flow's format streams,
or any body that is not small known-length JSON: the same tests the Meter applies), nothing is
buffered: the answer is handed to the relay as the job's ready outcome, and the flow goes the usual
way through it, chunk by chunk.
"""

from __future__ import annotations

import time

from mitmproxy import http

from addon import delivery, metadata as md
from addon.relay.http import FRAMING, complete, read_all
from addon.relay.relay import TRANSPORT_ERRORS, Job, Outcome, Relay, answered
from providers.formats import get_family


def wants_inline(flow: http.HTTPFlow) -> bool:
    """A POST that did not ask for a stream: its answer is buffered by mitmproxy anyway."""
    return flow.request.method == "POST" and not flow.metadata.get(md.STREAM_REQUESTED)


def request_parts(flow: http.HTTPFlow, url: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body as mitmproxy would send them upstream: the body it holds (de-chunked), so the
    client's own framing headers are replaced by a Content-Length; Corral's own headers stay here."""
    body = flow.request.raw_content or b""
    # x-corral-* are Corral's own controls: never for the provider (CacheStore drops them from the flow
    # later in the chain, but this request leaves before that).
    headers = [(k, v) for k, v in flow.request.headers.fields
               if k.lower() not in FRAMING and not k.lower().startswith(b"x-corral-")]
    headers.append((b"content-length", b"%d" % len(body)))
    return complete(headers, body, url), body


def streams(flow: http.HTTPFlow, outcome: Outcome) -> bool:
    """A 2xx whose content type the flow's format streams, or any body that is not small known-length
    JSON (audio, a download, a chunked answer): the same tests the Meter applies (addon/delivery.py)."""
    family = flow.metadata.get(md.FORMAT)
    if family is not None and 200 <= outcome.status < 300 and get_family(family).stream_kind(
        flow.request.path, outcome.headers.get("content-type", "")
    ) is not None:
        return True
    if delivery.is_json(delivery.media_type(outcome.headers)):
        # A JSON document the client cannot use in part: held whole unless known to be large, so that a
        # body the upstream cuts off becomes a clean provider-shaped 502, never a truncated document.
        length = delivery.known_length(outcome.headers)
        return length is not None and length > delivery.SMALL_BODY
    return delivery.streams_answer(flow.request.method, outcome.status, outcome.headers)


async def answer(relay: Relay, job: Job) -> float | None:
    """Answer ``job.flow`` in place; the time its response head arrived, or None when the upstream
    streams and the flow must go through the relay (``job.outcome`` then holds that answer)."""
    flow = job.flow
    headers, body = request_parts(flow, job.url)
    outcome, error = await relay.run_attempts(job, headers, body)
    if outcome is None:
        flow.response = relay.failure(job, error)
        return time.time()
    head_at = time.time()
    answered(job, outcome)
    response = outcome.response
    if outcome.body is None and streams(flow, outcome):
        job.outcome = outcome
        return None
    try:
        content = outcome.body if outcome.body is not None else await read_all(response, job.policy.idle_timeout)
    except (*TRANSPORT_ERRORS, TimeoutError) as e:
        # No byte reached the client: a clean provider-shaped error beats a truncated JSON body.
        await response.aclose()
        reason = "went silent" if isinstance(e, TimeoutError) else f"broke off ({type(e).__name__}: {e})"
        job.attempts[-1]["error"] = f"response body {reason}"
        flow.response = relay.failure(job, e)
        return head_at
    await response.aclose()
    kept = [(k, v) for k, v in response.headers if k.lower() not in FRAMING]
    flow.response = http.Response(
        http_version=b"HTTP/1.1", status_code=response.status, reason=response.reason.encode("latin-1", "replace"),
        headers=http.Headers([*kept, (b"content-length", b"%d" % len(content))]), content=content,
        trailers=None, timestamp_start=head_at, timestamp_end=time.time(),
    )
    return head_at
