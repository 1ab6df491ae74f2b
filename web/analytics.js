// Analytics: requests, tokens, cost, error rate and latency percentiles over time (uPlot charts),
// breakdowns by provider and model, cache hit rate and money saved, for a chosen time range.
"use strict";
(() => {
  const { api, el, fmt, status } = Corral;
  const RANGES = ["15m", "1h", "6h", "24h", "7d", "30d"];
  let range = "1h", charts = [], timer = null, generation = 0;

  function chart(title, id, series, data) {
    const box = el("div", { class: "chart", id }, el("h3", {}, title));
    const opts = { width: 500, height: 200, series: [{}, ...series.map(([label, stroke]) =>
      ({ label, stroke, width: 2, fill: stroke + "22", spanGaps: true, points: { show: true, size: 5 } }))], axes: [{}, { size: 60 }] };
    setTimeout(() => charts.push(new uPlot(opts, data, box)), 0);
    return box;
  }

  function card(label, value) { return el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "v" }, value)); }

  function breakdown(title, rows, keys) {
    const cols = ["requests", "errors", "input_tokens", "output_tokens", "cost_usd", "ttfb_p50_ms", "duration_p50_ms",
                  "duration_p95_ms", "duration_p99_ms", "cache_hits", "saved_cost_usd"];
    const show = (k, v, r) => k.endsWith("_ms") ? fmt.ms(v) : k === "cost_usd" ? Money.cost(v, r.unpriced)
      : k.endsWith("usd") ? fmt.usd(v) : fmt.n(v);
    return el("section", {}, el("h3", {}, title), el("table", { class: "breakdown" },
      el("thead", {}, el("tr", {}, [...keys, ...cols].map((c) => el("th", {}, c.replace(/_/g, " "))))),
      el("tbody", {}, rows.map((r) => el("tr", {}, keys.map((k) => el("td", {}, r[k])), cols.map((c) => el("td", { class: "num" }, show(c, r[c], r))))))));
  }

  async function render(body) {
    const a = await api("analytics", { since: range });
    charts.forEach((c) => c.destroy()); charts = [];
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
        chart("Requests and errors", "chart-requests", [["requests", "#2563eb"], ["errors", "#dc2626"]], [t, col("requests"), col("errors")]),
        chart("Tokens", "chart-tokens", [["input", "#7c3aed"], ["output", "#059669"]], [t, col("input_tokens"), col("output_tokens")]),
        chart("Cost (USD)", "chart-cost", [["cost", "#d97706"]], [t, col("cost_usd")]),
        chart("Latency (ms)", "chart-latency", [["TTFB p50", "#0891b2"], ["TTFB p95", "#0e7490"], ["duration p50", "#4f46e5"],
          ["duration p95", "#be185d"]], [t, col("ttfb_p50_ms"), col("ttfb_p95_ms"), col("duration_p50_ms"), col("duration_p95_ms")]),
        chart("Error rate", "chart-error-rate", [["error rate", "#dc2626"]], [t, col("error_rate")])),
      breakdown("By provider", a.by_provider, ["provider"]),
      breakdown("By model", a.by_model, ["provider", "model"]));
    status(`${a.bucket_seconds}s buckets · updated ${fmt.time(new Date().toISOString())}`);
  }

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
    stop() { generation++; clearTimeout(timer); timer = null; charts.forEach((c) => c.destroy()); charts = []; },
  };
})();
