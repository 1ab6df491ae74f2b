"""WebhookSender: POSTs budget alert events (JSON) to ``[alerts] webhook``, off the request path.

``submit`` only puts the event in a bounded queue (``[alerts] queue`` events) and returns: no flow
ever waits for the webhook. One task on mitmproxy's loop sends them in order, each attempt with a
timeout, and retries a connection error, a timeout, a 5xx, 408 or 429 with exponential backoff
(tenacity) up to ``[alerts] webhook_attempts`` attempts (another 4xx is given up at once). A webhook
that is down or hangs therefore only backs the queue up; when it is full, new events are dropped and counted
(``corral_budget_alert_webhook_events_total{outcome="dropped"}``), never waited for. The log and
``/metrics`` have every event whatever the webhook does.

The URL may carry a secret (Slack-style webhooks): only its scheme and host are ever logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity
from prometheus_client import CollectorRegistry, Counter
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

logger = logging.getLogger(__name__)


def shown(url: str) -> str:
    """The URL without path, query or credentials: what logs may say of it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


class WebhookRefused(Exception):
    """The webhook answered with a status other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class WebhookUnreachable(Exception):
    """No answer: connection refused or reset, DNS, TLS, or the attempt's timeout."""


def _worth_retrying(e: BaseException) -> bool:
    """Connection errors, timeouts, 5xx, 408 and 429; another 4xx would only be refused again."""
    if isinstance(e, WebhookRefused):
        return e.status >= 500 or e.status in (408, 429)
    return isinstance(e, WebhookUnreachable | TimeoutError)


class WebhookSender:
    def __init__(self, registry: CollectorRegistry, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.url = ""
        self.timeout = 5.0
        self.attempts = 5
        self.backoff = 0.5  # seconds before the 2nd attempt, doubled each time, at most backoff_max
        self.backoff_max = 30.0
        self.sleep = sleep
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.events = Counter("corral_budget_alert_webhook_events", "Budget alert events and the webhook: "
                              "sent, failed (every attempt), dropped (queue full)", ["outcome"], registry=registry)
        self._client: AsyncHTTPClient | None = None
        self._task: asyncio.Task[None] | None = None

    def resize(self, size: int) -> None:
        if size != self.queue.maxsize:
            old, self.queue = self.queue, asyncio.Queue(maxsize=size)
            while not old.empty() and not self.queue.full():
                self.queue.put_nowait(old.get_nowait())

    def start(self) -> None:
        """On the running loop (the addon's ``running``): the sending task."""
        if self._task is None:
            self._client = AsyncHTTPClient(force_instance=True)  # tornado's: no dependency beyond the viewer's
            self._task = asyncio.get_running_loop().create_task(self._run(), name="corral-alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for the webhook; never blocks. False when it is dropped (no URL: not counted)."""
        if not self.url:
            return False
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.events.labels("dropped").inc()
            logger.warning("corral: alert webhook queue full (%d events): dropped the %s alert at %s",
                           self.queue.maxsize, event.get("budget"), event.get("threshold"))
            return False
        return True

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.deliver(event)
                self.events.labels("sent").inc()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.events.labels("failed").inc()
                logger.warning("corral: alert webhook %s failed, event given up (%s at %s): %s",
                               shown(self.url), event.get("budget"), event.get("threshold"), e)
            finally:
                self.queue.task_done()

    async def deliver(self, event: dict[str, Any]) -> None:
        """POST ``event``, retried with backoff; raises the last error when every attempt failed."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.backoff_max),
            retry=tenacity.retry_if_exception(_worth_retrying),
            sleep=self.sleep, reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._post(event)

    async def _post(self, event: dict[str, Any]) -> None:
        assert self._client is not None
        request = HTTPRequest(self.url, method="POST", body=json.dumps(event),
                              headers={"Content-Type": "application/json", "User-Agent": "corral-alerts"},
                              connect_timeout=self.timeout, request_timeout=self.timeout, follow_redirects=False)
        try:
            async with asyncio.timeout(self.timeout + 1):  # a server that accepts and never answers
                reply = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:  # raise_error=False still raises when there is no answer (599)
            raise WebhookUnreachable(str(e) or type(e).__name__) from e
        if not 200 <= reply.code < 300:
            raise WebhookRefused(reply.code)
