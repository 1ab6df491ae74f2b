"""The built-in provider catalog and corral.toml overrides."""

from __future__ import annotations

import re

import pytest

from providers.catalog import FAMILIES, Catalog, CatalogError, Provider

REQUIRED = """openai azure anthropic gemini vertex bedrock mistral groq cohere deepseek xai together fireworks
openrouter perplexity cerebras ollama lmstudio vllm huggingface moonshot zai nebius novita sambanova
hyperbolic deepinfra baseten databricks cloudflare github nvidia voyage jina ai21 replicate lambda scaleway
ovhcloud nscale friendli featherless chutes inception upstage siliconflow minimax dashscope""".split()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


# --- the built-in data ----------------------------------------------------------------------


def test_catalog_is_large_and_has_every_required_provider(catalog: Catalog) -> None:
    assert len(catalog) >= 45
    names = {p.name for p in catalog}
    assert set(REQUIRED) <= names


def test_every_host_regex_is_anchored_and_compiles(catalog: Catalog) -> None:
    regexes = catalog.intercept_regexes()
    assert len(regexes) >= 40
    for rx in regexes:
        assert rx.startswith("^") and rx.endswith("$"), rx
        re.compile(rx)


def test_no_duplicate_prefixes(catalog: Catalog) -> None:
    prefixes = [p.prefix for p in catalog]
    assert len(prefixes) == len(set(prefixes))


def test_formats_are_known_families(catalog: Catalog) -> None:
    for p in catalog:
        assert p.format in FAMILIES
        assert all(fam in FAMILIES for _, fam in p.path_formats)


@pytest.mark.parametrize(
    "host",
    ["api.openai.com.example.test", "evil-api.openai.com", "xapi.anthropic.com", "api.openai.com.", "openai.com"],
)
def test_lookalike_hosts_are_not_intercepted(catalog: Catalog, host: str) -> None:
    host_port = f"{host}:443"
    assert not any(re.search(rx, host_port) for rx in catalog.intercept_regexes())


def test_local_servers_are_not_intercepted(catalog: Catalog) -> None:
    for name in ("ollama", "lmstudio", "vllm"):
        p = catalog.get(name)
        assert p is not None and p.hosts == ()
        assert p.upstream.startswith("http://127.0.0.1:")


def test_bedrock_is_explicit_proxy_only(catalog: Catalog) -> None:
    bedrock = catalog.get("bedrock")
    assert bedrock is not None
    assert bedrock.reverse is False and bedrock.auth == "sigv4" and bedrock.format == "bedrock"
    assert all(p.reverse for p in catalog if p.name != "bedrock")


def test_azure_needs_an_upstream_override(catalog: Catalog) -> None:
    azure = catalog.get("azure")
    assert azure is not None and azure.auth == "api-key" and azure.upstream_is_placeholder
    assert azure.note and "upstream" in azure.note


# --- lookups --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "name", "upstream"),
    [
        ("openai", "openai", "https://api.openai.com"),
        ("anthropic", "anthropic", "https://api.anthropic.com"),
        ("gemini", "gemini", "https://generativelanguage.googleapis.com"),
        ("groq", "groq", "https://api.groq.com"),
        ("ollama", "ollama", "http://127.0.0.1:11434"),
    ],
)
def test_by_prefix(catalog: Catalog, prefix: str, name: str, upstream: str) -> None:
    p = catalog.by_prefix(prefix)
    assert p is not None and p.name == name and p.upstream == upstream


def test_by_prefix_unknown(catalog: Catalog) -> None:
    assert catalog.by_prefix("nope") is None
    assert catalog.by_prefix("") is None


@pytest.mark.parametrize(
    ("host", "port", "name"),
    [
        ("api.openai.com", 443, "openai"),
        ("API.OpenAI.com", 443, "openai"),
        ("my-resource.openai.azure.com", 443, "azure"),
        ("bedrock-runtime.eu-west-1.amazonaws.com", 443, "bedrock"),
        ("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", 443, "bedrock"),
        ("us-central1-aiplatform.googleapis.com", 443, "vertex"),
        ("aiplatform.googleapis.com", 443, "vertex"),
        ("generativelanguage.googleapis.com", 443, "gemini"),
        ("api.cohere.ai", 443, "cohere"),
        ("api.groq.com", 443, "groq"),
        ("adb-1234567890123456.7.azuredatabricks.net", 443, "databricks"),
        ("dbc-a1b2c3d4-e5f6.cloud.databricks.com", 443, "databricks"),
        ("models.github.ai", 443, "github"),
        ("integrate.api.nvidia.com", 443, "nvidia"),
    ],
)
def test_by_host(catalog: Catalog, host: str, port: int, name: str) -> None:
    p = catalog.by_host(host, port)
    assert p is not None and p.name == name


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("api.openai.com", 80),
        ("api.openai.com", 8443),
        ("bedrock.us-east-1.amazonaws.com", 443),  # control plane, not runtime
        ("x.openai.azure.com.evil.test", 443),
        ("example.com", 443),
    ],
)
def test_by_host_misses(catalog: Catalog, host: str, port: int) -> None:
    assert catalog.by_host(host, port) is None


