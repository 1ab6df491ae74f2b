"""Cost pricing: genai-prices figures checked by hand, overrides, and never-invent-a-cost."""

from __future__ import annotations

import math

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

from providers.catalog import Catalog
from providers.pricing import Pricer, PriceResult, PricingConfigError

CLAUDE = "claude-sonnet-4-20250514"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _model_price(model: str, provider_id: str):
    """The per-MTok prices genai-prices itself holds for the model (read, not computed)."""
    return calc_price(Usage(input_tokens=0, output_tokens=0), model_ref=model, provider_id=provider_id).model_price


def test_openai_gpt_4o_mini_by_hand(catalog: Catalog) -> None:
    mp = _model_price("gpt-4o-mini", "openai")
    # OpenAI prompt_tokens include the 400 cached ones.
    expected = (600 * mp.input_mtok + 400 * mp.cache_read_mtok + 250 * mp.output_mtok) / 1_000_000
    result = Pricer().price(catalog.get("openai"), "gpt-4o-mini", 1000, 250, 400, None)
    assert result.source == "genai-prices" and not result.unpriced
    assert math.isclose(result.cost_usd, float(expected), rel_tol=1e-12)


def test_anthropic_cache_read_and_write_by_hand(catalog: Catalog) -> None:
    mp = _model_price(CLAUDE, "anthropic")
    assert mp.cache_read_mtok and mp.cache_write_mtok
    # Anthropic input_tokens exclude the 2000 read and the 3000 written.
    expected = (1000 * mp.input_mtok + 2000 * mp.cache_read_mtok + 3000 * mp.cache_write_mtok + 100 * mp.output_mtok)
    result = Pricer().price(catalog.get("anthropic"), CLAUDE, 1000, 100, 2000, 3000)
    assert result.source == "genai-prices"
    assert math.isclose(result.cost_usd, float(expected) / 1_000_000, rel_tol=1e-12)


def test_family_decides_cache_convention(catalog: Catalog) -> None:
    """The same counts cost more when input excludes cache (Anthropic) than when it includes it."""
    pricer = Pricer()
    anthropic = catalog.get("anthropic")
    as_anthropic = pricer.price(anthropic, CLAUDE, 1000, 0, 500, 0)
    as_openai_compat = pricer.price(anthropic, CLAUDE, 1000, 0, 500, 0, family="openai")
    explicit = pricer.price("anthropic", CLAUDE, 1000, 0, 500, 0, input_includes_cached=True)
    assert as_anthropic.cost_usd > as_openai_compat.cost_usd
    assert math.isclose(as_openai_compat.cost_usd, explicit.cost_usd)


def test_bedrock_claude_excludes_cache(catalog: Catalog) -> None:
    model = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    mp = _model_price(model, "aws")
    expected = (1000 * mp.input_mtok + 2000 * mp.cache_read_mtok + 10 * mp.output_mtok) / 1_000_000
    result = Pricer().price(catalog.get("bedrock"), model, 1000, 10, 2000, 0)
    assert math.isclose(result.cost_usd, float(expected), rel_tol=1e-12)


def test_unknown_model_is_unpriced(catalog: Catalog) -> None:
    result = Pricer().price(catalog.get("openai"), "no-such-model-xyz", 1000, 100)
    assert result == PriceResult(cost_usd=None, unpriced=True, source=None)


def test_self_hosted_is_unpriced_not_free(catalog: Catalog) -> None:
    result = Pricer().price(catalog.get("ollama"), "gpt-4o-mini", 1000, 100)
    assert result.cost_usd is None and result.unpriced


def test_unknown_provider_falls_back_to_the_model_only_when_allowed() -> None:
    assert Pricer().price("my-relay", "gpt-4o-mini", 1000, 100).source == "genai-prices"
    assert Pricer(model_fallback=False).price("my-relay", "gpt-4o-mini", 1000, 100).unpriced


@pytest.mark.parametrize(
    ("model", "tokens"),
    [("gpt-4o-mini", (None, None, None, None)), (None, (10, 10, 0, 0)), ("", (10, 10, 0, 0))],
)
def test_no_usage_or_model_is_unpriced(catalog: Catalog, model, tokens) -> None:
    result = Pricer().price(catalog.get("openai"), model, *tokens)
    assert result.cost_usd is None and result.unpriced and result.source is None


