// Flow list: newest first, filters, keyset pagination, live updates by polling for rows newer
// than the newest one shown (only while on the first page).
"use strict";
(() => {
  const { api, el, fmt, cost, statusClass, status } = Corral;
  const POLL_MS = 1500;
  const state = { filters: { provider: "", model: "", status: "", cache: "", q: "" }, pages: [null], timer: null };

  const clip = (text, n) => text.length > n ? text.slice(0, n - 1) + "…" : text;

  function row(f, fresh) {
    return el("tr", { class: fresh ? "new" : "", "data-id": f.id, onclick: () => { location.hash = "#/flow/" + f.id; } },
      el("td", {}, fmt.time(f.started_at)), el("td", {}, f.mode), el("td", {}, f.provider || "-"),
      el("td", { title: f.requested_model ? `${f.model || "-"}, asked as ${f.requested_model}` : f.model || "" },
        ((f.model_alias ? `${f.model_alias}: ` : "") + (f.model || "-")).slice(0, 36)),
      el("td", { class: statusClass(f.status) }, f.status ?? "-"), el("td", {}, f.stream ? "yes" : "no"),
      el("td", { class: "num" }, fmt.ms(f.ttfb_ms)), el("td", { class: "num" }, fmt.ms(f.duration_ms)),
      el("td", { class: "num" }, fmt.n(f.input_tokens)), el("td", { class: "num" }, fmt.n(f.output_tokens)),
      el("td", { class: "num" }, cost(f)),
      el("td", {}, el("span", { class: "tag " + f.cache }, f.cache)), el("td", { class: "num" }, f.retries || 0),
      el("td", { class: "error", title: f.error || "" }, clip(f.error || "", 60)));
  }

  const HEAD = ["time", "mode", "provider", "model", "status", "stream", "TTFB", "duration", "tokens in",
                "tokens out", "cost", "cache", "retries", "error"];
  const NUM = new Set(["TTFB", "duration", "tokens in", "tokens out", "cost", "retries"]);

  async function facets(bar) {
    try {
      const f = await api("facets");
      const fill = (name, values) => {
        const sel = bar.querySelector(`select[name=${name}]`);
        for (const v of values) sel.append(el("option", { value: v }, v));
        sel.value = state.filters[name];
      };
      fill("provider", f.providers); fill("model", f.models); fill("cache", f.cache);
    } catch (e) { status(e.message); }
  }

  function filterBar() {
    const change = (e) => { state.filters[e.target.name] = e.target.value; state.pages = [null]; load(); };
    const select = (name, label, options) => el("select", { name, onchange: change },
      el("option", { value: "" }, label), ...(options || []).map((o) => el("option", { value: o }, o)));
    const search = el("input", { name: "q", placeholder: "search bodies…", value: state.filters.q,
      onkeydown: (e) => { if (e.key === "Enter") change(e); } });
    const bar = el("div", { class: "filters" }, select("provider", "all providers"), select("model", "all models"),
      select("status", "any status", ["2xx", "4xx", "5xx", "none"]), select("cache", "any cache"), search,
      el("button", { onclick: () => change({ target: search }) }, "search"));
    bar.querySelector("select[name=status]").value = state.filters.status;
    facets(bar);
    return bar;
  }

  let tbody, pager, newest = null;

  async function load() {
    const cursor = state.pages[state.pages.length - 1];
    const page = await api("flows", { ...state.filters, before: cursor, limit: 50 });
    tbody.replaceChildren(...page.flows.map((f) => row(f, false)));
    newest = state.pages.length === 1 && page.flows.length ? page.flows[0] : newest;
    if (state.pages.length === 1 && !page.flows.length) newest = null;
    pager.replaceChildren(
      el("button", { disabled: state.pages.length === 1 ? "" : null, onclick: () => { state.pages.pop(); load(); } }, "← newer"),
      el("span", { class: "muted" }, `page ${state.pages.length}`),
      el("button", { disabled: page.next ? null : "", onclick: () => { state.pages.push(page.next); load(); } }, "older →"));
    status(state.pages.length === 1 ? "live" : "paused (not on the first page)");
  }

  async function poll() {
    if (state.pages.length !== 1) return;
    try {
      const after = newest ? `${newest.started_at}|${newest.id}` : null;
      const page = after ? await api("flows", { ...state.filters, after, limit: 200 }) : await api("flows", { ...state.filters, limit: 50 });
      if (!page.flows.length) return;
      if (!after) tbody.replaceChildren();
      const shown = new Set([...tbody.children].map((tr) => tr.dataset.id));
      const fresh = page.flows.filter((f) => !shown.has(f.id));
      tbody.prepend(...fresh.map((f) => row(f, true)));
      while (tbody.children.length > 50) tbody.lastChild.remove();
      newest = page.flows[0];
      status(`live · ${fresh.length} new at ${fmt.time(new Date().toISOString())}`);
    } catch (e) { status("poll failed: " + e.message); }
  }

  Corral.views.list = {
    show(app) {
      tbody = el("tbody", { id: "flows" });
      pager = el("div", { class: "pager" });
      app.append(filterBar(), el("table", { class: "flows" },
        el("thead", {}, el("tr", {}, HEAD.map((h) => el("th", { class: NUM.has(h) ? "num" : "" }, h)))), tbody), pager);
      load().catch((e) => status(e.message));
      state.timer = setInterval(poll, POLL_MS);
    },
    stop() { clearInterval(state.timer); },
  };
})();
