// Corral viewer: hash router and helpers shared by the list, detail and analytics views.
// Plain browser JavaScript, no build step. The API token (when the viewer needs one) comes from
// the page URL (?token=...) and is sent as a Bearer header.
"use strict";
window.Corral = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const views = {};
  let current = null;

  async function api(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") qs.set(k, v);
    const url = "api/" + path + (qs.toString() ? "?" + qs : "");
    const res = await fetch(url, { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!res.ok) throw new Error(`${res.status} ${(await res.text()).slice(0, 200)}`);
    return res.headers.get("content-type").includes("json") ? res.json() : res.text();
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  const fmt = {
    time: (iso) => iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "-",
    datetime: (iso) => iso ? new Date(iso).toLocaleString([], { hour12: false }) : "-",
    ms: (v) => v === null || v === undefined ? "-" : v >= 1000 ? (v / 1000).toFixed(2) + "s" : Math.round(v) + "ms",
    n: (v) => v === null || v === undefined ? "-" : Number(v).toLocaleString(),
    usd: Money.usd,  // web/money.js: the one money format, also the CLI's
    pct: (v) => v === null || v === undefined ? "-" : (v * 100).toFixed(1) + "%",
  };
  // "unpriced": tokens were reported but no price is known (cost stays NULL, never a made-up 0).
  const counted = (f) => f.input_tokens != null || f.output_tokens != null;
  const cost = (f) => f.cost_usd === null || f.cost_usd === undefined
    ? (f.unpriced && counted(f) ? el("span", { class: "tag unpriced" }, Money.cost(null, true)) : "-")
    : fmt.usd(f.cost_usd);
  const statusClass = (s) => s ? "s" + String(s)[0] : "sn";

  function status(text) { document.getElementById("status").textContent = text; }

  function route() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [name, ...rest] = hash.split("/");
    const view = name === "flow" ? "detail" : ["analytics", "spend"].includes(name) ? name : "list";
    if (current && current.stop) current.stop();
    document.querySelectorAll("[data-nav]").forEach((a) =>
      a.classList.toggle("active", a.dataset.nav === (view === "detail" ? "list" : view)));
    const app = document.getElementById("app");
    app.replaceChildren();
    current = views[view];
    current.show(app, decodeURIComponent(rest.join("/")), new URLSearchParams(hash.split("?")[1] || ""));
  }

  return {
    api, el, fmt, cost, statusClass, status, views,
    start() { window.addEventListener("hashchange", route); route(); },
  };
})();
