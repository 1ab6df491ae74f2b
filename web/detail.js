// Flow detail: summary, headers as the client sent them (credentials arrive fingerprinted), bodies
// pretty-printed, a stream both raw and reassembled, attempts/retries, cache and rate-limit wait, and
// "copy as curl" (the same request through the gateway again; the API builds the command).
"use strict";
(() => {
  const { api, el, fmt, cost, statusClass, status } = Corral;

  function pretty(body) {
    if (!body) return "(empty)";
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch (e) { return body; }
  }

  function headers(list) {
    if (!list || !list.length) return el("p", { class: "muted" }, "(none)");
    return el("table", { class: "headers" }, el("tbody", {}, list.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))));
  }

  function responseBody(f) {
    const raw = el("pre", { id: "response-raw" }, f.stream ? (f.response_body || "(empty)") : pretty(f.response_body));
    if (!f.stream) return el("div", {}, raw, f.response_text ? [el("h3", {}, "Message text"), el("pre", { class: "text", id: "response-text" }, f.response_text)] : null);
    const text = el("pre", { class: "text", id: "response-text" }, f.response_text ?? "(no text reassembled)");
    const box = el("div", {}, text);
    const tab = (name, node) => el("button", { "data-tab": name, onclick: (e) => {
      box.replaceChildren(node);
      e.target.parentNode.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === e.target));
    } }, name);
    const tabs = el("div", { class: "tabs filters" }, tab("reassembled", text), tab("raw stream", raw));
    tabs.firstChild.classList.add("on");
    return el("div", {}, tabs, box);
  }

  function summary(f) {
    const pairs = [
      ["id", f.id], ["time", fmt.datetime(f.started_at)], ["mode", f.mode], ["provider", f.provider],
      ["model", f.model],
      ...(f.requested_model ? [["requested model", f.model_alias ? `${f.requested_model} (model group)` : f.requested_model]] : []),
      // the path as the client asked for it, then where it went
      ["request", `${f.method} ${f.mode === "reverse" && f.gateway_path ? f.gateway_path : f.path}`],
      ["upstream", f.upstream ? f.upstream + f.path : "-"],
      ["status", el("span", { class: statusClass(f.status) }, f.status ?? "none")], ["stream", f.stream ? "yes" : "no"],
      ["complete", f.complete ? "yes" : "no"], ["TTFB", fmt.ms(f.ttfb_ms)], ["duration", fmt.ms(f.duration_ms)],
      ["tokens in / out", `${fmt.n(f.input_tokens)} / ${fmt.n(f.output_tokens)}`],
      ["cached / reasoning", `${fmt.n(f.cached_input_tokens)} / ${fmt.n(f.reasoning_tokens)}`],
      ["cost", cost(f)], ["cache", f.cache], ["saved by cache", fmt.usd(f.saved_cost_usd)],
      ["retries", f.retries || 0], ["rate-limit wait", fmt.ms(f.wait_ms)], ["credential", f.credential || "-"],
      ["error", f.error ? el("span", { class: "error" }, f.error) : "-"], ["parse error", f.parse_error || "-"],
      ["response body", f.response_type || f.response_bytes != null ? `${f.response_type || "?"}, ${fmt.n(f.response_bytes)} bytes` : "-"],
      ["changed by Corral", f.corral_changes && f.corral_changes.length
        ? el("ul", { id: "corral-changes" }, f.corral_changes.map((c) => el("li", {}, c))) : "nothing"],
    ];
    return el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "-")]));
  }

  function attempts(f) {
    if (!f.attempts || !f.attempts.length) return el("p", { class: "muted" }, "one attempt");
    const keys = [...new Set(f.attempts.flatMap((a) => Object.keys(a)))];
    return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "#"), keys.map((k) => el("th", {}, k)))),
      el("tbody", {}, f.attempts.map((a, i) => el("tr", {}, el("td", {}, i + 1), keys.map((k) => el("td", {}, a[k] ?? "-"))))));
  }

  Corral.views.detail = {
    async show(app, id) {
      let f;
      try { f = await api("flows/" + encodeURIComponent(id)); } catch (e) { app.append(el("p", { class: "error" }, e.message)); return; }
      status("flow " + id);
      const copy = el("button", { id: "copy-curl", onclick: async () => {
        try { await navigator.clipboard.writeText(f.curl); copy.textContent = "copied"; }
        catch (e) { curl.hidden = false; copy.textContent = "select below"; }
      } }, "copy as curl");
      const curl = el("pre", { id: "curl", hidden: "" }, f.curl);
      app.append(
        el("p", {}, el("a", { href: "#/" }, "← flows"), " ", copy), curl,
        el("section", {}, el("h3", {}, "Summary"), summary(f)),
        el("section", {}, el("h3", {}, "Attempts"), attempts(f)),
        el("div", { class: "grid2" },
          el("section", {}, el("h3", {}, "Request headers"), headers(f.request_headers)),
          el("section", {}, el("h3", {}, "Response headers"), headers(f.response_headers))),
        el("div", { class: "grid2" },
          el("section", {}, el("h3", {}, "Request body"), el("pre", { id: "request-body" }, pretty(f.request_body))),
          el("section", {}, el("h3", {}, f.stream ? "Response stream" : "Response body"), responseBody(f))));
    },
  };
})();
