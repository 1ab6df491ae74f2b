"""Cost of one exchange in USD, from the maintained ``genai-prices`` data or from user overrides.

Overrides come from corral.toml and beat genai-prices::

    [prices."openai/gpt-4o-mini"]       # <provider name>/<model glob>
    input = 0.15                        # USD per million input tokens (uncached)
    output = 0.60                       # USD per million output tokens
    cache_read = 0.075                  # USD per million cache-read tokens (default: input)
    cache_write = 0.1875                # USD per million cache-write tokens (default: input)

    [prices."llama3*"]                  # bare model glob: any provider
    input = 0
    output = 0

Globs use fnmatch syntax and are matched case-insensitively. A key whose text before the first
"/" equals the provider's name is provider-qualified; every key is also tried as a bare glob
against the whole model (model names such as "meta-llama/Llama-3.3-70B" contain "/").
Provider-qualified beats bare, exact beats glob, longer pattern beats shorter.

Token conventions differ between families, and this module takes care of it:
- OpenAI-style ``input_tokens`` (prompt_tokens) INCLUDE cached tokens; so do Gemini and most others.
- Anthropic-style ``input_tokens`` EXCLUDE cache reads and cache writes (Bedrock Claude too).
genai-prices' ``Usage.input_tokens`` is the TOTAL input (it subtracts cache_read/cache_write
itself), so Anthropic counts are summed before calling it.

A cost is never invented: unknown model, unknown provider, or no usage gives ``cost_usd=None``,
``unpriced=True`` (never 0). ``Pricer.price`` never raises.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from genai_prices import Usage, calc_price

from providers.catalog import Catalog, CatalogError, Provider

log = logging.getLogger(__name__)

Source = Literal["override", "genai-prices"]
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
_PER = 1_000_000
# Families whose input_tokens exclude cache reads/writes.
_EXCLUDING_FAMILIES = frozenset({"anthropic"})
# Marker returned by the genai-prices resolver: the provider id is unknown, match by model.
_BY_MODEL = "\0by-model"


class PricingConfigError(ValueError):
    """A ``[prices]`` table in corral.toml is invalid."""


@dataclass(frozen=True)
class PriceResult:
    cost_usd: float | None
    unpriced: bool
    source: Source | None


UNPRICED = PriceResult(cost_usd=None, unpriced=True, source=None)


@dataclass(frozen=True)
class OverridePrice:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True)
class _Tokens:
    """Normalised counts: ``uncached`` + ``cache_read`` + ``cache_write`` = total input."""

    uncached: int
    cache_read: int
    cache_write: int
    output: int

    @property
    def total_input(self) -> int:
        return self.uncached + self.cache_read + self.cache_write


class Pricer:
    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        catalog: Catalog | None = None,
        model_fallback: bool = True,
    ) -> None:
        """``overrides``: the ``[prices]`` table of corral.toml. Raises PricingConfigError if invalid.

        ``catalog``: resolves provider *names* passed to ``price`` (format family, pricing id).
        Defaults to the built-in catalog; pass the loaded one so custom providers resolve too.
        A name found in neither is priced as a custom OpenAI-compatible provider.

        ``model_fallback``: when a provider is unknown to genai-prices (custom relays, the
        Hugging Face router), let genai-prices pick the provider from the model name alone.
        Self-hosted providers (``pricing_id = ""``) are never priced this way.
        """
        self._overrides = tuple((key.lower(), _parse_override(key, table)) for key, table in (overrides or {}).items())
        self._model_fallback = model_fallback
        self._catalog = catalog
        # Per instance, not module-wide: the answer depends on this instance's overrides.
        self._match_override = lru_cache(maxsize=4096)(self._match_override_uncached)

    def price(
        self,
        provider: Provider | str,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None = None,
        cache_creation_input_tokens: int | None = None,
        *,
        family: str | None = None,
        input_includes_cached: bool | None = None,
        reasoning_tokens: int | None = None,
    ) -> PriceResult:
        """Cost of one exchange. ``family`` is the wire format actually used for this path (see
        ``Catalog.format_for``); it defaults to the provider's format and decides whether
        ``input_tokens`` includes cached tokens, unless ``input_includes_cached`` says so, and whether
        ``reasoning_tokens`` are billed on top of ``output_tokens`` (Gemini's output count leaves thoughts
        out; every other family's includes them)."""
        try:
            p = self._resolve_provider(provider)
            if reasoning_tokens and output_tokens is not None and (family or p.format) in _REASONING_APART:
                output_tokens += reasoning_tokens
            return self._price(
                p, model, input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens,
                family, input_includes_cached,
            )
        except Exception:  # pricing must never break a flow
            log.exception("pricing failed for %r %r", provider, model)
            return UNPRICED

    def _price(
        self,
        provider: Provider | str,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cached: int | None,
        cache_write: int | None,
        family: str | None,
        input_includes_cached: bool | None,
    ) -> PriceResult:
        if not model or (input_tokens is None and output_tokens is None):
            return UNPRICED
        counts = (input_tokens, output_tokens, cached, cache_write)
        if not all(c is None or (type(c) is int and c >= 0) for c in counts):
            return UNPRICED  # garbage counts: better no figure than a wrong one
        p = self._resolve_provider(provider)
        includes = input_includes_cached
        if includes is None:
            includes = _input_includes_cached(p, family, model)
        tokens = _normalise(input_tokens or 0, output_tokens or 0, cached or 0, cache_write or 0, includes)
        override = self._match_override(p.name, model.lower())
        if override is not None:
            return PriceResult(_override_cost(override, tokens), False, "override")
        return self._genai_price(p, model, tokens)

    def _resolve_provider(self, provider: Provider | str) -> Provider:
        if isinstance(provider, Provider):
            return provider
        known = (self._catalog or _builtin_catalog()).get(provider)
        # Unknown name: a custom provider, OpenAI-compatible and priced under its own name.
        return known or Provider(name=provider, prefix=provider, upstream="https://unknown.invalid")

    def _genai_price(self, provider: Provider, model: str, tokens: _Tokens) -> PriceResult:
        pricing_id = provider.genai_prices_id
        if not pricing_id:
            return UNPRICED
        resolved = _resolve(pricing_id, model, self._model_fallback)
        if resolved is None:
            return UNPRICED
        usage = Usage(
            input_tokens=tokens.total_input,
            output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
        )
        provider_id = None if resolved == _BY_MODEL else resolved
        calc = calc_price(usage, model_ref=model, provider_id=provider_id)
        return PriceResult(float(calc.total_price), False, "genai-prices")

    def _match_override_uncached(self, provider_name: str, model: str) -> OverridePrice | None:
        best: tuple[tuple[int, int, int], OverridePrice] | None = None
        qualifier = provider_name.lower() + "/"
        for key, price in self._overrides:
            rank = _override_rank(key, qualifier, model)
            if rank is not None and (best is None or rank > best[0]):
                best = (rank, price)
        return best[1] if best else None


# --- genai-prices lookups -------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _resolve(pricing_id: str, model: str, model_fallback: bool) -> str | None:
    """Which provider id genai-prices should use for this model, or None when it has no price.

    Cached because unknown models are not cached by genai-prices and a miss scans every model.
    A zero-token probe is enough: the lookup does not depend on the counts.
    """
    probe = Usage(input_tokens=0, output_tokens=0)
    try:
        calc_price(probe, model_ref=model, provider_id=pricing_id)
        return pricing_id
    except LookupError as exc:
        # Only an unknown *provider* may fall back; an unknown model of a known provider stays unpriced.
        if not model_fallback or "find provider" not in str(exc):
            return None
    try:
        calc_price(probe, model_ref=model)
        return _BY_MODEL
    except LookupError:
        return None


# --- helpers --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _builtin_catalog() -> Catalog:
    try:
        return Catalog.load()
    except CatalogError:  # a broken catalog is reported by the router; pricing just degrades
        log.exception("cannot load the built-in catalog for pricing")
        return Catalog(())


# Families whose output token count leaves the reasoning tokens out, though they are billed as output.
_REASONING_APART = frozenset({"gemini"})


def _input_includes_cached(provider: Provider, family: str | None, model: str) -> bool:
    fam = family or provider.format
    if fam in _EXCLUDING_FAMILIES:
        return False
    # Bedrock reports Claude usage the Anthropic way (inputTokens exclude cache reads/writes).
    return not (fam == "bedrock" and ("claude" in model.lower() or "anthropic" in model.lower()))


def _normalise(input_tokens: int, output_tokens: int, cached: int, cache_write: int, includes: bool) -> _Tokens:
    if includes:
        # Clamp: a provider reporting more cached than total input must not yield a negative count.
        uncached = max(input_tokens - cached - cache_write, 0)
    else:
        uncached = input_tokens
    return _Tokens(uncached=uncached, cache_read=cached, cache_write=cache_write, output=output_tokens)


def _override_cost(price: OverridePrice, t: _Tokens) -> float:
    micro_usd = (
        t.uncached * price.input + t.cache_read * price.cache_read + t.cache_write * price.cache_write
        + t.output * price.output
    )
    return micro_usd / _PER


def _override_rank(key: str, qualifier: str, model: str) -> tuple[int, int, int] | None:
    """(provider-qualified, exact, length) when ``key`` matches, else None."""
    candidates = []
    if key.startswith(qualifier):
        candidates.append((1, key[len(qualifier):]))
    candidates.append((0, key))
    for qualified, pattern in candidates:
        if fnmatch.fnmatchcase(model, pattern):
            exact = int(not any(ch in pattern for ch in "*?["))
            return (qualified, exact, len(pattern))
    return None


def _parse_override(key: str, table: Any) -> OverridePrice:
    where = f'[prices."{key}"]'
    if not isinstance(table, Mapping):
        raise PricingConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(_PRICE_KEYS))
    if unknown:
        raise PricingConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(_PRICE_KEYS)}")
    for required in ("input", "output"):
        if required not in table:
            raise PricingConfigError(f"{where}: '{required}' (USD per million tokens) is required")
    values = {k: _usd(where, k, table[k]) for k in _PRICE_KEYS if k in table}
    return OverridePrice(
        input=values["input"],
        output=values["output"],
        cache_read=values.get("cache_read", values["input"]),
        cache_write=values.get("cache_write", values["input"]),
    )


def _usd(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise PricingConfigError(f"{where}: {key} must be a non-negative number (USD per million tokens)")
    return float(value)
