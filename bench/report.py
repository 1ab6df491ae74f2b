"""The printed table, the ratios and the PASS/MISS targets of one bench run."""

from __future__ import annotations

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
        others = [("mitm", "plain mitmproxy"), ("direct", "direct"), ("litellm", "LiteLLM")]
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
