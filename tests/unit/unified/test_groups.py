"""Model groups: the [models.<alias>] tables, validated, and the order each strategy tries targets in."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.config import ConfigFile
from addon.services import CatalogService
from addon.unified import members
from addon.unified.groups import Group, GroupBook, GroupError, parse_groups
from providers.catalog import Catalog

CATALOG = Catalog.load()
HAIKU, MINI, GROQ = "anthropic/claude-haiku-4-5", "openai/gpt-4o-mini", "groq/llama-3.1-8b-instant"


class FixedRandom:
    """random.Random's one method the weighted strategy uses, answering from a list."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def book(rng=None) -> GroupBook:
    return GroupBook(CatalogService(), rng)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "message"), [
    ({"targets": ["nosuch/model"]}, "\\[models.g\\]: target 'nosuch/model': .*unknown provider 'nosuch'"),
    ({"targets": [HAIKU], "strategy": "random"}, "strategy 'random' is not one of fallback, round-robin"),
    ({"targets": [HAIKU, MINI], "strategy": "weighted", "weights": [1]}, "one number >= 0 per target \\(2\\)"),
    ({"targets": [HAIKU, MINI], "strategy": "weighted"}, "needs weights"),
    ({"targets": [HAIKU, MINI], "strategy": "weighted", "weights": [0, 0]}, "not all 0"),
    ({"targets": [HAIKU], "weights": [1]}, "weights only apply"),
    ({"targets": []}, "non-empty list"),
    ({"targets": [HAIKU], "fallback": True}, "unknown key\\(s\\) fallback"),
])
def test_bad_tables_are_refused_naming_the_problem(table: dict, message: str) -> None:
    with pytest.raises(GroupError, match=message):
        parse_groups({"g": table}, CATALOG)


def test_an_alias_cannot_look_like_a_provider_model() -> None:
    with pytest.raises(GroupError, match="cannot contain '/'"):
        parse_groups({"openai/x": {"targets": [MINI]}}, CATALOG)


def test_option_errors_are_options_errors() -> None:
    groups = book()
    with taddons.context(groups) as tctx:
        tctx.configure(groups, corral_models=json.dumps({"fast": {"targets": [HAIKU, MINI]}}))
        assert groups.groups["fast"] == Group("fast", (HAIKU, MINI))
        with pytest.raises(exceptions.OptionsError, match=r"\[models.fast\]: strategy 'fastest'"):
            tctx.configure(groups, corral_models=json.dumps({"fast": {"targets": [HAIKU], "strategy": "fastest"}}))
        assert groups.groups["fast"].targets == (HAIKU, MINI)  # the refused value changed nothing


def test_fallback_keeps_the_listed_order() -> None:
    assert book().order(Group("g", (HAIKU, MINI, GROQ))) == [HAIKU, MINI, GROQ]


def test_round_robin_rotates_per_alias() -> None:
    groups, g = book(), Group("g", (HAIKU, MINI, GROQ), "round-robin")
    assert [groups.order(g)[0] for _ in range(4)] == [HAIKU, MINI, GROQ, HAIKU]
    assert groups.order(g) == [MINI, GROQ, HAIKU]  # the rest follow in listed order
    assert groups.order(Group("other", (HAIKU, MINI), "round-robin"))[0] == HAIKU  # its own counter


def test_weighted_draws_by_weight_without_replacement() -> None:
    g = Group("g", (HAIKU, MINI, GROQ), "weighted", (1.0, 3.0, 0.0))
    # 0.2 * 4 = 0.8 < 1 -> HAIKU; then MINI is the only positive weight left; GROQ (0) last.
    assert book(FixedRandom(0.2, 0.9)).order(g) == [HAIKU, MINI, GROQ]
    # 0.5 * 4 = 2 -> past HAIKU's 1, inside MINI's 3.
    assert book(FixedRandom(0.5, 0.0)).order(g) == [MINI, HAIKU, GROQ]


def test_lowest_latency_tries_unmeasured_targets_first_then_the_fastest() -> None:
    groups, g = book(), Group("g", (HAIKU, MINI, GROQ), "lowest-latency")
    groups.observe_latency(HAIKU, 0.9)
    assert groups.order(g) == [MINI, GROQ, HAIKU]
    groups.observe_latency(MINI, 0.5)
    groups.observe_latency(GROQ, 0.2)
    assert groups.order(g) == [GROQ, MINI, HAIKU]
    for _ in range(5):
        groups.observe_latency(GROQ, 2.0)  # a moving average: one slow answer does not flip the order
    assert groups.order(g)[0] == MINI


