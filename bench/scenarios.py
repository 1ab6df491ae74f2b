"""Scenarios: what one measured run does against one system, and the figures it returns.

JSON throughput/latency runs use wrk (bench/post.lua); stream TTFB, open streams and exact-count
runs use the asyncio client (bench/client.py). Every run returns a flat dict of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from client import chat_body, connection_cost, counted_run, open_streams, paced_run, timed_run
from systems import BENCH, BUDGET_SYSTEMS, System, cpu_ns, cpu_seconds, rss_mb


@dataclass
class Scenario:
    name: str
    title: str
    kind: str  # wrk | stream | open | count | conn | paired
    systems: tuple[str, ...]
    model: str = "bench"
    concurrency: int = 1
    threads: int = 1
    stream: bool = False
    primary: str = "rps"  # figure the ratios are printed for
    higher_is_better: bool = True
    once: bool = False  # exact counts and peaks: run in the first round only
    rate: float = 0.0  # paired: requests per second sent to each system (0: closed loop, `concurrency` clients)


def scenarios(quick: bool) -> list[Scenario]:
    """Quick mode keeps the scenarios and systems issue 23's targets and budgets need, with short rounds:
    mitm-lazy (the old baseline), LiteLLM, cache hits, c=8, streams at c=1 and c=32, 256 slow requests,
    open streams and exact counts are in the default run only."""
    main = ("direct", "mitm") + (() if quick else ("mitm-lazy",)) + ("portkey", "corral", "corral-w2") \
        + (() if quick else ("litellm",))
    streams = ("direct", "mitm", "mitm-tee", "portkey", "corral") + (() if quick else ("litellm",))
    budgets = tuple(BUDGET_SYSTEMS)
    # The unified endpoint's budget is for streams (budget_stream); the others' for JSON (budget_json).
    json_budgets = tuple(n for n in budgets if n != "corral-unified")
    every = (*main, "mitm-tee") + (() if quick else (*json_budgets, "corral-limits"))
    out = [
        Scenario("json_c1", "JSON POST, concurrency 1", "wrk",
                 main if quick else (*main, "corral-limits"), concurrency=1),
        Scenario("json_c8", "JSON POST, concurrency 8", "wrk", main, concurrency=8),
        Scenario("json_c64", "JSON POST, concurrency 64", "wrk",
                 main + (() if quick else (*json_budgets, "corral-limits")), concurrency=64),
        Scenario("conn", "One request at a time: a new connection each vs one kept-alive connection", "conn",
                 every, model="bench-d0-n4", primary="setup_ms", higher_is_better=False),
        # Budgets: the feature's system and the default chain loaded at the same time, so a busy moment
        # of the shared box costs both alike; each one's CPU over its own requests.
        # Each at the same request rate, so periodic work is spread over as many requests in every system.
        Scenario("budget_json", "Budgets, JSON: the default chain and each feature side by side, 40 req/s each",
                 "paired", ("corral", *json_budgets), concurrency=4, rate=40, primary="cpu_ms_per_req",
                 higher_is_better=False),
        Scenario("budget_stream", "Budget, streams (8 chunks, no delay): native and the unified endpoint side by "
                 "side, 40 streams/s each", "paired", ("corral", "corral-unified"), model="bench-d0-n8",
                 concurrency=4, rate=40, stream=True, primary="cpu_ms_per_req", higher_is_better=False),
        Scenario("cache_hit", "JSON POST c=1, identical requests (cache hits)", "wrk", ("corral-cache",),
                 concurrency=1, primary="p50_ms", higher_is_better=False),
        Scenario("stream_c1", "SSE stream (10 chunks, 5 ms apart), concurrency 1", "stream", streams,
                 model="bench-d5-n10", concurrency=1, stream=True, primary="ttfb_p50_ms", higher_is_better=False),
        Scenario("stream_c32", "SSE stream (10 chunks, 5 ms apart), concurrency 32", "stream", streams,
                 model="bench-d5-n10", concurrency=32, stream=True, primary="ttfb_p50_ms", higher_is_better=False),
        Scenario("slow_c256", "256 concurrent, upstream latency 300 ms", "wrk", main,
                 model="bench-l300", concurrency=256, threads=2),
        Scenario("open_streams", "1000 concurrent open streams (3 s each)", "open", streams,
                 model="bench-d100-n30", concurrency=1000, stream=True, primary="errors", higher_is_better=False,
                 once=True),
        Scenario("records", "2000 requests (1 in 4 streamed), c=16: rows recorded",
                 "count", ("corral",), model="bench-d0-n4", concurrency=16, primary="rows_lost",
                 higher_is_better=False, once=True),
    ]
    if quick:
        out = [s for s in out if s.name not in ("json_c8", "slow_c256", "stream_c32", "stream_c1", "cache_hit",
                                                "open_streams", "records")]
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


MOCK_PORT = 0  # set by bench.py: the mock's request counter delimits steady-state windows


def mock_requests() -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{MOCK_PORT}/__stats", timeout=2) as r:
            return int(json.loads(r.read())["requests"])
    except (OSError, ValueError, KeyError):
        return None


class Window(threading.Thread):
    """Gateway CPU (schedstat, ns) and upstream requests (the mock's counter) between ``lead`` s after
    the load starts and ``lead + length`` s: CPU per request in the steady state, without the load's
    first connections (64 of them at c=64, each a ~1 ms connection setup) or its ramp-down."""

    def __init__(self, pid: int | None, lead: float, length: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.lead, self.length = pid, lead, length
        self.cpu_ms_per_req: float | None = None
        self.requests = 0

    def run(self) -> None:
        time.sleep(self.lead)
        c0, n0 = cpu_ns(self.pid), mock_requests()
        time.sleep(self.length)
        c1, n1 = cpu_ns(self.pid), mock_requests()
        if None not in (c0, c1, n0, n1) and n1 > n0:  # type: ignore[operator]
            self.requests = n1 - n0  # type: ignore[operator]
            self.cpu_ms_per_req = (c1 - c0) / 1e6 / self.requests  # type: ignore[operator]


def run(sc: Scenario, system: System, duration: float, quick: bool) -> dict:
    rows_before = system.rows()
    hits_before = system.cache_hits() if system.name == "corral-cache" else None
    cpu_before = cpu_seconds(system.pid)
    window = None
    if sc.kind in ("wrk", "stream") and system.pid is not None and MOCK_PORT:
        length = (max(1, round(duration)) if sc.kind == "wrk" else duration) * 0.7
        window = Window(system.pid, length * 0.3 / 0.7 - 0.05, length)
        window.start()
    if sc.kind == "wrk":
        out = run_wrk(sc, system, duration)
    elif sc.kind == "stream":
        out = run_stream(sc, system, duration)
    elif sc.kind == "open":
        out = run_open(sc, system)
    elif sc.kind == "conn":
        out = run_conn(sc, system, duration / 2 if quick else duration, 8 if quick else 20)
    else:
        out = run_count(sc, system, 2000)
    if system.db is not None and rows_before is not None:
        # Every request Corral saw must be a row: completed ones at least, at most every one sent.
        rows = system.wait_rows(rows_before + out["completed"])
        out["rows"] = None if rows is None else rows - rows_before
        out["rows_ok"] = out["rows"] is not None and out["completed"] <= out["rows"] <= out["sent"]
        if sc.kind in ("open", "count"):  # exact counts: rows must equal requests sent
            out["rows_lost"] = out["sent"] - (out["rows"] or 0)
            out["rows_ok"] = out["rows_lost"] == 0
        if hits_before is not None:
            out["cache_hits"] = (system.cache_hits() or 0) - hits_before
    # Read once the run's rows are written, so the writer thread's work is charged to this run, not
    # to whatever runs next on this system.
    cpu_after = cpu_seconds(system.pid)
    if cpu_before is not None and cpu_after is not None and out.get("completed"):
        # CPU the gateway spent per answered request: robust against a busy shared machine.
        out["cpu_ms_per_req"] = round((cpu_after - cpu_before) * 1000 / out["completed"], 3)
        out["cpu_s"] = round(cpu_after - cpu_before, 3)
        out["cpu_n"] = out["completed"]
    if window is not None:
        window.join()
        if window.cpu_ms_per_req is not None:  # the steady-state figure replaces the whole run's
            out["run_cpu_ms_per_req"] = out.get("cpu_ms_per_req")
            out["cpu_ms_per_req"] = round(window.cpu_ms_per_req, 3)
            out["cpu_s"] = round(window.cpu_ms_per_req * window.requests / 1000, 4)
            out["cpu_n"] = window.requests
    return out


def run_paired(sc: Scenario, systems: list[System], duration: float) -> dict[str, dict]:
    """Every system at once, ``sc.concurrency`` keep-alive clients each, for ``duration`` seconds; each
    system's process-tree CPU (schedstat) from before the load to after its rows are written, over the
    requests it answered."""
    before = {s.name: (cpu_ns(s.pid), s.rows()) for s in systems}

    async def one(s: System):
        body = chat_body(s.model(sc.model), sc.stream)
        if sc.rate:
            return await paced_run("127.0.0.1", s.port, s.path, body, sc.rate, duration, sc.concurrency, s.headers)
        return await timed_run("127.0.0.1", s.port, s.path, body, sc.concurrency, duration, s.headers)

    async def all_at_once() -> list:
        return await asyncio.gather(*(one(s) for s in systems))

    stats = asyncio.run(all_at_once())
    out: dict[str, dict] = {}
    for s, st in zip(systems, stats, strict=True):
        fig = summarize(st.results, st.elapsed)
        fig["sent"] = st.sent
        c0, rows0 = before[s.name]
        if rows0 is not None:
            rows = s.wait_rows(rows0 + fig["completed"])
            fig["rows"] = None if rows is None else rows - rows0
            fig["rows_ok"] = fig["rows"] is not None and fig["completed"] <= fig["rows"] <= fig["sent"]
        c1 = cpu_ns(s.pid)
        if c0 is not None and c1 is not None and fig["completed"]:
            fig["cpu_s"] = round((c1 - c0) / 1e9, 4)
            fig["cpu_n"] = fig["completed"]
            fig["cpu_ms_per_req"] = round((c1 - c0) / 1e6 / fig["completed"], 3)
        out[s.name] = fig
    return out


def warm_up(system: System, seconds: float = 1.0) -> None:
    """JSON at c=8 and a few streams, unmeasured: imports done lazily on a first request, caches,
    connection pools and the first database writes are not charged to the first measured run."""
    run_wrk(Scenario("warm", "", "wrk", (), concurrency=8), system, seconds)
    asyncio.run(timed_run("127.0.0.1", system.port, system.path, chat_body(system.model("bench-d0-n4"), True),
                          4, seconds / 2, system.headers))
    if system.db is not None:  # its rows written, so none is counted by the first measured run
        system.wait_rows(0)


def run_wrk(sc: Scenario, system: System, duration: float) -> dict:
    env = {**os.environ, "BENCH_BODY": chat_body(system.model(sc.model), False).decode(), "BENCH_PATH": system.path,
           "BENCH_HEADERS": "".join(f"{k}: {v}\n" for k, v in system.headers.items())}
    cmd = ["wrk", f"-t{sc.threads}", f"-c{sc.concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
           "-s", str(BENCH / "post.lua"), f"http://127.0.0.1:{system.port}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        return {"error": f"wrk failed: {proc.stdout[-300:]} {proc.stderr[-300:]}", "completed": 0, "sent": 0}
    w = json.loads(line[len("BENCHJSON "):])
    errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
    secs = w["duration_us"] / 1e6
    return {
        "rps": round(w["requests"] / secs, 1), "p50_ms": w["p50"] / 1000, "p90_ms": w["p90"] / 1000,
        "p99_ms": w["p99"] / 1000, "max_ms": w["max"] / 1000, "errors": errors,
        "completed": w["requests"], "sent": w["sent"], "non2xx": w["err_status"],
        "unanswered": max(0, w["sent"] - w["requests"] - errors),  # still in flight when wrk stopped
    }


def summarize(results, elapsed: float) -> dict:
    ok = [r for r in results if r.error is None]
    ttfb = [r.ttfb for r in ok if r.ttfb is not None]
    total = [r.total for r in ok if r.total is not None]
    errors = [r.error for r in results if r.error is not None]
    return {
        "rps": round(len(ok) / elapsed, 1) if elapsed else None,
        "ttfb_p50_ms": ms(pct(ttfb, 50)), "ttfb_p90_ms": ms(pct(ttfb, 90)), "ttfb_p99_ms": ms(pct(ttfb, 99)),
        "total_p50_ms": ms(pct(total, 50)), "total_p99_ms": ms(pct(total, 99)),
        "errors": len(errors), "error_kinds": sorted(set(e.split(":")[0] for e in errors))[:5],
        "completed": len(ok),
    }


def run_stream(sc: Scenario, system: System, duration: float) -> dict:
    stats = asyncio.run(timed_run("127.0.0.1", system.port, system.path, chat_body(system.model(sc.model), True),
                                  sc.concurrency, duration, system.headers))
    out = summarize(stats.results, stats.elapsed)
    # Streams that were cut at the end of the duration were never started here (workers stop first).
    out["sent"] = stats.sent
    return out


def run_open(sc: Scenario, system: System) -> dict:
    pid = system.pid
    peak = {"rss": rss_mb(pid) if pid else None}
    before = peak["rss"]

    def sample() -> None:
        if pid:
            now = rss_mb(pid)
            if now is not None and (peak["rss"] is None or now > peak["rss"]):
                peak["rss"] = now

    stats = asyncio.run(open_streams("127.0.0.1", system.port, system.path, chat_body(system.model(sc.model), True),
                                     sc.concurrency, ramp=1.0, sample=sample, stream_timeout=15.0,
                                     extra=system.headers))
    out = summarize(stats.results, stats.elapsed)
    out.update({"sent": stats.sent, "peak_open": stats.peak_open, "rss_mb": peak["rss"], "rss_before_mb": before,
                "duration_s": round(stats.elapsed, 2)})
    return out


def run_count(sc: Scenario, system: System, n: int) -> dict:
    bodies = [chat_body(system.model(sc.model if i % 4 == 3 else "bench"), i % 4 == 3) for i in range(n)]
    stats = asyncio.run(counted_run("127.0.0.1", system.port, system.path, bodies, sc.concurrency, system.headers))
    out = summarize(stats.results, stats.elapsed)
    out["sent"] = stats.sent
    return out


def run_conn(sc: Scenario, system: System, duration: float, min_pairs: int) -> dict:
    json_body, stream_body = chat_body(system.model("bench"), False), chat_body(system.model(sc.model), True)
    stats = asyncio.run(connection_cost("127.0.0.1", system.port, system.path, json_body, stream_body, duration,
                                        min_pairs, extra=system.headers,
                                        cpu=None if system.pid is None else lambda: cpu_ns(system.pid) / 1e9))
    out: dict = {f"{k}_p50_ms": ms(pct(v, 50)) for k, v in stats.samples.items()}
    for k, v in stats.cpu.items():  # mean: CPU adds up, and a busy box inflates latency, not this
        out[f"{k}_cpu_ms"] = round(sum(v) * 1000 / len(v), 3) if v else None
    # What one new connection costs a client (latency, p50) and the gateway (CPU, mean): a request on a
    # new connection minus one on the kept-alive connection, for JSON ("setup") and streams ("stream_setup").
    for kind, prefix in (("json", "setup"), ("ttfb", "stream_setup")):
        new, keep = out.get(f"{kind}_new_p50_ms"), out.get(f"{kind}_keep_p50_ms")
        if new is not None and keep is not None:
            out[f"{prefix}_ms"] = round(new - keep, 3)
        new, keep = out.get(f"{kind}_new_cpu_ms"), out.get(f"{kind}_keep_cpu_ms")
        if new is not None and keep is not None:
            out[f"{prefix}_cpu_ms"] = round(new - keep, 3)
    out.update({"sent": stats.sent, "completed": stats.completed, "errors": len(stats.errors),
                "error_kinds": sorted({e.split(":")[0] for e in stats.errors})[:5]})
    return out


def median_figures(samples: list[dict]) -> dict:
    """Median of every numeric figure over the rounds; error counts and lost rows are summed."""
    out: dict = {"rounds": len(samples)}
    keys = {k for s in samples for k in s}
    for k in sorted(keys):
        vals = [s[k] for s in samples if isinstance(s.get(k), (int, float)) and not isinstance(s.get(k), bool)]
        if k in ("errors", "non2xx", "rows_lost", "sent", "completed", "rows", "cache_hits", "unanswered", "cpu_n"):
            out[k] = sum(vals) if vals else None
        elif k == "rows_ok":
            out[k] = all(s.get(k) for s in samples)
        elif k in ("rss_mb", "peak_open"):
            out[k] = max(vals) if vals else None
        elif vals:
            out[k] = round(statistics.median(vals), 3)
        elif k == "error_kinds":
            out[k] = sorted({e for s in samples for e in s.get(k, [])})
        elif k == "error":
            out[k] = [s[k] for s in samples if s.get(k)]
        if k in SPREAD and len(vals) > 1:  # spread over rounds: min and max beside the median
            out[f"{k}_min"], out[f"{k}_max"] = min(vals), max(vals)
    # CPU per request pooled over the rounds (total CPU / total requests): steadier than a median
    cpu = [(s["cpu_s"], s.get("cpu_n", s["completed"])) for s in samples
           if s.get("cpu_s") is not None and s.get("cpu_n", s.get("completed"))]
    # A round whose window saw a handful of requests (a starved gateway at c=64: one wave of 64 new
    # connections) says little; pool the others when there are any.
    cpu = [c for c in cpu if c[1] >= MIN_WINDOW_REQUESTS] or cpu
    if cpu:
        out["cpu_ms_per_req"] = round(sum(c for c, _ in cpu) * 1000 / sum(n for _, n in cpu), 3)
    return out


MIN_WINDOW_REQUESTS = 32

SPREAD = ("cpu_ms_per_req", "rps", "p50_ms", "setup_ms", "setup_cpu_ms", "json_keep_cpu_ms", "ttfb_keep_p50_ms",
          "ttfb_new_p50_ms", "ttfb_p50_ms", "stream_setup_ms", "stream_setup_cpu_ms", "ttfb_keep_cpu_ms")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
