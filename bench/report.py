"""The printed table, the ratios and the PASS/MISS targets of one bench run."""

from __future__ import annotations

from systems import BUDGET_SYSTEMS, NOT_BUILT

COLUMNS = {
    "wrk": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("errors", "errors"),
            ("cpu_ms_per_req", "CPU ms/req")],
    "stream": [("rps", "streams/s"), ("ttfb_p50_ms", "TTFB p50"), ("ttfb_p99_ms", "TTFB p99"),
               ("total_p50_ms", "total p50"), ("total_p99_ms", "total p99"), ("errors", "errors"),
               ("cpu_ms_per_req", "CPU ms/req")],
    "open": [("completed", "completed"), ("peak_open", "peak open"), ("errors", "errors"),
             ("rss_before_mb", "RSS idle MB"), ("rss_mb", "RSS peak MB"), ("total_p50_ms", "total p50")],
    "count": [("sent", "sent"), ("completed", "completed"), ("rows", "rows"), ("rows_lost", "rows lost"),
              ("errors", "errors")],
    "paired": [("rps", "req/s"), ("ttfb_p50_ms", "TTFB p50"), ("total_p50_ms", "total p50"), ("errors", "errors"),
               ("cpu_ms_per_req", "CPU ms/req")],
    "conn": [("json_new_p50_ms", "JSON new"), ("json_keep_p50_ms", "JSON kept"), ("setup_ms", "setup ms"),
             ("ttfb_new_p50_ms", "TTFB new"), ("ttfb_keep_p50_ms", "TTFB kept"), ("errors", "errors"),
             ("stream_setup_ms", "str. setup"), ("json_keep_cpu_ms", "CPU kept"), ("setup_cpu_ms", "setup CPU"),
             ("ttfb_keep_cpu_ms", "CPU stream"), ("stream_setup_cpu_ms", "str.set.CPU")],
}
EXTRA = [("rows", "rows"), ("cache_hits", "cache hits")]


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def table(scenarios, systems, summary) -> list[str]:
    out: list[str] = []
    labels = {s.name: s.label for s in systems}
    for sc in scenarios:
        data = summary.get(sc.name, {})
        if not data:
            continue
        cols = list(COLUMNS[sc.kind])
        if sc.name == "slow_c256":
            cols.insert(4, ("unanswered", "unanswered"))
        if sc.kind == "wrk" and any(d.get("rows") is not None for d in data.values()):
            cols += [c for c in EXTRA if any(d.get(c[0]) is not None for d in data.values())]
        out.append("")
        out.append(f"## {sc.title}")
        head = f"{'system':<28}" + "".join(f"{h:>12}" for _, h in cols)
        out.append(head)
        out.append("-" * len(head))
        for name in sc.systems:
            if name in data:
                out.append(f"{labels.get(name, name):<28}" + "".join(f"{fmt(data[name].get(k)):>12}" for k, _ in cols))
        for line in ratios(sc, data):
            out.append("  " + line)
    return out


def spread(d: dict, key: str) -> str:
    """``median [min-max]`` over the rounds."""
    v, lo, hi = d.get(key), d.get(f"{key}_min"), d.get(f"{key}_max")
    if v is None:
        return "-"
    return fmt(v) if lo is None else f"{fmt(v)} [{fmt(lo)}-{fmt(hi)}]"


HEADLINE_ORDER = ("direct", "mitm", "mitm-lazy", "portkey", "corral", "corral-w2", "litellm")


