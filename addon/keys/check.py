"""KeyCheck: admits a request presenting a gateway key (``ck-…``) and swaps in the provider's credential.

The key is read wherever the client's SDK puts one: ``Authorization: Bearer``, ``x-api-key``,
``api-key``, ``x-goog-api-key`` or ``?key=``. In order:

1. unknown, revoked or expired key: 401; no gateway key at all: 401 if ``[keys] required``, else the
   request passes unchanged (pass-through setups keep working);
2. a provider outside the key's ``providers``: 403 (in ``requestheaders``); then, in ``request``
   (the Router has read the model from the body), a model outside its ``models`` globs: 403;
3. a budget without room for the request (the key's own, its team's or a tag's; addon/keys/budgets.py):
   429 naming the budget and when it resets, with ``x-corral-budget-*`` headers. Admission reserves an
   estimate of the request's cost on every budget that applies; KeySpend settles it to the exact cost;
4. the gateway key is removed and ``[providers.<name>] api_key`` put where the provider reads its
   credential: the key never leaves the gateway, the app never holds the provider's key.

A request routed only from its body (the unified endpoint, ``POST /v1/chat/completions``) gets the whole
check in ``request``, after the Router and UnifiedRequest have made it the provider's native request.

Answers use the provider's error shape (the Router, before this addon, set the flow's format). The
record keeps the key's id (``corral.gateway_key``); ``corral.credential`` stays the fingerprint of what
the client presented, so per-credential limits and cache namespaces apply per gateway key.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from mitmproxy import http

from addon import metadata as md, money
from addon.credentials import CREDENTIAL_HEADERS
from addon.keys import budgets, store
from addon.keys.book import KeyBook
from addon.responses import make_error
from addon.services import CatalogService
from addon.state import StateUnavailable, note_degraded
from addon.unified.groups import GroupBook

logger = logging.getLogger(__name__)

_CREDENTIAL_HEADERS_B = frozenset(h.encode() for h in CREDENTIAL_HEADERS)
_PREFIX_B = store.PREFIX.encode()
# Where each catalog auth style wants the credential: a header (value template) or the ``key`` parameter.
_PLACES = {"bearer": ("authorization", "Bearer {}"), "x-api-key": ("x-api-key", "{}"), "api-key": ("api-key", "{}"),
           "x-goog-api-key": ("x-goog-api-key", "{}"), "none": ("authorization", "Bearer {}")}


def presented_key(request: http.Request) -> str | None:
    """The gateway key the request carries in any credential place, or None."""
    for raw_name, raw_value in request.headers.fields:
        if raw_name.lower() in _CREDENTIAL_HEADERS_B:
            value = raw_value.strip()
            if value[:7].lower() == b"bearer ":
                value = value[7:].strip()
            if value.startswith(_PREFIX_B):
                return value.decode("utf-8", "surrogateescape")
    if "?" in request.path:
        for name, value in request.query.items(multi=True):
            if name.lower() == "key" and value.startswith(store.PREFIX):
                return value
    return None


def _swapped_fields(fields: tuple[tuple[bytes, bytes], ...], header: bytes | None, value: bytes,
                    drop_authorization: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The header fields with every credential header that carries a gateway key gone (all fields of
    that name), ``authorization`` gone too if ``drop_authorization``, and ``value`` in the first field
    named ``header`` (appended if none is left): what ``del headers[name]`` and ``headers[header] = value``
    do, in two passes over the fields instead of a scan of them per header name. ``bytes.find``, not
    ``in``: ``in`` on bytes first tries its operand as an int and raises and clears a TypeError."""
    gone = {name.lower() for name, v in fields if v.find(_PREFIX_B) != -1} & _CREDENTIAL_HEADERS_B
    if drop_authorization:
        gone.add(b"authorization")
    out = []
    placed = header is None
    for field in fields:
        lower = field[0].lower()
        if lower in gone:
            continue
        if lower == header:
            if not placed:
                out.append((field[0], value))
                placed = True
            continue
        out.append(field)
    if not placed and header is not None:
        out.append((header, value))
    return tuple(out)


def _remove_query_key(request: http.Request) -> None:
    if "?" in request.path:
        query = request.query
        for name in [n for n, v in query.items(multi=True) if n.lower() == "key" and v.startswith(store.PREFIX)]:
            del query[name]


