"""The bench's bookkeeping (bench/): how figures are pooled over rounds, how the connection-cost
client charges each request, how budget rows read, and what the peer systems are started with.
No timing assertions: speed lives in bench/ itself."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import client  # bench/client.py
import in_process  # bench/in_process.py
import report  # bench/report.py
import scenarios  # bench/scenarios.py
import systems  # bench/systems.py

from tests.unit.test_bench_mock import bench_mock  # noqa: F401 - the mock upstream fixture


def test_cpu_per_request_is_pooled_over_rounds_with_the_spread_beside_it() -> None:
    rounds = [
        {"cpu_s": 1.0, "completed": 100, "cpu_ms_per_req": 10.0, "rps": 100.0},
        {"cpu_s": 3.0, "completed": 300, "cpu_ms_per_req": 10.0, "rps": 300.0},
        {"cpu_s": 4.0, "completed": 100, "cpu_ms_per_req": 40.0, "rps": 50.0},
    ]
    fig = scenarios.median_figures(rounds)
    assert fig["cpu_ms_per_req"] == 16.0  # 8 s of CPU over 500 requests, not the median of 10, 10, 40
    assert (fig["cpu_ms_per_req_min"], fig["cpu_ms_per_req_max"]) == (10.0, 40.0)
    assert fig["rps"] == 100.0 and (fig["rps_min"], fig["rps_max"]) == (50.0, 300.0)
    assert report.spread(fig, "rps") == "100 [50.00-300]"


def test_steady_state_windows_pool_their_own_request_counts() -> None:
    """A round measured in a window (cpu_n requests seen upstream) is pooled by those, not by wrk's total."""
    rounds = [{"cpu_s": 0.2, "cpu_n": 100, "completed": 300, "cpu_ms_per_req": 2.0},
              {"cpu_s": 0.6, "cpu_n": 200, "completed": 400, "cpu_ms_per_req": 3.0}]
    fig = scenarios.median_figures(rounds)
    assert fig["cpu_ms_per_req"] == round(800 / 300, 3) and fig["cpu_n"] == 300 and fig["completed"] == 700
    starved = {"cpu_s": 0.2, "cpu_n": 8, "completed": 8, "cpu_ms_per_req": 25.0}  # one wave of new connections
    assert scenarios.median_figures([*rounds, starved])["cpu_ms_per_req"] == round(800 / 300, 3)
    assert scenarios.median_figures([starved])["cpu_ms_per_req"] == 25.0  # nothing better to pool


def _system(name: str, status: str = "ok", note: str = "") -> systems.System:
    s = systems.System(name, name, "/")
    s.status, s.note = status, note
    return s


def test_budget_rows_say_not_built_until_the_feature_exists() -> None:
    built = [_system("corral"), _system("corral-otel"), _system("corral-keys"),
             _system("corral-unified", "skipped", f"{systems.NOT_BUILT}: no bench/configs/unified.toml"),
             _system("corral-hardening", "skipped", f"{systems.NOT_BUILT}: exited with 2 at start: unknown setting")]
    summary = {"budget_json": {"corral": {"cpu_ms_per_req": 2.0}, "corral-otel": {"cpu_ms_per_req": 2.1},
                               "corral-keys": {"cpu_ms_per_req": 2.5}}}
    rows = {b["system"]: b for b in report.budgets(summary, built)}
    assert rows["corral-unified"]["status"] == "n/a" and rows["corral-unified"]["detail"] == systems.NOT_BUILT
    assert rows["corral-hardening"]["status"] == "n/a"
    assert rows["corral-otel"]["status"] == "PASS" and rows["corral-otel"]["delta_ms"] == 0.1
    assert rows["corral-keys"]["status"] == "MISS" and rows["corral-keys"]["delta_ms"] == 0.5
    assert "n/a (feature not built)" in "\n".join(report.budget_lines(rows.values()))


def test_the_unified_budget_is_read_from_streams_against_the_native_stream() -> None:
    built = [_system("corral"), _system("corral-unified")]
    summary = {"json_c64": {"corral": {"cpu_ms_per_req": 2.0}, "corral-unified": {"cpu_ms_per_req": 9.0}},
               "budget_stream": {"corral": {"cpu_ms_per_req": 4.0}, "corral-unified": {"cpu_ms_per_req": 4.25}}}
    rows = {b["system"]: b for b in report.budgets(summary, built)}
    assert rows["corral-unified"]["status"] == "PASS" and rows["corral-unified"]["delta_ms"] == 0.25