def test_format_for_path_formats(catalog: Catalog) -> None:
    assert catalog.format_for("ollama", "/api/chat") == "ollama"
    assert catalog.format_for("ollama", "/v1/chat/completions?x=1") == "openai"
    assert catalog.format_for("ollama", "/v1/messages") == "anthropic"
    assert catalog.format_for("cohere", "/v2/chat") == "cohere"
    assert catalog.format_for("cohere", "/compatibility/v1/chat/completions") == "openai"
    gemini = catalog.get("gemini")
    assert gemini is not None
    assert catalog.format_for(gemini, "/v1beta/models/x:generateContent") == "gemini"
    with pytest.raises(KeyError):
        catalog.format_for("nope", "/")


# --- upstream_url ---------------------------------------------------------------------------


def _p(upstream: str) -> Provider:
    return Provider(name="t", prefix="t", upstream=upstream)


@pytest.mark.parametrize(
    ("upstream", "rest", "expected"),
    [
        ("https://api.groq.com", "/openai/v1/chat/completions", "https://api.groq.com/openai/v1/chat/completions"),
        ("https://api.openai.com", "/v1/models?limit=5", "https://api.openai.com/v1/models?limit=5"),
        ("https://api.openai.com", "", "https://api.openai.com/"),
        ("https://api.openai.com", "?a=1", "https://api.openai.com/?a=1"),
        ("https://relay.test/base", "/v1/chat/completions", "https://relay.test/base/v1/chat/completions"),
        ("https://relay.test/base/", "/v1/x?api-version=2024-10-21", "https://relay.test/base/v1/x?api-version=2024-10-21"),
        ("https://relay.test/base", "", "https://relay.test/base"),
        ("http://127.0.0.1:11434", "/api/chat", "http://127.0.0.1:11434/api/chat"),
        ("https://x.test", "v1/a", "https://x.test/v1/a"),
        ("https://x.test", "/a%2Fb?q=%20", "https://x.test/a%2Fb?q=%20"),
    ],
)
def test_upstream_url(upstream: str, rest: str, expected: str) -> None:
    assert _p(upstream).upstream_url(rest) == expected


def test_gemini_example_from_the_readme(catalog: Catalog) -> None:
    gemini = catalog.by_prefix("gemini")
    assert gemini is not None
    assert (
        gemini.upstream_url("/v1beta/models/x:generateContent")
        == "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent"
    )


# --- overrides ------------------------------------------------------------------------------