def headline(systems, summary) -> list[str]:
    """Gateway CPU ms per request first (honest on a busy box), then throughput and latency, with the
    spread over rounds."""
    labels = {s.name: s.label for s in systems}
    cols = ["CPU ms/req c=64", "CPU ms/req c=1", "setup CPU ms", "req/s c=1", "req/s c=64", "p50 c=1", "p99 c=1",
            "setup ms", "stream setup ms", "TTFB kept"]
    head = f"{'system':<26}" + "".join(f"{h:>22}" for h in cols)
    out = ["", "## Headline: gateway CPU per request, then req/s and latency (median [min-max] over rounds)",
           head, "-" * len(head)]
    for name in HEADLINE_ORDER:
        c1, c64 = summary.get("json_c1", {}).get(name), summary.get("json_c64", {}).get(name)
        conn = summary.get("conn", {}).get(name) or {}
        if c1 is None and c64 is None:
            continue
        c1, c64 = c1 or {}, c64 or {}
        cells = [spread(c64, "cpu_ms_per_req"), spread(c1, "cpu_ms_per_req"), spread(conn, "setup_cpu_ms"),
                 spread(c1, "rps"),
                 spread(c64, "rps"), fmt(c1.get("p50_ms")), fmt(c1.get("p99_ms")), spread(conn, "setup_ms"),
                 spread(conn, "stream_setup_ms"), spread(conn, "ttfb_keep_p50_ms")]
        out.append(f"{labels.get(name, name):<26}" + "".join(f"{c:>22}" for c in cells))
    return out


def ratio(a, b) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return round(a / b, 3)


def ratios(sc, data) -> list[str]:
    corral = data.get("corral")
    if corral is None or sc.kind not in ("wrk", "stream"):
        return []
    keys = ["rps", "p50_ms"] if sc.kind == "wrk" else ["ttfb_p50_ms", "total_p50_ms"]
    keys.append("cpu_ms_per_req")
    lines = []
    for key in keys:
        parts = []
        others = [("mitm", "plain mitmproxy"), ("portkey", "Portkey"), ("direct", "direct"), ("litellm", "LiteLLM")]
        if sc.kind == "stream":
            others.insert(1, ("mitm-tee", "mitmproxy+tee"))
        for other, label in others:
            if key == "cpu_ms_per_req" and other == "direct":
                continue
            r = ratio(corral.get(key), (data.get(other) or {}).get(key))
            if r is not None:
                parts.append(f"Corral/{label} {r:.2f}")
        if parts:
            lines.append(f"{key}: " + ", ".join(parts))
    return lines


def fig(summary, scenario, system, key):
    return (summary.get(scenario, {}).get(system) or {}).get(key)


