"""Retrier: retries with backoff that honour Retry-After, timeouts, and fallback targets.

For each provider flow with retries enabled, ``request`` hands the flow to the in-process relay
(addon/relay/relay.py) by pointing its connection at 127.0.0.1:<relay port> with a one-time job header; the
relay makes the upstream attempts and streams the first good answer back. A POST that did not ask for
a stream is answered in ``request`` itself with the same attempts (addon/relay/inline.py: mitmproxy
would buffer that answer anyway, and the hop costs CPU). ``responseheaders`` puts the request's real
address back (so the recorder and mitmweb show the provider, not the relay) and adds
``x-corral-retries`` / ``x-corral-upstream`` to the response.

Settings: ``[retries]`` (options ``corral_retries_*``), per-provider overrides in
``[retries.providers.<name>]`` and fallback targets in ``[fallbacks.<name>]``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState

from addon import config, metadata as md
from addon.relay import inline as relay_inline
from addon.relay.policy import Policy, PolicyError, Target, parse_fallbacks
from addon.relay.relay import JOB_HEADER, ClientGone, Job, Relay
from addon.services import CatalogService
from addon.unified import members as group_members
from addon.unified.groups import GroupBook
from providers.catalog import unknown_provider

logger = logging.getLogger(__name__)

DEFAULTS = Policy()
# [retries] keys that are seconds or lists: str options, so `--set` works (mitmproxy has no float --set).
SECONDS = ("backoff", "backoff_max", "max_retry_after", "connect_timeout", "ttfb_timeout", "idle_timeout")


class Retrier:
    def __init__(self, catalog: CatalogService, groups: GroupBook | None = None) -> None:
        self.catalog = catalog  # provider names, and each provider's auth style for fallback keys
        self.groups = groups  # model groups: the members the router prepared for a flow
        self.group_jobs: dict[str, Job] = {}  # flow.id -> job of a model group's flow, until it is answered
        self.relay = Relay()
        self.default = DEFAULTS
        self.policies: dict[str, Policy] = {}
        self.fallbacks: dict[str, tuple[Target, ...]] = {}
        self.relayed: dict[str, tuple[str, str, int, str]] = {}  # flow.id -> real scheme, host, port, job token
        self.inline: dict[str, float] = {}  # flow.id -> when the upstream's head arrived (answered in `request`)
        self.running_ = False
        # mitmproxy listens before every addon's `running` has finished: a request that comes that early
        # waits for the relay instead of going upstream without retries.
        self.relay_started = asyncio.Event()

    def load(self, loader) -> None:
        loader.add_option("corral_retries_enabled", bool, True,
                          "Retry failed upstream attempts (and apply Corral's timeouts) for provider flows.")
        loader.add_option("corral_retries_attempts", int, DEFAULTS.attempts,
                          "Upstream attempts per target, the first one included.")
        loader.add_option("corral_retries_statuses", str, ",".join(map(str, sorted(DEFAULTS.statuses))),
                          "HTTP statuses that are retried (comma-separated); connection failures always are.")
        for key, help_text in (
            ("backoff", "Base of the exponential backoff with jitter, seconds."),
            ("backoff_max", "Longest backoff wait, seconds."),
            ("max_retry_after", "Longest Retry-After Corral waits for; a longer one goes to the client as is."),
            ("connect_timeout", "Seconds to connect (TCP + TLS) to the upstream."),
            ("ttfb_timeout", "Seconds from sending the request to the response headers."),
            ("idle_timeout", "Seconds a response body may stay silent before the stream is cut."),
        ):
            loader.add_option(f"corral_retries_{key}", str, f"{getattr(DEFAULTS, key):g}", help_text)
        loader.add_option("corral_retries_providers", str, "",
                          "JSON of corral.toml's [retries.providers.<name>] tables: per-provider overrides.")
        loader.add_option("corral_fallbacks", str, "",
                          "JSON of corral.toml's [fallbacks.<name>] tables: targets = [{upstream, api_key_env, auth}].")

    def configure(self, updated: set[str]) -> None:
        if any(name.startswith(("corral_retries_", "corral_fallbacks", "corral_providers")) for name in updated):
            try:
                self._load_settings()
            except PolicyError as e:
                raise exceptions.OptionsError(str(e)) from None
        if self.running_ and updated & {"ssl_insecure", "ssl_verify_upstream_trusted_ca",
                                         "ssl_verify_upstream_trusted_confdir"}:
            self.relay.set_verify(self._verify())

    def _load_settings(self) -> None:
        o = ctx.options
        table: dict[str, Any] = {"enabled": o.corral_retries_enabled, "attempts": o.corral_retries_attempts,
                                 "statuses": o.corral_retries_statuses}
        for key in SECONDS:
            raw = getattr(o, f"corral_retries_{key}")
            try:
                table[key] = float(raw)
            except ValueError:
                raise PolicyError(f"[retries] {key} must be a number of seconds, got {raw!r}") from None
        default = Policy().merged(table, "[retries]")
        policies = {}
        for name, overrides in config.parse_json_option("corral_retries_providers", o.corral_retries_providers).items():
            if not isinstance(overrides, dict):
                raise PolicyError(f"[retries.providers.{name}] must be a table")
            if name not in self.catalog.current:
                raise PolicyError(unknown_provider(f"[retries.providers.{name}]", name, self.catalog.current.names()))
            policies[name] = default.merged(overrides, f"[retries.providers.{name}]")
        auth_of = {p.name: p.auth for p in self.catalog.current}
        fallbacks = parse_fallbacks(config.parse_json_option("corral_fallbacks", o.corral_fallbacks), auth_of)
        self.default, self.policies, self.fallbacks = default, policies, fallbacks

    @staticmethod
    def _verify() -> Any:
        """The same upstream verification mitmproxy applies to its own upstream connections."""
        o = ctx.options
        if o.ssl_insecure:
            return False
        if o.ssl_verify_upstream_trusted_ca or o.ssl_verify_upstream_trusted_confdir:
            return ssl.create_default_context(cafile=o.ssl_verify_upstream_trusted_ca or None,
                                              capath=o.ssl_verify_upstream_trusted_confdir or None)
        return True  # certifi, as mitmproxy

    async def running(self) -> None:
        self.relay.verify = self._verify()
        await self.relay.start()
        self.running_ = True
        self.relay_started.set()

    async def done(self) -> None:
        await self.relay.stop()

    # --- hooks -------------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        provider = meta.get(md.PROVIDER)
        if (provider is None or flow.response is not None or flow.error is not None  # e.g. killed while queued
                or md.ROUTE_ERROR in meta
                or meta.get(md.CACHE) == "hit"  # answered by the cache (maybe via its replay server)
                or meta.get(md.FIXTURE) == "replayed"  # answered from the fixture set (the same way)
                or flow.request.headers.get("upgrade") or flow.websocket is not None):
            return
        policy = self.policies.get(provider, self.default)
        if not policy.enabled:
            return
        if not self.running_:
            await self.relay_started.wait()
        req = flow.request
        primary = meta.get(md.UPSTREAM) or f"{req.scheme}://{req.host_header or req.host}"
        fallbacks = self.fallbacks.get(provider, ())
        members = self.groups.pending.pop(flow, None) if self.groups is not None else None
        if members:
            # Fail closed: a member KeyCheck has not cleared would carry the client's gateway key upstream.
            members = [m for m in members if not m.awaits_key_check]
        if members:  # after the provider's own fallback upstreams, the group's other targets
            fallbacks = (*fallbacks, *(Target(m.base, member=m) for m in members))
        job = Job(flow, req.method, req.url, primary, policy, fallbacks)
        if (meta.get(md.UNIFIED) or {}).get("alias"):
            job.label = meta[md.UNIFIED].get("answered_by")
            self.group_jobs[flow.id] = job
        if relay_inline.wants_inline(flow):
            job.client_gone = lambda: not flow.client_conn.state & ConnectionState.CAN_READ
            try:
                head_at = await relay_inline.answer(self.relay, job)
            except ClientGone:
                # The client left while Corral waited to retry: nothing more goes upstream for it.
                flow.metadata[md.GATEWAY_ERROR] = "client disconnected while corral waited to retry; not sent again"
                if flow.killable:
                    flow.kill()
                return
            if head_at is not None:
                self.inline[flow.id] = head_at
                self._group_answered(flow, head_at)
                return
            # The upstream streams: the relay passes the answer it already has on, chunk by chunk.
        token = self.relay.add(job)
        self.relayed[flow.id] = (req.scheme, req.host, req.port, token)
        # Point the connection at the relay without touching the Host header (the relay forwards it).
        req.data.scheme, req.data.host, req.data.port = b"http", "127.0.0.1", self.relay.port
        req.headers[JOB_HEADER] = token

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        head_at = self.inline.pop(flow.id, None)
        if head_at is not None and flow.response is not None:
            # mitmproxy stamps an answer set in `request` with the time it sends it; the upstream's
            # head arrived earlier, and that is the time to first byte the record shows.
            flow.response.timestamp_start = head_at
        relayed = self._restore(flow)
        if relayed and flow.response is not None:
            self._group_answered(flow, flow.response.timestamp_start)
        if (head_at is not None or relayed) and flow.response is not None:
            # Only when something happened: a first-time answer reaches the client exactly as sent.
            retries = flow.metadata.get(md.RETRIES, 0)
            if retries:
                flow.response.headers["x-corral-retries"] = str(retries)
                flow.response.headers["x-corral-upstream"] = flow.metadata.get(md.UPSTREAM, "")

    def error(self, flow: http.HTTPFlow) -> None:
        self.inline.pop(flow.id, None)
        self.group_jobs.pop(flow.id, None)
        self._restore(flow)

    def _group_answered(self, flow: http.HTTPFlow, head_at: float) -> None:
        """A model group's flow got its answer: the flow becomes the answering member's exchange, and a
        success times its target for the lowest-latency strategy."""
        job = self.group_jobs.pop(flow.id, None)
        if job is None or self.groups is None or flow.response is None:
            return
        if job.answered is not None and job.answered.member is not None:
            group_members.switch(flow, job.answered.member, self.catalog.current)
        target = (flow.metadata.get(md.UNIFIED) or {}).get("answered_by")
        if target and 200 <= flow.response.status_code < 300:
            self.groups.observe_latency(target, max(0.0, head_at - flow.request.timestamp_start))

    def _restore(self, flow: http.HTTPFlow) -> bool:
        """Put the request's real upstream address back; True if the flow went through the relay."""
        state = self.relayed.pop(flow.id, None)
        if state is None:
            return False
        scheme, host, port, token = state
        self.relay.jobs.pop(token, None)  # never reached the relay (client gone): forget the job
        req = flow.request
        req.data.scheme, req.data.host, req.data.port = scheme.encode(), host, port
        req.headers.pop(JOB_HEADER, None)
        return True