def test_upstream_override_keeps_other_keys() -> None:
    cat = Catalog.load({"azure": {"upstream": "https://contoso.openai.azure.com"}})
    azure = cat.by_prefix("azure")
    assert azure is not None
    assert azure.upstream == "https://contoso.openai.azure.com"
    assert azure.auth == "api-key" and not azure.upstream_is_placeholder
    assert (
        azure.upstream_url("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21")
        == "https://contoso.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    )


def test_custom_provider_defaults() -> None:
    cat = Catalog.load({"myrelay": {"custom": True, "upstream": "https://relay.corp.test/llm/"}})
    p = cat.by_prefix("myrelay")
    assert p is not None
    assert (p.format, p.prefix, p.hosts, p.reverse, p.auth) == ("openai", "myrelay", (), True, "bearer")
    assert p.upstream_url("/v1/chat/completions") == "https://relay.corp.test/llm/v1/chat/completions"
    assert len(cat) == len(Catalog.load()) + 1


def test_custom_provider_with_hosts_is_intercepted() -> None:
    cat = Catalog.load(
        {"corp": {"custom": True, "upstream": "https://llm.corp.test", "hosts": [r"^llm\.corp\.test:443$"],
                  "prefix": "c"}}
    )
    p = cat.by_host("llm.corp.test", 443)
    assert p is not None and p.name == "corp" and cat.by_prefix("c") is p
    assert r"^llm\.corp\.test:443$" in cat.intercept_regexes()


def test_extra_hosts_append() -> None:
    cat = Catalog.load(extra_hosts={"openai": [r"^openai\.proxy\.test:443$"]})
    p = cat.by_host("openai.proxy.test", 443)
    assert p is not None and p.name == "openai"
    assert cat.by_host("api.openai.com", 443) is p


def test_allow_keys_are_ignored() -> None:
    cat = Catalog.load({"openai": {"api_key_env": "OPENAI_API_KEY"}}, allow_keys={"api_key_env"})
    assert cat.get("openai") is not None


def test_markdown_table_and_rows(catalog: Catalog) -> None:
    table = catalog.markdown_table()
    assert table.count("\n") == len(catalog) + 2
    assert "| openai | `/openai/` | https://api.openai.com |" in table
    rows = catalog.as_rows()
    assert len(rows) == len(catalog)
    assert set(rows[0]) == {"name", "prefix", "upstream", "format", "auth", "hosts"}
    assert isinstance(rows[0]["hosts"], list)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"groq": {"prefix": "openai"}}, "already used"),
        ({"groq": {"hosts": [r"api\.groq\.com:443"]}}, "anchored"),
        ({"groq": {"hosts": [r"^api\.groq\.com:443"]}}, "anchored"),
        ({"groq": {"hosts": [r"^a\.test:443|b\.test:443$"]}}, "top-level"),
        ({"groq": {"hosts": [r"^api\.groq\.com$"]}}, "host:port"),
        ({"groq": {"hosts": [r"^api\.(groq\.com:443$"]}}, "compile"),
        ({"groq": {"hosts": "^api\\.groq\\.com:443$"}}, "list of strings"),
        ({"groq": {"format": "soap"}}, "format"),
        ({"groq": {"auth": "cookie"}}, "auth"),
        ({"groq": {"upstream": "ftp://api.groq.com"}}, "http"),
        ({"groq": {"upstream": "api.groq.com"}}, "http"),
        ({"groq": {"upstream": "https://api.groq.com/?x=1"}}, "query"),
        ({"groq": {"upstream": "https://api.groq.com:99999"}}, "port"),
        ({"groq": {"upsteam": "https://x.test"}}, "unknown key"),
        ({"groq": {"reverse": "no"}}, "reverse"),
        ({"groq": {"prefix": "Has/Slash"}}, "prefix"),
        ({"groq": {"path_formats": {"v1/": "openai"}}}, "path_formats"),
        ({"groq": {"path_formats": {"/v1/": "grpc"}}}, "path_formats"),
        ({"newone": {"custom": True, "format": "openai"}}, "upstream"),
        ({"newone": {"custom": "yes", "upstream": "https://x.test"}}, "custom"),
        ({"groq": "https://x.test"}, "table"),
    ],
)
def test_invalid_overrides_raise(overrides: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as info:
        Catalog.load(overrides)
    assert next(iter(overrides)) in str(info.value)


def test_extra_hosts_unknown_provider() -> None:
    with pytest.raises(CatalogError, match="nope"):
        Catalog.load(extra_hosts={"nope": [r"^a\.test:443$"]})


def test_misspelt_provider_table_is_refused_with_the_nearest_name() -> None:
    with pytest.raises(CatalogError) as info:
        Catalog.load({"openia": {"upstream": "http://127.0.0.1:9001"}})
    assert str(info.value) == (
        "[providers.openia]: unknown provider 'openia' (did you mean 'openai'?); "
        "a provider of your own needs custom = true (and an upstream)"
    )


def test_new_name_without_custom_is_refused_even_when_nothing_is_close() -> None:
    with pytest.raises(CatalogError, match=r"unknown provider 'zzqq'; a provider of your own needs custom = true"):
        Catalog.load({"zzqq": {"upstream": "http://127.0.0.1:9001"}})


def test_extra_hosts_misspelt_provider_suggests() -> None:
    with pytest.raises(CatalogError, match=r"did you mean 'anthropic'\?"):
        Catalog.load(extra_hosts={"antropic": [r"^a\.test:443$"]})


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


@pytest.mark.parametrize("upstream", ["https://api.openai.com", "https://api.openai.com/", "http://127.0.0.1:9100",
                                      "https://host.example:8443/base/v1/", "http://[::1]:8080/x"])
@pytest.mark.parametrize("rest", ["", "/", "/v1/chat/completions", "?key=1", "/v1/models?limit=2", "v1/x"])
def test_upstream_target_is_upstream_url_split(upstream: str, rest: str) -> None:
    """The router's fast path (no URL parse per request) says exactly what upstream_url says."""
    from urllib.parse import urlsplit

    p = Provider(name="x", prefix="x", upstream=upstream, hosts=(), auth="bearer", format="openai")
    scheme, host, port, path, host_header = p.upstream_target(rest)
    url = urlsplit(p.upstream_url(rest))
    assert (scheme, host, port) == (url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80))
    assert path == url.path + (f"?{url.query}" if url.query else "")
    default = 443 if url.scheme == "https" else 80
    assert host_header == (
        url.netloc if url.port not in (None, default) else url.netloc.rsplit(":", 1)[0] if url.port else url.netloc
    )