def targets(summary, systems) -> list[dict]:
    """Each target: name, status PASS / MISS / SKIP, and the figures behind it."""
    status = {s.name: s for s in systems}
    out: list[dict] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"target": name, "status": "SKIP" if ok is None else ("PASS" if ok else "MISS"), "detail": detail})

    def missing(*names: str) -> str | None:
        for n in names:
            s = status.get(n)
            if s is None or s.status != "ok":
                return f"{n} skipped: {s.note if s else 'unknown'}"
        return None

    # Issue 23: a single Corral process against the fastest peer, Portkey's gateway.
    for sc in ("json_c1", "json_c64"):
        c, k = fig(summary, sc, "corral", "rps"), fig(summary, sc, "portkey", "rps")
        r = ratio(c, k)
        add(f"{sc}: Corral req/s >= 1.0 x Portkey", None if r is None else r >= 1.0,
            missing("corral", "portkey") or f"{fmt(c)} vs {fmt(k)} req/s = {r}")
    for sc in ("json_c1", "json_c64"):
        c, k = fig(summary, sc, "corral", "cpu_ms_per_req"), fig(summary, sc, "portkey", "cpu_ms_per_req")
        r = ratio(c, k)
        add(f"{sc}: Corral CPU ms/request <= 1.0 x Portkey", None if r is None else r <= 1.0,
            missing("corral", "portkey") or f"{fmt(c)} vs {fmt(k)} ms = {r}")
    c, k = fig(summary, "json_c64", "corral-w2", "rps"), fig(summary, "json_c64", "portkey", "rps")
    r = ratio(c, k)
    add("json_c64: Corral --workers 2 req/s >= 1.3 x Portkey", None if r is None else r >= 1.3,
        missing("corral-w2", "portkey") or f"{fmt(c)} vs {fmt(k)} req/s = {r}")
    c, d = fig(summary, "conn", "corral", "ttfb_keep_p50_ms"), fig(summary, "conn", "direct", "ttfb_keep_p50_ms")
    add("stream TTFB on a kept-alive connection <= direct + 1 ms", None if None in (c, d) else c <= d + 1,
        missing("corral") or f"Corral {fmt(c)} ms, direct {fmt(d)} ms (+{(c or 0) - (d or 0):.3f} ms)")
    for key, what in (("setup", "JSON request"), ("stream_setup", "stream's first event")):
        c, d = fig(summary, "conn", "corral", f"{key}_ms"), fig(summary, "conn", "direct", f"{key}_ms")
        m = fig(summary, "conn", "mitm", f"{key}_ms")
        add(f"connection setup cost ({'JSON' if key == 'setup' else 'stream'}) <= direct + 1.5 ms",
            None if None in (c, d) else c <= d + 1.5,
            missing("corral") or f"Corral {fmt(c)} ms, direct {fmt(d)} ms, plain mitmdump {fmt(m)} ms "
            f"(new-connection minus kept-alive {what}, p50); gateway CPU per new connection: Corral "
            f"{fmt(fig(summary, 'conn', 'corral', f'{key}_cpu_ms'))} ms, mitmdump "
            f"{fmt(fig(summary, 'conn', 'mitm', f'{key}_cpu_ms'))} ms")
    # Earlier targets, now against mitmdump with its default options.
    for sc in ("json_c1", "json_c64"):
        c, m = fig(summary, sc, "corral", "rps"), fig(summary, sc, "mitm", "rps")
        r = ratio(c, m)
        add(f"{sc}: Corral req/s >= 0.90 x plain mitmproxy", None if r is None else r >= 0.90,
            missing("corral", "mitm") or f"{fmt(c)} vs {fmt(m)} req/s = {r}")
    for sc in ("json_c1", "json_c8", "json_c64"):
        c, m, d = (fig(summary, sc, n, "p50_ms") for n in ("corral", "mitm", "direct"))
        if None in (c, m, d):
            add(f"{sc}: Corral p50 overhead <= 1.2 x plain mitmproxy's", None, missing("corral", "mitm") or "no data")
        else:
            oc, om = c - d, m - d
            add(f"{sc}: Corral p50 overhead <= 1.2 x plain mitmproxy's", oc <= 1.2 * om,
                f"Corral +{oc:.3f} ms, mitmproxy +{om:.3f} ms over direct (ratio {ratio(oc, om)})")
    for sc in ("json_c1", "json_c8", "json_c64"):
        c, litellm = fig(summary, sc, "corral", "rps"), fig(summary, sc, "litellm", "rps")
        r = ratio(c, litellm)
        add(f"{sc}: Corral req/s >= 6 x LiteLLM", None if r is None else r >= 6,
            missing("corral", "litellm") or f"{fmt(c)} vs {fmt(litellm)} req/s = {r if r is not None else "-"}x")
    for sc in ("stream_c1", "stream_c32"):
        c, d = fig(summary, sc, "corral", "ttfb_p50_ms"), fig(summary, sc, "direct", "ttfb_p50_ms")
        tee = fig(summary, sc, "mitm-tee", "ttfb_p50_ms")
        floor = (
            f"; mitmdump + bare SSE tee (no Corral code) {fmt(tee)} ms (+{tee - d:.3f} ms)"
            if None not in (tee, d)
            else ""
        )
        add(f"{sc}: Corral stream TTFB p50 <= direct + 2 ms", None if None in (c, d) else c <= d + 2,
            missing("corral") or f"Corral {fmt(c)} ms, direct {fmt(d)} ms (+{(c or 0) - (d or 0):.3f} ms){floor}")
    c, m = fig(summary, "cache_hit", "corral-cache", "p50_ms"), fig(summary, "json_c1", "mitm", "p50_ms")
    hits = fig(summary, "cache_hit", "corral-cache", "cache_hits")
    add("cache hit p50 <= plain mitmproxy pass-through p50 (c=1)",
        None if None in (c, m) else (c <= m and bool(hits)),
        missing("corral-cache", "mitm") or f"hit p50 {fmt(c)} ms vs mitmproxy {fmt(m)} ms; hits recorded: {hits}")
    e, rss = fig(summary, "open_streams", "corral", "errors"), fig(summary, "open_streams", "corral", "rss_mb")
    n = fig(summary, "open_streams", "corral", "peak_open")
    add(
        "open streams: zero errors, Corral RSS <= 300 MB",
        None if e is None else (e == 0 and rss is not None and rss <= 300),
        missing("corral") or f"errors {e}, peak open {n}, RSS peak {fmt(rss)} MB",
    )
    oks = [d.get("rows_ok") for sc in summary.values() for name, d in sc.items() if name.startswith("corral")]
    lost = fig(summary, "records", "corral", "rows_lost")
    add("zero recorded rows lost (every Corral run)", None if not oks else all(oks),
        f"exact-count runs lost {lost}; every wrk/stream run has completed <= rows <= sent: {all(oks) if oks else '-'}")
    return out