def test_override_beats_genai_prices(catalog: Catalog) -> None:
    pricer = Pricer({"openai/gpt-4o-mini": {"input": 1.0, "output": 2.0, "cache_read": 0.5}})
    result = pricer.price(catalog.get("openai"), "gpt-4o-mini", 1000, 100, 400, 0)
    assert result.source == "override" and not result.unpriced
    assert math.isclose(result.cost_usd, (600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1e6)


def test_override_cache_defaults_to_input_price(catalog: Catalog) -> None:
    pricer = Pricer({"claude-*": {"input": 3, "output": 15}})
    result = pricer.price(catalog.get("anthropic"), CLAUDE, 100, 10, 20, 30)
    assert math.isclose(result.cost_usd, ((100 + 20 + 30) * 3 + 10 * 15) / 1e6)


def test_override_prices_an_unknown_model(catalog: Catalog) -> None:
    pricer = Pricer({"llama3*": {"input": 0, "output": 0}})
    result = pricer.price(catalog.get("ollama"), "llama3.2:3b", 1000, 100)
    assert result == PriceResult(cost_usd=0.0, unpriced=False, source="override")


def test_override_precedence(catalog: Catalog) -> None:
    pricer = Pricer(
        {
            "*": {"input": 9, "output": 9},
            "gpt-4o*": {"input": 8, "output": 8},
            "gpt-4o-mini": {"input": 7, "output": 7},
            "openai/gpt-*": {"input": 6, "output": 6},
            "openai/gpt-4o-mini": {"input": 5, "output": 5},
            "together/meta-llama/*": {"input": 4, "output": 4},
        }
    )
    openai = catalog.get("openai")
    assert pricer.price(openai, "gpt-4o-mini", 1_000_000, 0).cost_usd == 5
    assert pricer.price(openai, "gpt-4.1", 1_000_000, 0).cost_usd == 6
    assert pricer.price("groq", "GPT-4o-mini", 1_000_000, 0).cost_usd == 7
    assert pricer.price("groq", "gpt-4o", 1_000_000, 0).cost_usd == 8
    assert pricer.price("groq", "llama", 1_000_000, 0).cost_usd == 9
    assert pricer.price(catalog.get("together"), "meta-llama/Llama-3.3-70B", 1_000_000, 0).cost_usd == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"x": {"input": 1}},
        {"x": {"input": 1, "output": -1}},
        {"x": {"input": "1", "output": 1}},
        {"x": {"input": 1, "output": 1, "cached": 1}},
        {"x": 3},
    ],
)
def test_invalid_overrides_raise(overrides: dict) -> None:
    with pytest.raises(PricingConfigError, match=r'prices\."x"'):
        Pricer(overrides)


@pytest.mark.parametrize("tokens", [(-5, 10), (10, -1), (1.5, 2), ("10", 2), (True, 2)])
def test_bad_counts_are_unpriced(catalog: Catalog, tokens) -> None:
    assert Pricer().price(catalog.get("openai"), "gpt-4o-mini", *tokens).unpriced


def test_price_never_raises(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import providers.pricing as pricing

    def boom(*args, **kwargs):
        raise RuntimeError("price data broken")

    pricer = Pricer()
    pricer.price(catalog.get("openai"), "gpt-4o-mini", 10, 10)  # resolve (and cache) the model first
    monkeypatch.setattr(pricing, "calc_price", boom)
    assert pricer.price(catalog.get("openai"), "gpt-4o-mini", 10, 10) == PriceResult(None, True, None)


def test_catalog_pricing_ids_exist_in_genai_prices(catalog: Catalog) -> None:
    providers = get_snapshot().providers
    for p in catalog:
        if p.pricing_id:
            assert find_provider_by_id(providers, p.pricing_id) is not None, p.name


def test_provider_names_resolve_through_the_catalog(catalog: Catalog) -> None:
    """The recorder passes names: they must price exactly like the Provider objects."""
    pricer = Pricer()
    claude = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    by_object = pricer.price(catalog.get("bedrock"), claude, 1000, 10, 2000, 0)
    assert pricer.price("bedrock", claude, 1000, 10, 2000, 0) == by_object
    assert pricer.price("anthropic", CLAUDE, 1000, 0, 500, 0).cost_usd > pricer.price(
        "anthropic", CLAUDE, 1000, 0, 500, 0, input_includes_cached=True
    ).cost_usd
    assert pricer.price("gemini", "gemini-2.5-flash", 1000, 100).source == "genai-prices"  # pricing_id google
    assert pricer.price("ollama", "gpt-4o-mini", 1000, 100).unpriced


def test_custom_catalog_resolves_custom_providers() -> None:
    cat = Catalog.load({"mylocal": {"custom": True, "upstream": "http://127.0.0.1:9000", "pricing_id": ""}})
    assert Pricer(catalog=cat).price("mylocal", "gpt-4o-mini", 1000, 100).unpriced
    assert not Pricer().price("mylocal", "gpt-4o-mini", 1000, 100).unpriced  # unknown name: by-model fallback


def test_gemini_thoughts_are_billed_as_output() -> None:
    # candidatesTokenCount leaves thoughts out; Google bills them at the output rate.
    pricer = Pricer()
    answer_only = pricer.price("gemini", "gemini-2.5-flash", 1000, 100, family="gemini")
    with_thoughts = pricer.price("gemini", "gemini-2.5-flash", 1000, 100, family="gemini", reasoning_tokens=300)
    as_output = pricer.price("gemini", "gemini-2.5-flash", 1000, 400, family="gemini")
    assert answer_only.cost_usd is not None and with_thoughts.cost_usd == as_output.cost_usd > answer_only.cost_usd
    # Every other family's output count includes its reasoning already: not added twice.
    openai = pricer.price("openai", "gpt-4o-mini", 1000, 100, family="openai", reasoning_tokens=300)
    assert openai.cost_usd == pricer.price("openai", "gpt-4o-mini", 1000, 100, family="openai").cost_usd
