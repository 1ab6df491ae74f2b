// Spend: budgets near or over their limit (and the alerts they fired), and the recorded cost per gateway
// key, team, tag, provider or model over time (/api/budgets, /api/spend). Charts reuse the analytics
// view's ticks and formats (Corral.plots). Unpriced flows are shown as such, never as $0.
"use strict";
(() => {
  const { api, el, fmt, status } = Corral;
  const RANGES = ["24h", "7d", "30d"];
  const GROUPS = ["key", "team", "tag", "provider", "model"];
  const COLORS = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2", "#be185d", "#4f46e5", "#6b7280"];
  let range = "7d", by = "key", plot = null, seen = null, timer = null, generation = 0;

  function destroy() {
    if (seen) seen.disconnect();
    if (plot) plot.destroy();
    plot = seen = null;
  }

  function budgets(b) {
    const rows = b.budgets.filter((x) => x.state !== "ok");
    return el("section", { id: "budgets" }, el("h3", {}, `Budgets near or over their limit (alerts at ${b.thresholds.map((t) => t * 100 + "%").join(", ")})`),
      rows.length === 0 ? el("p", { class: "muted" }, "No budget has reached an alert threshold this period.")
        : el("table", { class: "breakdown" },
          el("thead", {}, el("tr", {}, ["budget", "name", "state", "used", "spent", "limit", "period", "resets (UTC)"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows.map((r) => el("tr", { class: "budget-" + r.state },
            el("td", {}, r.prefix || r.budget), el("td", {}, r.name || "-"), el("td", { class: r.state === "over" ? "s5" : "s4" }, r.state),
            el("td", { class: "num" }, fmt.pct(r.ratio)), el("td", { class: "num" }, fmt.usd(r.spent_usd)),
            el("td", { class: "num" }, fmt.usd(r.limit_usd)), el("td", {}, r.period), el("td", {}, r.reset ? r.reset.slice(0, 16).replace("T", " ") : "never"))))),
      b.alerts.length === 0 ? null : el("details", {}, el("summary", {}, `${b.alerts.length} alerts fired`),
        el("ul", { class: "alerts" }, b.alerts.map((a) => el("li", {},
          `${fmt.datetime(a.fired_at)} · ${a.budget}${a.key_name ? " (" + a.key_name + ")" : ""} reached ${Math.round(a.threshold * 100)}% · spent ${fmt.usd(a.spent_usd)} of ${fmt.usd(a.limit_usd)} (${a.period})`)))));
  }

  function chart(s) {
    const labels = Object.keys(s.series.lines);
    const box = el("div", { class: "chart", id: "chart-spend" }, el("h3", {}, `Cost per ${by} (USD)`));
    if (labels.length === 0) {
      box.append(el("p", { class: "muted" }, "No priced flows in this range."));
      return [box, null];
    }
    const { timeTicks, KINDS, HEIGHT } = Corral.plots;
    const opts = {
      width: 400, height: HEIGHT,
      series: [{ value: (u, v) => v === null ? "-" : fmt.datetime(v * 1000) }, ...labels.map((label, i) =>
        ({ label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 5 },
           value: (u, v) => v === null || v === undefined ? "-" : KINDS.usd.legend(v) }))],
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 0.01] } },
      axes: [{ values: timeTicks, space: 70 }, { size: 72, values: KINDS.usd.values }],
    };
    return [box, () => {
      plot = new uPlot({ ...opts, width: box.clientWidth - 16 }, [s.series.t, ...labels.map((l) => s.series.lines[l])], box);
      seen = new ResizeObserver(() => {
        const width = box.clientWidth - 16;
        if (width > 0 && plot && width !== plot.width) plot.setSize({ width, height: HEIGHT });
      });
      seen.observe(box);
    }];
  }

  function table(s) {
    const named = by === "key";
    return el("section", { class: "scroll-x" }, el("h3", {}, `By ${by}`), el("table", { class: "breakdown", id: "spend-table" },
      el("thead", {}, el("tr", {}, el("th", {}, by), named ? el("th", {}, "name") : null,
        ["flows", "cost", "unpriced flows", "tokens in", "tokens out"].map((h) => el("th", { class: "num" }, h)))),
      el("tbody", {}, s.rows.map((r) => el("tr", {}, el("td", { class: "key" }, r[by]), named ? el("td", {}, r.name || "-") : null,
        el("td", { class: "num" }, fmt.n(r.flows)), el("td", { class: "num" }, Money.cost(r.cost_usd, r.unpriced)),
        el("td", { class: "num" }, fmt.n(r.unpriced)), el("td", { class: "num" }, fmt.n(r.input_tokens)),
        el("td", { class: "num" }, fmt.n(r.output_tokens)))))));
  }

  async function render(body) {
    const [b, s] = await Promise.all([api("budgets"), api("spend", { by, since: range })]);
    destroy();
    const [box, draw] = chart(s);
    body.replaceChildren(budgets(b),
      el("div", { class: "cards" }, el("div", { class: "card" }, el("div", { class: "muted" }, "cost"),
        el("div", { class: "v" }, Money.cost(s.total.cost_usd, s.total.unpriced))),
        el("div", { class: "card" }, el("div", { class: "muted" }, "flows"), el("div", { class: "v" }, fmt.n(s.total.flows)))),
      el("div", { class: "charts" }, box), table(s));
    if (draw) draw();
    status(`updated ${fmt.time(new Date().toISOString())}`);
  }

  Corral.views.spend = {
    show(app) {
      const body = el("div", { id: "spend" });
      const again = () => render(body).catch((e) => status(e.message));
      const pick = (name, values, value, set, label) => {
        const select = el("select", { name, onchange: (e) => { set(e.target.value); again(); } }, values.map((v) => el("option", { value: v }, label(v))));
        select.value = value;
        return select;
      };
      app.append(el("div", { class: "filters" }, "Time range ", pick("range", RANGES, range, (v) => { range = v; }, (v) => "last " + v),
        " by ", pick("by", GROUPS, by, (v) => { by = v; }, (v) => v)), body);
      const mine = ++generation;
      const loop = () => again().finally(() => { if (mine === generation) timer = setTimeout(loop, 10000); });
      loop();
    },
    plot: () => plot,
    stop() { generation++; clearTimeout(timer); timer = null; destroy(); },
  };
})();
