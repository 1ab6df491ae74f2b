"""The retry relay: a small HTTP/1.1 server on 127.0.0.1 inside the gateway process.

mitmproxy cannot send a flow upstream twice, and its ``error`` hook cannot rescue a refused or reset
connection. So the Retrier points a flow that may need retrying at this relay (plain HTTP on loopback),
and the relay makes the upstream attempts itself over a keep-alive pool of its own
(addon/relay/upstream_client.py: no cookie jar shared between users, no header normalisation, little work):

- the request goes on byte for byte as mitmproxy sent it (method, URL, headers incl. auth, body); only the
  relay's own job header is removed, and a fallback target gets its own Host and, if configured, its key;
- retries are driven by tenacity: exponential backoff with full jitter, or exactly the wait the provider
  asked for in *this* failed response (``retry-after-ms`` / ``x-ms-retry-after-ms`` / ``retry-after``).
  The first attempt runs outside tenacity, so the happy path pays nothing for it;
- the first answer that is not retryable goes back to mitmproxy at once: status and headers, then the
  body chunk by chunk as it arrives (raw bytes, content-encoding untouched), so streams stay streams;
- once a byte of the response went out nothing is retried: a stream that goes idle or breaks is cut
  (the client keeps what it got, the connection ends) and the flow carries the error.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import certifi
import tenacity

from addon import metadata as md
from addon.relay.http import FRAMING, complete, decision_headers, read_all, read_body, read_head, write_head
from addon.relay.policy import Policy, Target, retry_after_seconds, target_headers, target_url
from addon.relay.upstream_client import ConnectTimeout, Pool, Response, UpstreamError
from addon.responses import make_error

logger = logging.getLogger(__name__)

JOB_HEADER = "corral-relay-job"  # not x-corral-*: the cache strips those before upstream
_JOB_HEADER_B = JOB_HEADER.encode()
# Failures before the first response byte: nothing reached the client, so another attempt is safe.
TRANSPORT_ERRORS = (UpstreamError,)
RETRYABLE_ERRORS = (*TRANSPORT_ERRORS, TimeoutError)


@dataclass
class Job:
    """One flow's upstream work, handed from the Retrier to the relay through ``JOB_HEADER``."""

    flow: Any  # mitmproxy.http.HTTPFlow
    method: str
    url: str  # the real upstream URL
    primary: str  # base URL of the primary upstream (metadata corral.upstream)
    policy: Policy
    fallbacks: tuple[Target, ...] = ()
    attempts: list[dict[str, Any]] = field(default_factory=list)
    times: list[list[int]] = field(default_factory=list)  # per attempt [start, end], epoch ns (telemetry)
    client_gone: Callable[[], bool] = lambda: False
    outcome: Outcome | None = None  # an answer already received (inline path met a stream): just relay it
    answered: Target | None = None  # the target whose answer the client gets
    label: str | None = None  # a model group's first target ("<provider>/<model>"), named in its attempts


class ClientGone(Exception):
    """mitmproxy closed the relay connection (the client left) while we waited to retry."""


@dataclass
class Outcome:
    """A response of one attempt; ``body`` holds the raw bytes once read (retryable statuses)."""

    target: Target
    response: Response
    headers: dict[str, str]  # lower-case name -> first value, for decisions only
    body: bytes | None = None

    @property
    def status(self) -> int:
        return self.response.status


def answered(job: Job, outcome: Outcome) -> None:
    """``outcome`` is the answer the client gets."""
    job.answered = outcome.target
    job.flow.metadata[md.UPSTREAM] = outcome.target.upstream