def test_members_get_their_own_native_request_and_key_style() -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    client = http.Headers(authorization="Bearer sk-client", **{"x-corral-tenant": "t", "content-length": "99"})
    made, notes = members.prepare(CATALOG, [HAIKU, MINI], body, client, {}, True)
    assert notes == []
    to_anthropic, to_openai = made
    assert (to_anthropic.url, to_openai.url) == ("https://api.anthropic.com/v1/messages",
                                                 "https://api.openai.com/v1/chat/completions")
    assert json.loads(to_anthropic.body)["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert json.loads(to_openai.body) == {**body, "model": "gpt-4o-mini"}
    anthropic_headers = dict((k.decode(), v.decode()) for k, v in to_anthropic.headers)
    assert anthropic_headers["x-api-key"] == "sk-client" and "authorization" not in anthropic_headers
    assert anthropic_headers["host"] == "api.anthropic.com"
    assert "x-corral-tenant" not in anthropic_headers and "content-length" not in anthropic_headers
    assert "sk-client" not in repr(to_anthropic)  # keys never in a repr (logs)
    assert body["model"] == "fast"  # the client's request is left as it was


def test_a_member_the_request_cannot_be_translated_for_is_left_out_with_a_note() -> None:
    body = {"model": "fast", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    made, notes = members.prepare(CATALOG, [HAIKU, MINI], body, http.Headers(), {}, True)
    assert [m.requested for m in made] == [MINI]
    assert "anthropic/claude-haiku-4-5 left out" in notes[0]


def test_switch_makes_the_flow_the_answering_members_exchange() -> None:
    (member,), _notes = members.prepare(CATALOG, [MINI], {"model": "fast", "messages": []}, http.Headers(), {}, True)
    flow = tflow.tflow()
    flow.metadata.update({md.PROVIDER: "anthropic", md.FORMAT: "anthropic", md.CACHE: "miss",
                          md.UNIFIED: {"alias": "fast", "targets": [HAIKU, MINI], "answered_by": HAIKU,
                                       "translate": "anthropic"}})
    members.switch(flow, member, CATALOG)
    meta = flow.metadata
    assert (meta[md.PROVIDER], meta[md.FORMAT], meta[md.MODEL]) == ("openai", "openai", "gpt-4o-mini")
    assert meta[md.UNIFIED]["translate"] is None and meta[md.UNIFIED]["answered_by"] == MINI
    assert meta[md.CACHE] == "skip"  # never stored under the first target's key
    assert flow.request.url == "https://api.openai.com/v1/chat/completions"
    assert json.loads(flow.request.content or b"")["model"] == "gpt-4o-mini"
    assert f"answered by {MINI} after {HAIKU}" in meta[md.CHANGES][-1]


def test_corral_toml_models_tables_reach_the_option(tmp_path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text('[models.fast]\ntargets = ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]\n'
                    'strategy = "weighted"\nweights = [3, 1]\n')
    groups = book()
    with taddons.context(ConfigFile(), groups) as tctx:
        tctx.options.corral_config = str(path)
        assert groups.groups["fast"] == Group("fast", (HAIKU, MINI), "weighted", (3.0, 1.0))
    bad = tmp_path / "bad.toml"  # a fresh gateway: options already set win over a file read later
    with taddons.context(ConfigFile(), book()) as tctx:
        bad.write_text('[models.fast]\ntargets = ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]\n'
                       'strategy = "weighted"\nweights = [3]\n')
        with pytest.raises(exceptions.OptionsError, match=r"\[models.fast\]: strategy \"weighted\" needs weights"):
            tctx.options.corral_config = str(bad)


def test_a_member_with_a_gateway_key_awaits_the_key_check() -> None:
    # KeyCheck swaps in the provider credential and clears the flag; the Retrier never sends a flagged one.
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    made, notes = members.prepare(CATALOG, [MINI], body, http.Headers(authorization="Bearer ck-abc123"), {}, True)
    assert [m.awaits_key_check for m in made] == [True] and notes == []
    plain, _ = members.prepare(CATALOG, [MINI], body, http.Headers(authorization="Bearer sk-abc123"), {}, True)
    assert [m.awaits_key_check for m in plain] == [False]