class KeyCheck:
    def __init__(self, book: KeyBook, catalog: CatalogService, groups: GroupBook | None = None) -> None:
        self.book = book
        self.catalog = catalog
        self.groups = groups  # a model group's other targets (the unified endpoint): checked and swapped too
        self._admitted: dict[str, store.KeyRecord] = {}  # flow id -> its key, between the two hooks
        self._checked: set[str] = set()  # flows requestheaders decided on (routed from the head)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or md.PROVIDER not in flow.metadata or md.ROUTE_ERROR in flow.metadata:
            return
        self._checked.add(flow.id)
        try:
            await self._admit(flow)
        except Exception:  # fail closed: an unchecked flow would carry the gateway key upstream
            self._failed(flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        # The Router, before this addon, has read the model from the body by now.
        record = self._admitted.pop(flow.id, None)
        checked = flow.id in self._checked
        self._checked.discard(flow.id)
        if flow.response is not None:
            return
        try:
            if record is None and not checked and md.PROVIDER in flow.metadata and md.ROUTE_ERROR not in flow.metadata:
                # Routed only now, from the body (the unified endpoint): the whole check happens here.
                await self._admit(flow)
                record = self._admitted.pop(flow.id, None)
            if record is not None and flow.response is None:
                await self._apply(flow, record)
        except Exception:
            self._failed(flow)

    async def _admit(self, flow: http.HTTPFlow) -> None:
        token = presented_key(flow.request)
        if token is None:
            if self.book.required:
                self._refuse(flow, 401, "corral: this gateway requires a gateway key (ck-...); "
                             "create one with `corral keys create`", "unauthorized")
            return
        record = await self.book.verify(token)
        if record is None:
            self._refuse(flow, 401, "corral: unknown gateway key", "unauthorized")
            return
        flow.metadata[md.GATEWAY_KEY] = record.id
        if reason := record.refusal(self.book.now()):
            self._refuse(flow, 401, reason, "unauthorized")
            return
        provider = flow.metadata[md.PROVIDER]
        if not record.allows_provider(provider):
            self._refuse(flow, 403, f"corral: gateway key {record.prefix} ({record.name}) may not use {provider}; "
                         f"it may use {', '.join(record.providers or ())}", "forbidden")
            return
        self._admitted[flow.id] = record

    async def _apply(self, flow: http.HTTPFlow, record: store.KeyRecord) -> None:
        model = flow.metadata.get(md.MODEL)
        if not record.allows_model(model):
            self._refuse(flow, 403, f"corral: gateway key {record.prefix} ({record.name}) may not use model "
                         f"{model!r}; it may use {', '.join(record.models or ())}", "forbidden")
            return
        self.book.asked(flow)
        applying = self.book.budgets_of(record)
        if applying and not await self._within_budgets(flow, applying):
            return
        if not self._swap(flow, flow.metadata[md.PROVIDER]):
            if self.book.holds(flow.id):
                await self.book.settle(flow, 0.0)  # refused: give the reservation back
            return
        if self.groups is not None and self.groups.pending.get(flow):
            self._clear_members(flow, record)

    def response(self, flow: http.HTTPFlow) -> None:
        self._admitted.pop(flow.id, None)  # answered before `request` (e.g. by the cache)
        self._checked.discard(flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._admitted.pop(flow.id, None)
        self._checked.discard(flow.id)

    # --- helpers ------------------------------------------------------------------------------

    async def _within_budgets(self, flow: http.HTTPFlow, applying: list[budgets.Budget]) -> bool:
        """Reserve the request's estimated cost on every budget, or answer why not; True if admitted."""
        estimate = self.book.estimate(flow)
        if estimate is None:
            self._refuse(flow, 403, f"corral: no price is known for model {flow.metadata.get(md.MODEL)!r} and "
                         "budgets refuse unpriced models ([keys] unpriced = \"refuse\")", "forbidden")
            return False
        try:
            refusal, degraded = await self.book.admit(flow.id, applying, estimate)
        except StateUnavailable as e:
            note_degraded(flow, f"budgets: {e}; request refused (on_failure = closed)")
            self._refuse(flow, 503, "corral: budgets cannot be checked (shared state unavailable)",
                         "upstream_unavailable")
            return False
        if degraded:
            note_degraded(flow, degraded)
        if refusal is None:
            return True
        st = refusal.state
        flow.metadata[md.BUDGET_REFUSED] = st.budget.id
        period = st.budget.period
        reset = f"{st.reset_at:%Y-%m-%dT%H:%M:%SZ}" if st.reset_at is not None else "never"
        when = "it does not reset (period total)"
        if st.reset_at is not None:
            when = f"it resets at {st.reset_at:%Y-%m-%d %H:%M} UTC"
            if self.book.timezone.upper() != "UTC":  # also as the calendar the budget follows
                local = st.reset_at.replace(tzinfo=datetime.UTC).astimezone(store.zone(self.book.timezone))
                when = f"it resets at {local:%Y-%m-%d %H:%M} {self.book.timezone} ({st.reset_at:%H:%M} UTC)"
        adjective = {"day": "daily", "week": "weekly", "month": "monthly"}.get(period, "total")
        in_flight = f" (+{money.usd(st.reserved_usd)} in flight)" if st.reserved_usd > 0 else ""
        message = (f"corral: {st.budget.describe()} has spent {money.usd(st.spent_usd)}{in_flight} of its "
                   f"{money.usd(st.limit_usd)} {adjective} budget; this request (about "
                   f"{money.usd(refusal.estimate_usd)}) would exceed it; {when}")
        self._refuse(flow, 429, message, "budget_exceeded", {
            "x-corral-budget": st.budget.id,
            "x-corral-budget-limit": f"{st.limit_usd:.6f}", "x-corral-budget-spent": f"{st.spent_usd:.6f}",
            "x-corral-budget-period": period, "x-corral-budget-reset": reset,
            "x-should-retry": "false",  # the openai and anthropic SDKs would otherwise retry a 429
        })
        return False

    def _swap(self, flow: http.HTTPFlow, provider_name: str) -> bool:
        """Replace the gateway key by the provider credential; False (and an answer) when there is none."""
        provider = self.catalog.current.get(provider_name)
        auth = provider.auth if provider is not None else "bearer"
        credential = self.book.credential_for(provider_name)
        if credential is None or auth == "sigv4":
            self._refuse(flow, 503, f"corral: no provider credential for {provider_name} to use with gateway keys; "
                         f"set [providers.{provider_name}] api_key = \"env:VAR\"", "upstream_unavailable")
            return False
        request = flow.request
        headers = request.headers
        if auth == "query-key":
            headers.fields = _swapped_fields(headers.fields, None, b"", False)
            _remove_query_key(request)
            request.query["key"] = credential
        else:
            header, template = _PLACES.get(auth, _PLACES["bearer"])
            value = template.format(credential).encode("utf-8", "surrogateescape")
            headers.fields = _swapped_fields(headers.fields, header.encode(), value, header != "authorization")
            _remove_query_key(request)
        return True

    def _clear_members(self, flow: http.HTTPFlow, record: store.KeyRecord) -> None:
        """A model group's other targets: each one the key may use gets its provider credential in place
        of the gateway key; the others are left out (noted), as is one without a credential."""
        assert self.groups is not None
        cleared, notes = [], []
        for member in self.groups.pending.get(flow) or []:
            provider = self.catalog.current.get(member.provider)
            auth = provider.auth if provider is not None else "bearer"
            credential = self.book.credential_for(member.provider)
            if not record.allows_provider(member.provider) or not record.allows_model(member.model):
                notes.append(f"model group: {member.requested} left out, gateway key {record.prefix} may not use it")
            elif credential is None or auth not in _PLACES:
                notes.append(f"model group: {member.requested} left out, no provider credential for "
                             f"{member.provider} to use with gateway keys")
            else:
                header, template = _PLACES[auth]
                value = template.format(credential).encode("utf-8", "surrogateescape")
                fields = _swapped_fields(member.headers, header.encode(), value, header != "authorization")
                cleared.append(dataclasses.replace(member, headers=fields, awaits_key_check=False))
        self.groups.pending[flow] = cleared
        flow.metadata.setdefault(md.CHANGES, []).extend(notes)

    def _failed(self, flow: http.HTTPFlow) -> None:
        logger.exception("corral: gateway key check failed for %s", flow.metadata.get(md.PROVIDER))
        flow.response = None
        self._refuse(flow, 503, "corral: the gateway key could not be checked (see the gateway's log)",
                     "upstream_unavailable")

    @staticmethod
    def _refuse(flow: http.HTTPFlow, status: int, message: str, kind: str,
                headers: dict[str, str] | None = None) -> None:
        logger.info("corral: %s %s refused: %s", flow.request.method, flow.metadata.get(md.PROVIDER), message)
        flow.response = make_error(flow, status, message, kind, headers)