def ssl_context(verify: Any) -> ssl.SSLContext:
    """True: certifi (as mitmproxy); False: no verification (ssl_insecure); else a ready context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context(cafile=certifi.where())
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Relay:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.port = 0
        self.pool: Pool | None = None
        self._server: asyncio.Server | None = None
        self.verify: Any = True
        # Pools being closed after a TLS setting changed: the loop holds tasks only weakly.
        self._closing: set[asyncio.Task[None]] = set()
        # Waits between attempts go through these two, so tests can run them on a fake clock.
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0, limit=1 << 20)
            self.port = self._server.sockets[0].getsockname()[1]
        self.set_verify(self.verify)

    def set_verify(self, verify: Any) -> None:
        """Upstream TLS verification, mirroring mitmproxy's own (certifi, trusted CA, or insecure)."""
        self.verify = verify
        old, self.pool = self.pool, Pool(ssl_context(verify), max_idle_per_origin=200, keepalive_expiry=60)
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def add(self, job: Job) -> str:
        token = secrets.token_hex(12)
        self.jobs[token] = job
        return token

    # --- mitmproxy -> relay ------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    return
                _method, headers = head
                body = await read_body(reader, headers)
                token = next((v.decode() for k, v in headers if k.lower() == _JOB_HEADER_B), "")
                job = self.jobs.pop(token, None)
                headers = [(k, v) for k, v in headers if k.lower() != _JOB_HEADER_B]
                if job is None:
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    await writer.drain()
                    return
                job.client_gone = reader.at_eof  # EOF is fed by the transport even while nobody reads
                if not await self._serve(job, headers, body, writer):
                    return
        except (ConnectionError, ClientGone, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # mitmproxy went away (client abort) or sent something we cannot frame
        except Exception:
            logger.exception("corral: retry relay failed")
        finally:
            writer.transport.abort()

    async def _serve(
        self, job: Job, headers: list[tuple[bytes, bytes]], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one relayed request; False when the connection to mitmproxy must end."""
        outcome: Outcome | None
        error: BaseException | None
        if job.outcome is not None:
            outcome, error = job.outcome, None
        else:
            outcome, error = await self.run_attempts(job, headers, body)
        if outcome is None:
            made = self.failure(job, error)
            content = made.content or b""
            head = [(k, v) for k, v in made.headers.fields if k.lower() not in FRAMING]
            await write_head(
                writer, made.status_code, made.reason or "Error", [*head, (b"content-length", b"%d" % len(content))]
            )
            writer.write(content)
            await writer.drain()
            return True
        answered(job, outcome)
        return await self._stream_back(job, outcome, writer)

    async def run_attempts(
        self, job: Job, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[Outcome | None, BaseException | None]:
        """Every attempt the policy allows; the attempts are on the flow as they are made."""
        meta = job.flow.metadata
        meta[md.ATTEMPTS] = job.attempts  # the same list: attempts show up as they are made
        meta[md.ATTEMPT_TIMES] = job.times
        try:
            return await self._attempt_all(job, headers, body)
        finally:
            meta[md.RETRIES] = max(0, len(job.attempts) - 1)

    @staticmethod
    def failure(job: Job, error: BaseException | None) -> Any:
        """The provider-shaped 502 (504 after a timeout) for a flow no upstream attempt answered."""
        status = 504 if isinstance(error, TimeoutError | ConnectTimeout) else 502
        kind = "upstream_timeout" if status == 504 else "upstream_unavailable"
        last = job.attempts[-1]["error"] if job.attempts else "no attempt made"
        return make_error(
            job.flow, status, f"corral: upstream failed after {len(job.attempts)} attempt(s): {last}", kind
        )

    # --- attempts ----------------------------------------------------------------------------

    async def _attempt_all(
        self, job: Job, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[Outcome | None, BaseException | None]:
        """Primary (with retries), then each fallback (with retries): the first answer worth passing
        on, else the last error response (None and the last exception when no response came)."""
        last: Outcome | None = None
        error: BaseException | None = None
        for target in (Target(job.primary), *job.fallbacks):
            first: Outcome | BaseException
            try:
                first = await self._attempt(job, target, headers, body)
            except RETRYABLE_ERRORS as e:
                first = e
            if isinstance(first, Outcome) and not self._retryable(job.policy, first):
                return first, None  # the happy path: one attempt, no retry machinery
            try:
                outcome = await self._with_retries(job, target, headers, body, first)
            except RETRYABLE_ERRORS as e:
                error = e
                continue
            if not self._retryable(job.policy, outcome):
                return outcome, None
            last = outcome
        return last, error

    async def _with_retries(self, job: Job, target: Target, headers: list[tuple[bytes, bytes]], body: bytes,
                            first: Outcome | BaseException) -> Outcome:
        """Attempts 2.. on ``target``; tenacity sees ``first`` (already made) as its attempt 1."""
        policy = job.policy
        backoff = tenacity.wait_random_exponential(multiplier=policy.backoff, max=policy.backoff_max)
        pending: list[Outcome | BaseException] = [first]

        async def attempt() -> Outcome:
            if pending:
                made = pending.pop()
                if isinstance(made, BaseException):
                    raise made
                return made
            return await self._attempt(job, target, headers, body)

        def wait(state: tenacity.RetryCallState) -> float:
            # The provider's wait, read afresh from the response that just failed; else backoff.
            asked = self._asked_wait(state)
            return asked if asked is not None else backoff(state)

        out_of_attempts = tenacity.stop_after_attempt(policy.attempts)

        def stop(state: tenacity.RetryCallState) -> bool:
            # Out of attempts, or the provider asks for a longer wait than the cap.
            asked = self._asked_wait(state)
            return out_of_attempts(state) or (asked is not None and asked > policy.max_retry_after)

        def last_answer(state: tenacity.RetryCallState) -> Outcome:
            assert state.outcome is not None  # tenacity gives up only after an attempt
            return state.outcome.result()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            job.attempts[-1]["wait_ms"] = round((state.upcoming_sleep or 0) * 1000)

        async def sleep(seconds: float) -> None:
            # A long Retry-After must not outlive the client: give up as soon as it is gone.
            deadline = self.clock() + seconds
            while (left := deadline - self.clock()) > 0:
                if job.client_gone():
                    raise ClientGone()
                await self.sleep(min(left, 0.1))
            if job.client_gone():
                raise ClientGone()

        retrying = tenacity.AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception_type(RETRYABLE_ERRORS)
            | tenacity.retry_if_result(lambda o: self._retryable(policy, o)),
            retry_error_callback=last_answer,  # pass the last answer on
            before_sleep=before_sleep,
            sleep=sleep,
        )
        return await retrying(attempt)

    @staticmethod
    def _retryable(policy: Policy, outcome: Outcome) -> bool:
        return outcome.status in policy.statuses

    @staticmethod
    def _asked_wait(state: tenacity.RetryCallState) -> float | None:
        outcome = state.outcome
        if outcome is None or outcome.failed:
            return None
        return retry_after_seconds(outcome.result().headers)

    async def _attempt(self, job: Job, target: Target, headers: list[tuple[bytes, bytes]], body: bytes) -> Outcome:
        record: dict[str, Any] = {"upstream": target.upstream, "status": None, "error": None, "wait_ms": None}
        label = target.member.requested if target.member is not None else job.label
        if label is not None:
            record["target"] = label
        job.attempts.append(record)
        times = [time.time_ns(), 0]
        job.times.append(times)
        try:
            return await self._attempt_one(job, target, headers, body, record)
        finally:
            times[1] = time.time_ns()

    async def _attempt_one(self, job: Job, target: Target, headers: list[tuple[bytes, bytes]], body: bytes,
                           record: dict[str, Any]) -> Outcome:
        assert self.pool is not None
        policy = job.policy
        if target.member is not None:  # a model group's member: its own native request
            url, body = target.member.url, target.member.body
            request_headers = complete(list(target.member.headers), body, url)
        else:
            primary = target.upstream == job.primary and target.api_key is None
            url = job.url if primary else target_url(job.primary, job.url, target)
            request_headers = complete(headers if primary else target_headers(headers, target), body, url)
        try:
            async with asyncio.timeout(policy.ttfb_timeout):  # connect, send, and the response head
                response = await self.pool.request(job.method, url, request_headers, body, policy.connect_timeout)
        except TimeoutError:
            record["error"] = f"no response headers within ttfb_timeout={policy.ttfb_timeout:g}s"
            raise
        except TRANSPORT_ERRORS as e:
            record["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise
        record["status"] = response.status
        outcome = Outcome(target, response, decision_headers(response.headers))
        if response.status in policy.statuses:  # an error body is small: keep it, free the connection
            try:
                async with asyncio.timeout(policy.ttfb_timeout):
                    outcome.body = await read_all(response)
            except (*TRANSPORT_ERRORS, TimeoutError) as e:
                outcome.body = b""
                record["error"] = f"error body unreadable: {type(e).__name__}"
            finally:
                await response.aclose()
        return outcome

    # --- relay -> mitmproxy ------------------------------------------------------------------

    async def _stream_back(self, job: Job, outcome: Outcome, writer: asyncio.StreamWriter) -> bool:
        response, found = outcome.response, outcome.headers
        no_body = job.method == "HEAD" or response.status in (204, 304) or response.status < 200
        head = [(k, v) for k, v in response.headers if k.lower() not in FRAMING]
        length = found.get("content-length")
        chunked = not no_body and (length is None or "chunked" in found.get("transfer-encoding", "").lower())
        if outcome.body is not None:
            chunked = False
            head.append((b"content-length", b"%d" % len(outcome.body)))
        elif chunked:
            head.append((b"transfer-encoding", b"chunked"))
        elif length is not None:
            head.append((b"content-length", length.encode()))
        keep_alive = "close" not in found.get("connection", "").lower()
        reason = response.reason
        try:
            await write_head(writer, response.status, reason, head)
            if outcome.body is not None:
                writer.write(outcome.body)
                await writer.drain()
                return keep_alive
            if no_body:
                return keep_alive
            return await self._pump(job, response, writer, chunked) and keep_alive
        finally:
            await response.aclose()

    async def _pump(self, job: Job, response: Response, writer: asyncio.StreamWriter, chunked: bool) -> bool:
        """Body chunks as they arrive; False (cut the connection) on an idle or broken upstream."""
        idle = job.policy.idle_timeout
        chunks = aiter(response.stream)
        sent = 0
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                job.flow.metadata[md.GATEWAY_ERROR] = (
                    f"corral: upstream sent nothing for idle_timeout={idle:g}s; stream cut after {sent} bytes")
                return False
            except TRANSPORT_ERRORS as e:
                logger.info("corral: upstream broke off after %d bytes: %s", sent, e)
                return False
            if not chunk:
                continue
            sent += len(chunk)
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return True
