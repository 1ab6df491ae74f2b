// Analytics: requests, tokens, cost, error rate and latency percentiles over time (uPlot charts),
// breakdowns by provider and model, cache hit rate and money saved, for a chosen time range.
"use strict";
(() => {
  const { api, el, fmt, status } = Corral;
  const RANGES = ["15m", "1h", "6h", "24h", "7d", "30d"];
  let range = "1h", charts = [], pending = [], timer = null, generation = 0;

  const HEIGHT = 220;
  const pad = (n) => String(n).padStart(2, "0");
  const day = (d) => d.toLocaleDateString([], { month: "short", day: "numeric" });

  // Time ticks in 24-hour time, like the rest of the page; seconds only when ticks are seconds apart,
  // the date where the day changes, and the date on every tick if a time of day would repeat.
  function timeTicks(u, splits, axis, space, incr) {
    const dates = splits.map((s) => new Date(s * 1000));
    if (incr >= 86400) return dates.map(day);
    const hm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}` + (incr < 60 ? `:${pad(d.getSeconds())}` : "");
    const times = dates.map(hm);
    const repeats = new Set(times).size < times.length;
    return dates.map((d, i) => i === 0 || repeats || day(d) !== day(dates[i - 1]) ? `${times[i]}\n${day(d)}` : times[i]);
  }

  // Decimals that tell ticks `incr` apart: 0.00001 steps never all print as "0".
  function decimals(incr) {
    let d = 0;
    while (d < 12 && Math.abs(incr * 10 ** d - Math.round(incr * 10 ** d)) > 1e-6) d++;
    return d;
  }
  const number = (v, d) => v.toLocaleString([], { minimumFractionDigits: d, maximumFractionDigits: d });
  const ticks = (before, after) => (u, splits, axis, space, incr) =>
    splits.map((v) => v === null ? "" : before + number(v, decimals(incr)) + after);

  // Per chart kind: y ticks and their steps (counts never step by half a request), legend values.
  const WHOLE_STEPS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].flatMap((e) => [1, 2, 5].map((m) => m * 10 ** e));
  const KINDS = {
    count: { values: ticks("", ""), incrs: WHOLE_STEPS, legend: (v) => fmt.n(v) },
    usd: { values: ticks("$", ""), legend: (v) => fmt.usd(v) },
    ms: { values: ticks("", " ms"), legend: (v) => fmt.ms(v) },
    pct: { values: ticks("", "%"), legend: (v) => v.toFixed(1) + "%" },
  };

  function chart(title, id, kind, series, data) {
    const box = el("div", { class: "chart", id }, el("h3", {}, title));
    const k = KINDS[kind];
    const opts = {
      width: 400, height: HEIGHT,
      series: [{ value: (u, v) => v === null ? "-" : fmt.datetime(v * 1000) }, ...series.map(([label, stroke]) =>
        ({ label, stroke, width: 2, fill: stroke + "22", spanGaps: true, points: { show: true, size: 5 },
           value: (u, v) => v === null || v === undefined ? "-" : k.legend(v) }))],
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : (kind === "usd" ? 0.01 : 1)] } },
      axes: [{ values: timeTicks, space: 70 }, { size: 72, values: k.values, incrs: k.incrs }],
    };
    pending.push([box, opts, data]);
    return box;
  }

  // Charts are drawn once their cards are in the page, as wide as the card, and follow its width.
  function draw() {
    for (const [box, opts, data] of pending.splice(0)) {
      const c = new uPlot({ ...opts, width: box.clientWidth - 16 }, data, box);
      const seen = new ResizeObserver(() => {
        const width = box.clientWidth - 16;
        if (width > 0 && width !== c.width) c.setSize({ width, height: HEIGHT });
      });
      seen.observe(box);
      charts.push({ destroy() { seen.disconnect(); c.destroy(); }, plot: c });
    }
  }

  function card(label, value) { return el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "v" }, value)); }

  function breakdown(title, rows, keys) {
    const cols = { requests: "requests", errors: "errors", input_tokens: "tokens in", output_tokens: "tokens out",
                   cost_usd: "cost", ttfb_p50_ms: "TTFB p50", duration_p50_ms: "duration p50", duration_p95_ms: "duration p95",
                   duration_p99_ms: "duration p99", cache_hits: "cache hits", saved_cost_usd: "saved by cache" };
    const show = (k, v, r) => k.endsWith("_ms") ? fmt.ms(v) : k === "cost_usd" ? Money.cost(v, r.unpriced)
      : k.endsWith("usd") ? fmt.usd(v) : fmt.n(v);
    return el("section", { class: "scroll-x" }, el("h3", {}, title), el("table", { class: "breakdown" },
      el("thead", {}, el("tr", {}, keys.map((k) => el("th", {}, k)), Object.values(cols).map((c) => el("th", { class: "num" }, c)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, keys.map((k) => el("td", { class: "key", title: r[k] ?? "" }, r[k] ?? "-")),
        Object.keys(cols).map((c) => el("td", { class: "num" }, show(c, r[c], r))))))));
  }

  async function render(body) {
    const a = await api("analytics", { since: range });
    charts.forEach((c) => c.destroy()); charts = []; pending = [];
    const t = a.series.map((p) => p.t);
    const col = (k) => a.series.map((p) => p[k]);
    const tot = a.total;
    body.replaceChildren(
      el("div", { class: "cards" }, card("requests", fmt.n(tot.requests)), card("error rate", fmt.pct(tot.error_rate)),
        card("tokens in / out", `${fmt.n(tot.input_tokens)} / ${fmt.n(tot.output_tokens)}`), card("cost", Money.cost(tot.cost_usd, tot.unpriced)),
        card("TTFB p50 / p95 / p99", `${fmt.ms(tot.ttfb_p50_ms)} / ${fmt.ms(tot.ttfb_p95_ms)} / ${fmt.ms(tot.ttfb_p99_ms)}`),
        card("duration p50 / p95 / p99", `${fmt.ms(tot.duration_p50_ms)} / ${fmt.ms(tot.duration_p95_ms)} / ${fmt.ms(tot.duration_p99_ms)}`),
        card("cache hit rate", fmt.pct(tot.cache_hit_rate)), card("saved by cache", fmt.usd(tot.saved_cost_usd)),
        card("unpriced flows", fmt.n(tot.unpriced))),
      el("div", { class: "charts" },
        chart("Requests and errors", "chart-requests", "count", [["requests", "#2563eb"], ["errors", "#dc2626"]], [t, col("requests"), col("errors")]),
        chart("Tokens", "chart-tokens", "count", [["input", "#7c3aed"], ["output", "#059669"]], [t, col("input_tokens"), col("output_tokens")]),
        chart("Cost (USD)", "chart-cost", "usd", [["cost", "#d97706"]], [t, col("cost_usd")]),
        chart("Latency", "chart-latency", "ms", [["TTFB p50", "#0891b2"], ["TTFB p95", "#0e7490"], ["duration p50", "#4f46e5"],
          ["duration p95", "#be185d"]], [t, col("ttfb_p50_ms"), col("ttfb_p95_ms"), col("duration_p50_ms"), col("duration_p95_ms")]),
        chart("Error rate", "chart-error-rate", "pct", [["error rate", "#dc2626"]],
          [t, col("error_rate").map((v) => v === null || v === undefined ? null : v * 100)])),
      breakdown("By provider", a.by_provider, ["provider"]),
      breakdown("By model", a.by_model, ["provider", "model"]));
    draw();
    status(`${a.bucket_seconds}s buckets · updated ${fmt.time(new Date().toISOString())}`);
  }

  Corral.plots = { timeTicks, KINDS, HEIGHT };  // the spend view draws with the same ticks and formats

  Corral.views.analytics = {
    show(app) {
      const body = el("div", { id: "analytics" });
      const select = el("select", { name: "range", onchange: (e) => { range = e.target.value; render(body).catch((x) => status(x.message)); } },
        RANGES.map((r) => el("option", { value: r }, "last " + r)));
      select.value = range;
      app.append(el("div", { class: "filters" }, "Time range ", select), body);
      // Refresh 10 s after the previous answer arrived: a slow range never piles up queries.
      const mine = ++generation;
      const again = () => render(body).catch((e) => status(e.message))
        .finally(() => { if (mine === generation) timer = setTimeout(again, 10000); });
      again();
    },
    plots: () => charts.map((c) => c.plot),  // the uPlot instances (tests read their ticks)
    stop() { generation++; clearTimeout(timer); timer = null; charts.forEach((c) => c.destroy()); charts = []; pending = []; },
  };
})();