def budgets(summary, systems, in_process: dict[str, dict] | None = None) -> list[dict]:
    """Each feature landing this round, its CPU per request over Corral's default chain in this run: the
    side-by-side pair, and where a script measures the feature in process (bench/in_process.py), that
    figure too. The pair's result is PASS/MISS as before; ``in_process_status`` judges the other."""
    rows = [
        ("corral-unified", "unified endpoint (translation to Anthropic and back, streaming)", 0.3),
        ("corral-keys", "gateway key check with a budget", 0.1),
        ("corral-otel", "OpenTelemetry export on", 0.15),
        ("corral-hardening", "hardening limits (header caps, body limits)", 0.05),  # "~ 0": within noise
    ]
    status = {s.name: s for s in systems}
    out = []
    for name, what, limit in rows:
        assert name in BUDGET_SYSTEMS
        s = status.get(name)
        where = "budget_stream" if name == "corral-unified" else "budget_json"
        base = fig(summary, where, "corral", "cpu_ms_per_req")
        cost = fig(summary, where, name, "cpu_ms_per_req")
        if s is None or s.status != "ok" or cost is None or base is None:
            note = s.note if s is not None and s.status != "ok" else "no data"
            built = not note.startswith(NOT_BUILT)
            out.append({"budget": what, "system": name, "limit_ms": limit, "status": "SKIP" if built else "n/a",
                        "detail": note if built else NOT_BUILT, "delta_ms": None})
            continue
        delta = round(cost - base, 3)
        own = ((in_process or {}).get(name) or {}).get("ms")
        out.append({"budget": what, "system": name, "limit_ms": limit, "delta_ms": delta,
                    "status": "PASS" if delta <= limit else "MISS", "in_process_ms": own,
                    "in_process_status": None if own is None else "PASS" if own <= limit else "MISS",
                    "in_process_command": ((in_process or {}).get(name) or {}).get("command"),
                    "detail": f"{fmt(cost)} vs default chain {fmt(base)} CPU ms/req "
                              f"{'streams' if where == 'budget_stream' else 'JSON'} "
                              f"({spread(summary[where][name], 'cpu_ms_per_req')} vs "
                              f"{spread(summary[where]['corral'], 'cpu_ms_per_req')} over rounds; {delta:+.3f} ms)"})
    return out


