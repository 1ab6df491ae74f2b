"""The viewer's Spend page (web/spend.js) rendered by node against a minimal DOM and canned API answers:
budgets near/over their limit listed, unpriced shown as such (never $0), one chart line per key.
(The real browser tests, tests/e2e/test_viewer_browser.py, need Debian's chromium.)"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support.gateway import REPO_ROOT

BUDGETS = {"thresholds": [0.5, 0.8, 1.0], "budgets": [
    {"budget": "key:aaaaaaaa", "prefix": "ck-aaaaaaaa", "name": "billing", "spent_usd": 0.00012, "limit_usd": 0.0001,
     "period": "day", "ratio": 1.2, "reset": "2026-12-04T00:00:00+00:00", "state": "over"},
    {"budget": "key:bbbbbbbb", "prefix": "ck-bbbbbbbb", "name": "search", "spent_usd": 4, "limit_usd": 5,
     "period": "month", "ratio": 0.8, "reset": "2027-01-01T00:00:00+00:00", "state": "near"},
    {"budget": "key:cccccccc", "prefix": "ck-cccccccc", "name": "quiet", "spent_usd": 0, "limit_usd": 5,
     "period": "month", "ratio": 0, "reset": None, "state": "ok"}],
    "alerts": [{"budget": "key:aaaaaaaa", "key_name": "billing", "threshold": 1.0, "spent_usd": 0.00012,
                "limit_usd": 0.0001, "period": "day", "fired_at": "2026-12-03T09:45:15+00:00"}]}
SPEND = {"by": "key", "rows": [
    {"key": "ck-aaaaaaaa", "name": "billing", "flows": 6, "cost_usd": 0.00012, "unpriced": 1, "input_tokens": 460,
     "output_tokens": 85},
    {"key": "ck-dddddddd", "name": "local", "flows": 2, "cost_usd": None, "unpriced": 2, "input_tokens": 10,
     "output_tokens": 5}],
    "total": {"flows": 8, "cost_usd": 0.00012, "unpriced": 3}, "series": {"t": [1796000000, 1796010800],
                                                                         "lines": {"ck-aaaaaaaa": [0.0001, 0.00002]}}}

SCRIPT = """
const fs = require("fs"), vm = require("vm");
class FakeNode {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.className = ""; this.clientWidth = 800;
                     this.classList = { toggle() {} }; this.dataset = {}; }
  append(...c) { this.children.push(...c); }
  replaceChildren(...c) { this.children = []; this.append(...c); }
  setAttribute(k, v) { this.attrs[k] = v; }
  addEventListener() {}
  get textContent() { return this.children.map((c) => typeof c === "string" ? c : c.textContent).join(" "); }
  find(id) { if (this.attrs.id === id) return this;
             for (const c of this.children) { const f = typeof c === "string" ? null : c.find(id); if (f) return f; }
             return null; }
}
let rendered;
const done = new Promise((resolve) => { rendered = resolve; });
const statusNode = new FakeNode("span");
Object.defineProperty(statusNode, "textContent", { set(v) { rendered(v); }, get() { return ""; } });
const plots = [];
Object.assign(globalThis, {
  window: globalThis, Node: FakeNode, location: { search: "", hash: "#/spend" }, addEventListener() {},
  document: { createElement: (t) => new FakeNode(t), getElementById: () => statusNode, querySelectorAll: () => [] },
  fetch: async (url) => ({ ok: true, headers: { get: () => "application/json" },
                           json: async () => (url.startsWith("api/budgets") ? BUDGETS : SPEND) }),
  uPlot: class { constructor(opts, data) { plots.push({ labels: opts.series.slice(1).map((s) => s.label), data });
                                          this.width = opts.width; } destroy() {} setSize() {} },
  ResizeObserver: class { observe() {} disconnect() {} },
});
for (const f of ["money.js", "app.js", "analytics.js", "spend.js"]) {
  vm.runInThisContext(fs.readFileSync(WEB + f, "utf8"));
}
const app = new FakeNode("main");
Corral.views.spend.show(app);
done.then((status) => {
  const budgets = app.find("budgets"), table = app.find("spend-table");
  console.log(JSON.stringify({ status, budgets: budgets.textContent, table: table.textContent, plots }));
  Corral.views.spend.stop();
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine")
def test_spend_page_shows_budgets_near_or_over_and_unpriced_never_as_zero(tmp_path) -> None:
    script = tmp_path / "render.js"  # a file, not `node -e`: there `module` is a global and money.js would export
    web = json.dumps(str(REPO_ROOT / "web") + "/")
    script.write_text(f"const WEB = {web}; const BUDGETS = {json.dumps(BUDGETS)}; const SPEND = {json.dumps(SPEND)};"
                      + SCRIPT)
    run = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"].startswith("updated")
    assert "ck-aaaaaaaa billing over 120.0%" in out["budgets"]
    assert "ck-bbbbbbbb search near 80.0%" in out["budgets"]
    assert "ck-cccccccc" not in out["budgets"]  # under every threshold: not listed
    assert "1 alerts fired" in out["budgets"] and "reached 100%" in out["budgets"]
    assert "$0.00012 + 1 unpriced" in out["table"]
    local = out["table"].split("ck-dddddddd")[1]
    assert "unpriced" in local and "$0" not in local
    assert out["plots"] == [{"labels": ["ck-aaaaaaaa"], "data": [[1796000000, 1796010800], [0.0001, 0.00002]]}]