def test_in_process_figures_are_judged_beside_the_pair(monkeypatch) -> None:
    # The scripts themselves, with few iterations: their last lines must still carry the figure.
    monkeypatch.setattr(in_process, "SCRIPTS", {name: (module, pattern, 200)
                                                 for name, (module, pattern, _) in in_process.SCRIPTS.items()})
    own = in_process.measure(sys.executable, quick=True)
    assert set(own) == {"corral-keys", "corral-unified"}
    for name, got in own.items():
        assert got["ms"] is not None and got["ms"] > 0, (name, got["output"])
        assert got["command"].endswith("-n 200")
    built = [_system("corral"), _system("corral-keys"), _system("corral-unified")]
    summary = {"budget_json": {"corral": {"cpu_ms_per_req": 2.0}, "corral-keys": {"cpu_ms_per_req": 2.6}},
               "budget_stream": {"corral": {"cpu_ms_per_req": 4.0}, "corral-unified": {"cpu_ms_per_req": 4.1}}}
    rows = {b["system"]: b for b in report.budgets(summary, built, {"corral-keys": {"ms": 0.09, "command": "k"},
                                                                     "corral-unified": {"ms": 0.4, "command": "u"}})}
    assert rows["corral-keys"]["status"] == "MISS" and rows["corral-keys"]["in_process_status"] == "PASS"
    assert rows["corral-unified"]["status"] == "PASS" and rows["corral-unified"]["in_process_status"] == "MISS"
    lines = "\n".join(report.budget_lines(rows.values()))
    assert "in process (k): PASS 90.0 µs" in lines and "in process (u): MISS 400.0 µs" in lines


def test_connection_setup_targets_cover_json_and_streams() -> None:
    conn = {"direct": {"setup_ms": 0.4, "stream_setup_ms": 0.5},
            "corral": {"setup_ms": 1.5, "stream_setup_ms": 2.5, "ttfb_keep_p50_ms": 1.2},
            "mitm": {"setup_ms": 1.0}}
    got = {t["target"]: t["status"] for t in report.targets({"conn": conn}, [_system("corral"), _system("mitm")])}
    assert got["connection setup cost (JSON) <= direct + 1.5 ms"] == "PASS"
    assert got["connection setup cost (stream) <= direct + 1.5 ms"] == "MISS"


def test_connection_cost_times_and_charges_new_and_kept_alive_requests(bench_mock) -> None:  # noqa: F811
    url, settings = bench_mock
    port = int(url.rsplit(":", 1)[1])
    before = settings.requests
    charged = iter(range(0, 10**9, 1000))  # a fake CPU clock that advances on every read
    stats = asyncio.run(client.connection_cost(
        "127.0.0.1", port, "/v1/chat/completions", client.chat_body("bench", False),
        client.chat_body("bench-d0-n3", True), duration=0.0, min_pairs=5, cpu=lambda: next(charged)))
    assert stats.errors == []
    assert sorted(stats.samples) == ["json_keep", "json_new", "ttfb_keep", "ttfb_new"]
    assert all(len(v) == 5 for v in stats.samples.values())
    assert all(v == [1000] * 5 for v in stats.cpu.values())  # one read before, one after each request
    assert stats.sent == stats.completed == 20 == settings.requests - before


def test_a_paced_run_sends_each_request_of_the_rate_once(bench_mock) -> None:  # noqa: F811
    url, settings = bench_mock
    port = int(url.rsplit(":", 1)[1])
    before = settings.requests
    stats = asyncio.run(client.paced_run("127.0.0.1", port, "/v1/chat/completions", client.chat_body("bench", False),
                                         rate=200, duration=0.1, connections=3))
    assert stats.sent == 20 == len(stats.results) == settings.requests - before
    assert all(r.error is None and r.complete for r in stats.results)


def test_peers_are_started_as_issue_23_asks(tmp_path) -> None:
    built = {s.name: s for s in systems.build(9999, tmp_path)}
    mitm, lazy = built["mitm"].cmd or [], built["mitm-lazy"].cmd or []
    assert not any("connection_strategy" in arg for arg in mitm)  # the baseline: mitmdump's defaults
    assert "connection_strategy=lazy" in lazy
    portkey = built["portkey"]
    assert portkey.headers == {"x-portkey-provider": "openai",
                               "x-portkey-custom-host": "http://127.0.0.1:9999/v1"}
    if portkey.cmd is not None:  # installed: bound to loopback by the preload
        assert any(arg.endswith("loopback.mjs") for arg in portkey.cmd)
    assert built["corral-w2"].cmd is not None and built["corral-w2"].cmd[-2:] == ["--workers", "2"]
    for name in systems.BUDGET_SYSTEMS:
        assert built[name].status == "skipped" or built[name].cmd is not None
    unified = built["corral-unified"]
    assert (unified.path, unified.model("bench")) == ("/v1/chat/completions", "anthropic/bench")
    conf = (tmp_path / "corral-unified.toml").read_text()
    assert '[providers.anthropic]\nupstream = "http://127.0.0.1:9999"' in conf and "{MOCK}" not in conf
    keys = (tmp_path / "corral-keys.toml").read_text()
    assert keys.count("[providers.openai]") == 1 and "required = true" in keys  # the file's table replaces ours
    assert built["corral-keys"].prepare is systems.create_gateway_key


def test_a_system_key_replaces_the_placeholder_bearer_token() -> None:
    plain = client.request_bytes("h", 1, "/p", b"{}")
    assert plain.count(b"authorization:") == 1 and b"sk-bench-not-a-real-key" in plain
    keyed = client.request_bytes("h", 1, "/p", b"{}", {"Authorization": "Bearer ck-x"})
    assert b"sk-bench-not-a-real-key" not in keyed and b"Authorization: Bearer ck-x" in keyed