def budget_lines(rows) -> list[str]:
    out = ["", "## Budgets: CPU ms per request over Corral's default chain (loaded side by side, same run)"]
    for b in rows:
        out.append(f"{b['status']:<5} {b['budget']} <= {b['limit_ms']} ms: {b['detail']}")
        if b.get("in_process_ms") is not None:
            out.append(f"      in process ({b['in_process_command']}): {b['in_process_status']} "
                       f"{b['in_process_ms'] * 1e3:.1f} µs CPU per request")
    return out


HISTORY_RATIOS = {
    # name: (scenario, figure, numerator system, denominator system)
    "corral/portkey req/s c=1": ("json_c1", "rps", "corral", "portkey"),
    "corral/portkey req/s c=64": ("json_c64", "rps", "corral", "portkey"),
    "corral-w2/portkey req/s c=64": ("json_c64", "rps", "corral-w2", "portkey"),
    "corral/portkey CPU per req c=64": ("json_c64", "cpu_ms_per_req", "corral", "portkey"),
    "corral/mitmdump CPU per req c=64": ("json_c64", "cpu_ms_per_req", "corral", "mitm"),
    "corral/mitmdump req/s c=64": ("json_c64", "rps", "corral", "mitm"),
}


def history_ratios(summary) -> dict:
    return {name: ratio(fig(summary, sc, a, key), fig(summary, sc, b, key))
            for name, (sc, key, a, b) in HISTORY_RATIOS.items()}


def markdown(result: dict) -> list[str]:
    """The README's tables from one results file: ``python bench/report.py bench/results/<stamp>.json``."""
    s, labels = result["summary"], {n: v["label"] for n, v in result["systems"].items()}

    def cell(sc: str, name: str, key: str) -> str:
        return spread((s.get(sc) or {}).get(name) or {}, key)

    out = ["| system | CPU ms/req c=64 | CPU ms/req c=1 | req/s c=1 | req/s c=64 | p50 / p99 ms c=1 | setup ms (CPU) "
           "| stream setup ms (CPU) | stream TTFB kept-alive ms (CPU) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in HEADLINE_ORDER:
        if name not in s.get("json_c1", {}) and name not in s.get("json_c64", {}):
            continue
        c1 = s.get("json_c1", {}).get(name) or {}
        conn = s.get("conn", {}).get(name) or {}
        out.append(f"| {labels.get(name, name)} | {cell('json_c64', name, 'cpu_ms_per_req')} "
                   f"| {cell('json_c1', name, 'cpu_ms_per_req')} | {cell('json_c1', name, 'rps')} "
                   f"| {cell('json_c64', name, 'rps')} | {fmt(c1.get('p50_ms'))} / {fmt(c1.get('p99_ms'))} "
                   f"| {fmt(conn.get('setup_ms'))} ({fmt(conn.get('setup_cpu_ms'))}) "
                   f"| {fmt(conn.get('stream_setup_ms'))} ({fmt(conn.get('stream_setup_cpu_ms'))}) "
                   f"| {fmt(conn.get('ttfb_keep_p50_ms'))} ({fmt(conn.get('ttfb_keep_cpu_ms'))}) |")
    out += ["", "| target (same run) | result | figures |", "|---|---|---|"]
    out += [f"| {t['target']} | {t['status']} | {t['detail']} |" for t in result["targets"]]
    out += ["", "| budget: CPU ms/request over the default chain | side by side | figures | in process |",
            "|---|---|---|---|"]
    out += [f"| {b['budget']} ≤ {b['limit_ms']} ms | {b['status']} | {b['detail']} | "
            + (f"{b['in_process_status']} {b['in_process_ms'] * 1e3:.1f} µs (`{b['in_process_command']}`)"
               if b.get("in_process_ms") is not None else "-") + " |"
            for b in result.get("budgets", [])]
    return out


if __name__ == "__main__":
    import json
    import sys

    print("\n".join(markdown(json.loads(open(sys.argv[1]).read()))))
