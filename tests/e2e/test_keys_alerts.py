"""Budget alerts with the real openai SDK through the gateway: exactly one webhook event per threshold and
period (also across a restart), the log, /metrics and the viewer's budgets; and a webhook that hangs
delays no request.

Each gpt-4o-mini chat of the corpus costs $0.000024. The period boundary is tested in process on a
fake clock (tests/unit/keys/test_alerts.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.cli import corral
from tests.support.gateway import Gateway, free_port, wait_listening
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability
from tests.support.waiting import until
from tests.support.webhook import WebhookReceiver

OPENAI_KEY = "sk-provider-openai-alerts-0123"
CHAT_USD = 0.000024  # a gpt-4o-mini chat of the corpus
ENV = {**os.environ, "CORRAL_TEST_OPENAI_KEY": OPENAI_KEY}


def config(hook: str, viewer_port: int, **alerts: object) -> dict:
    return {"keys": {"spend_ttl": "0"}, "providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
            "alerts": {"thresholds": [0.5, 0.8, 1.0], "webhook": hook, **alerts},
            "viewer": {"listen": f"127.0.0.1:{viewer_port}"}}


def create_key(gw: Gateway, *args: str) -> str:
    result = corral("keys", "create", "--db", gw.db, "--config", "-", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["key"]


def chat(gw: Gateway, key: str, tag: str, model: str = "gpt-4o-mini"):
    return openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=key, max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag})


def metric(viewer_port: int, name: str, **labels: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{viewer_port}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


def metric_values(viewer_port: int, name: str) -> list[float]:
    text = httpx.get(f"http://127.0.0.1:{viewer_port}/metrics").text
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@reliability("isolation", "budget alert thresholds (log, /metrics, webhook)", "nothing: sent off the request path",
             "budget_alerts row per budget, threshold and period: one event each, also after a restart")
def test_one_event_per_threshold_also_across_a_restart(mock: MockUpstream, hook: WebhookReceiver, tag: str,
                                                       tmp_path) -> None:
    viewer_port = free_port()
    gw = Gateway(mock.url, config=config(hook.url, viewer_port), workdir=tmp_path).start(env=ENV)
    wait_listening(viewer_port)
    try:
        key = create_key(gw, "--name", "alerted", "--budget-usd", "0.0001", "--period", "day", "--models", "gpt-4o*")
        prefix = key[:11]
        answered = 0
        while answered < 10:  # 24 % each, until refused
            try:
                assert chat(gw, key, tag).choices
            except openai.RateLimitError:
                break
            answered += 1
        # Spend stops at 96 % (the request that would cross the budget is refused): that refusal counts as
        # the budget used up, so the 100 % alert fires too, marked used_up.
        assert answered == 4
        reached = [0.5, 0.8, 1.0]
        events = hook.wait_events(3)
        assert [e["threshold"] for e in events] == reached
        assert [e["used_up"] for e in events] == [False, False, True]
        assert {e["budget"] for e in events} == {f"key:{prefix[3:]}"}
        assert all(e["key_prefix"] == prefix and e["key_name"] == "alerted" and e["limit_usd"] == 0.0001
                   and e["period"] == "day" and e["reset"].endswith("T00:00:00Z") for e in events)
        assert events[-1]["spent_usd"] == pytest.approx(answered * CHAT_USD, abs=1e-9)
        assert f"budget alert: gateway key {prefix} (alerted) reached 80% of its $0.00010 daily budget" in gw.log()
        assert metric(viewer_port, "corral_budget_alerts_total", budget=f"key:{prefix[3:]}", threshold="0.8") == 1
        budgets = httpx.get(f"http://127.0.0.1:{viewer_port}/api/budgets").json()
        mine = [b for b in budgets["budgets"] if b["prefix"] == prefix]
        assert mine and mine[0]["state"] == "over" and mine[0]["ratio"] == pytest.approx(0.96)
        assert {a["threshold"] for a in budgets["alerts"] if a["key_prefix"] == prefix} == set(reached)
        assert key not in json.dumps(events) and key.split("_", 1)[1] not in json.dumps(budgets)
    finally:
        gw.stop()
    # A restart: the spend is still past those thresholds, yet nothing is sent again.
    gw = Gateway(mock.url, db=gw.db, config=config(hook.url, viewer_port), workdir=tmp_path).start(env=ENV)
    wait_listening(viewer_port)
    try:
        with pytest.raises(openai.PermissionDeniedError):  # a refusal that costs nothing, recorded with the key:
            chat(gw, key, tag, model="o3-mini")  # its alerts are checked again, its spend is unchanged
        until(lambda: metric(viewer_port, "corral_budget_used_ratio", budget=f"key:{prefix[3:]}") is not None)
        assert metric(viewer_port, "corral_budget_alerts_total", budget=f"key:{prefix[3:]}", threshold="0.5") is None
        # A sentinel: events leave in order, so a resent one would arrive before the new key's.
        other = create_key(gw, "--name", "sentinel", "--budget-usd", "0.00003", "--period", "day")
        assert chat(gw, other, tag).choices  # 80 %
        events = hook.wait_events(len(reached) + 2)
        assert [e["key_name"] for e in events] == ["alerted"] * len(reached) + ["sentinel"] * 2
    finally:
        gw.stop()


@reliability("upstream faults", "alert webhook down or hanging", "nothing: requests are answered as usual",
             "the events dropped once its queue is full (corral_budget_alert_webhook_events_total)")
def test_a_hanging_webhook_delays_no_request(mock: MockUpstream, tag: str, tmp_path) -> None:
    viewer_port = free_port()
    with WebhookReceiver("hang") as hook:
        gw = Gateway(mock.url, config=config(hook.url, viewer_port, webhook_timeout="600", queue=1),
                     workdir=tmp_path).start(env=ENV)
        wait_listening(viewer_port)
        try:
            first = create_key(gw, "--name", "tiny-1", "--budget-usd", "0.00002", "--period", "day")
            assert chat(gw, first, tag).choices  # 120 %: three events; the webhook takes the first and hangs
            hook.wait_hung(1)
            until(lambda: (metric(viewer_port, "corral_budget_alert_webhook_events_total", outcome="dropped")
                           or 0) >= 1)
            # While the webhook holds its request, more alerts fire and every request is answered.
            for n in range(3):
                other = create_key(gw, "--name", f"tiny-{n + 2}", "--budget-usd", "0.00003", "--period", "day")
                for _ in range(5):  # 80 %, then over: answered until refused with 429
                    try:
                        assert chat(gw, other, tag).choices
                    except openai.RateLimitError:
                        break
                else:
                    raise AssertionError("never refused")
            plain = create_key(gw, "--name", "no-budget")
            for _ in range(5):
                assert chat(gw, plain, tag).choices
            assert hook.hung == 1 and hook.events == []  # still held: nothing above waited for it
            # Every event but the one held and the one queued is dropped (once the checks are done).
            fired = lambda: sum(metric_values(viewer_port, "corral_budget_alerts_total"))  # noqa: E731
            until(lambda: fired() >= 3 + 3 * 2 and (metric(
                viewer_port, "corral_budget_alert_webhook_events_total", outcome="dropped") or 0) == fired() - 2)
            assert metric(viewer_port, "corral_budget_alerts_total", budget=f"key:{first[3:11]}", threshold="1") == 1
        finally:
            gw.stop()


def test_a_team_budget_alerts_through_the_same_path(mock: MockUpstream, hook: WebhookReceiver, tag: str,
                                                     tmp_path) -> None:
    viewer_port = free_port()
    cfg = {**config(hook.url, viewer_port), "budgets.team.ml": {"usd": 0.0001, "period": "day"}}
    gw = Gateway(mock.url, config=cfg, workdir=tmp_path).start(env=ENV)
    try:
        keys = [create_key(gw, "--name", f"ml-{n}", "--team", "ml") for n in "ab"]  # no budget of their own
        answered = 0
        while answered < 10:
            try:
                assert chat(gw, keys[answered % 2], tag).choices
            except openai.RateLimitError as e:
                assert e.response.headers["x-corral-budget"] == "team:ml"
                break
            answered += 1
        assert answered == 4
        events = hook.wait_events(3)
        assert [(e["budget"], e["team"], e["threshold"], e["used_up"]) for e in events] == [
            ("team:ml", "ml", 0.5, False), ("team:ml", "ml", 0.8, False), ("team:ml", "ml", 1.0, True)]
        assert all("key_prefix" not in e for e in events)
        assert "budget alert: team:ml reached 100% of its $0.00010 daily budget" in gw.log()
    finally:
        gw.stop()
