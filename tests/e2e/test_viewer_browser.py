"""The viewer in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright; no browser
downloads). Screenshots land in tests/artifacts/ (gitignored)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from addon import credentials
from tests.support.gateway import REPO_ROOT
from tests.support.reliability import reliability
from tests.support.viewer import ViewerGateway
from tests.support.waiting import until

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
)
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing: scripts/ensure-chromium.sh could not install Debian's chromium "
                "(needs root/sudo and apt); browser tests skipped", allow_module_level=True)


@pytest.fixture
def vg(viewer: ViewerGateway) -> ViewerGateway:
    return viewer  # one filled viewer gateway for the viewer modules (tests/conftest.py)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Anything the viewer's Content-Security-Policy blocked (an inline script, a style attribute...).
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield pg
    ctx.close()
    assert not errors, errors  # no JavaScript exceptions on any page


def wait_js(page, expression: str) -> None:
    """Poll a JavaScript expression until it is true. (Playwright's wait_for_function polls with eval()
    inside the page, which the viewer's CSP forbids: evaluate() goes through the DevTools protocol.)"""
    until(lambda: page.evaluate(expression), message=f"never true: {expression}")


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_list_shows_the_flows_and_a_live_update_arrives_without_reload(vg: ViewerGateway, page) -> None:
    ids = [r["id"] for r in vg.gw.rows()]
    page.goto(vg.url)
    page.wait_for_selector("#flows tr")
    shown = page.eval_on_selector_all("#flows tr", "rows => rows.map(r => r.dataset.id)")
    assert set(shown) == set(ids)
    assert page.locator("#flows tr", has_text="anthropic").count() == 1
    page.evaluate("window.__marker = 'same page'")  # gone if the page reloads
    vg.chat("openai-chat-stream-2", stream=True)
    new_id = vg.gw.wait_rows(lambda r: r["id"] not in ids)[0]["id"]
    page.wait_for_selector(f'#flows tr[data-id="{new_id}"]', timeout=10000)
    assert page.evaluate("window.__marker") == "same page"
    assert page.eval_on_selector_all("#flows tr", "rows => rows[0].dataset.id") == new_id
    assert "new" in page.get_attribute(f'#flows tr[data-id="{new_id}"]', "class")
    shot(page, "viewer-list")


def test_list_shows_costs_in_the_one_money_format(vg: ViewerGateway, page) -> None:
    """web/money.js in the page: each cost cell as the CLI shows it (addon/money.py), unpriced as such."""
    from addon import money

    page.goto(vg.url)
    page.wait_for_selector("#flows tr")
    cells = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#flows tr')].map(
        (r) => [r.dataset.id, r.children[10].textContent]))""")
    rows = {r["id"]: r for r in vg.gw.rows()}
    priced = [i for i in cells if rows[i]["cost_usd"] is not None]
    assert priced
    for flow_id, text in cells.items():
        row = rows[flow_id]
        if row["cost_usd"] is not None:
            assert text == money.usd(row["cost_usd"]), (row["cost_usd"], text)
        elif row["unpriced"] and (row["input_tokens"] is not None or row["output_tokens"] is not None):
            assert text == "unpriced"


def test_filter_narrows_the_list(vg: ViewerGateway, page) -> None:
    page.goto(vg.url)
    page.wait_for_selector("#flows tr")
    page.wait_for_selector('select[name=provider] option[value="gemini"]', state="attached")
    page.select_option("select[name=provider]", "gemini")
    wait_js(page, "document.querySelectorAll('#flows tr').length === 1")
    assert "gemini" in page.inner_text("#flows tr")


def test_detail_shows_the_reassembled_stream(vg: ViewerGateway, page) -> None:
    stream = next(r for r in vg.gw.rows() if r["stream"] and r["provider"] == "openai" and r["status"] == 200)
    page.goto(vg.url)
    page.click(f'#flows tr[data-id="{stream["id"]}"]')
    page.wait_for_selector("#response-text")
    assert page.inner_text("#response-text").strip() == stream["response_text"].strip()
    assert "fp_" in page.inner_text("body")  # the credential, fingerprinted
    assert "sk-viewer-test-secret" not in page.content()
    page.click('button[data-tab="raw stream"]')
    assert "data:" in page.inner_text("#response-raw")
    page.click('button[data-tab="reassembled"]')
    assert page.inner_text("#curl").startswith("curl -X POST")
    shot(page, "viewer-detail")


def test_analytics_renders_charts_with_data(vg: ViewerGateway, page) -> None:
    page.goto(vg.url + "#/analytics")
    page.wait_for_selector("#chart-requests canvas")
    for chart in ("requests", "tokens", "cost", "latency", "error-rate"):
        assert page.locator(f"#chart-{chart} canvas").count() == 1
    # The chart's data, as uPlot drew it: the request counts add up to the flows recorded.
    total = page.evaluate("""() => {
        const box = document.querySelector('#chart-requests canvas');
        return box !== null && document.querySelector('#analytics .card .v').textContent; }""")
    assert total == str(len(vg.gw.rows()))
    drawn = page.evaluate("""async () => {
        const a = await Corral.api('analytics', {since: '1h'});
        return a.series.reduce((n, p) => n + p.requests, 0); }""")
    assert drawn == len(vg.gw.rows())
    assert page.locator("table.breakdown").first.inner_text().count("anthropic") == 1
    # pixels: the requests chart is not blank (uPlot drew a line on the canvas)
    painted = page.evaluate("""() => {
        const c = document.querySelector('#chart-requests canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert painted > 1000
    shot(page, "viewer-analytics")


@pytest.fixture
def page1400(browser):
    """A 1400x900 window: everything must fit it without a horizontal scroll bar."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def no_horizontal_overflow(page) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide in a {widths[1]} px window"


CHARTS = ("requests", "tokens", "cost", "latency", "error-rate")


def test_analytics_charts_fill_their_cards_with_unique_24h_ticks_and_percent_errors(
    vg: ViewerGateway, page1400
) -> None:
    page = page1400
    page.goto(vg.url + "#/analytics")
    wait_js(page, "Corral.views.analytics.plots().length === 5")
    sizes = page.evaluate("""() => [...document.querySelectorAll('.chart')].map(box => {
        const c = box.querySelector('canvas').getBoundingClientRect(), b = box.getBoundingClientRect();
        return {id: box.id, canvas: c.width, card: b.width, height: c.height}; })""")
    assert [s["id"] for s in sizes] == [f"chart-{c}" for c in CHARTS]
    for s in sizes:
        # The plot spans its card (8 px padding and a border each side), not a fixed 500 px in a wider card.
        assert s["card"] - 20 <= s["canvas"] <= s["card"], s
        assert s["height"] > 150, s
    ticks = chart_ticks(page)
    for chart, (x, y) in ticks.items():
        assert len(x) >= 3 and len(y) >= 2, (chart, x, y)
        assert len(set(x)) == len(x), (chart, x)  # no tick label twice on an axis
        assert len(set(y)) == len(y), (chart, y)
        for label in x:  # 24-hour time, HH:MM (a date line where the day changes)
            assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d(\n.+)?", label), (chart, label)
    assert all(v.endswith("%") for v in ticks["chart-error-rate"][1]), ticks["chart-error-rate"]
    # the error-rate chart says what its card says: 1 error in 6 requests is 16.7%, not 0.167
    card = page.locator(".card", has_text="error rate").locator(".v").inner_text()
    assert card.endswith("%")
    top = page.evaluate("""() => {
        const u = Corral.views.analytics.plots().find(u => u.root.parentNode.id === 'chart-error-rate');
        return Math.max(...u.data[1].filter(v => v !== null)); }""")
    assert top >= float(card.rstrip("%")) - 0.1  # the worst bucket, in percent too (16.7, not 0.167)
    no_horizontal_overflow(page)
    shot(page, "viewer-analytics-1400")
    page.set_viewport_size({"width": 1000, "height": 900})  # one chart per row: each follows its card
    wait_js(page, """[...document.querySelectorAll('.chart')].every(box =>
        Math.abs(box.querySelector('canvas').getBoundingClientRect().width - (box.clientWidth - 16)) < 2)""")
    assert page.evaluate("document.querySelector('#chart-cost canvas').getBoundingClientRect().width") > 900
    no_horizontal_overflow(page)
    page.set_viewport_size({"width": 1400, "height": 900})
    for since in ("24h", "7d"):  # longer ranges: still one label per tick, days where hours would repeat
        bucket = vg.api("api/analytics", since=since).json()["bucket_seconds"]
        page.select_option("select[name=range]", since)
        wait_js(page, f"document.getElementById('status').textContent.startsWith('{bucket}s buckets')")
        for chart, (x, y) in chart_ticks(page).items():
            assert len(set(x)) == len(x) >= 3 and len(set(y)) == len(y), (since, chart, x, y)
            for label in x:
                assert re.fullmatch(r"(([01]\d|2[0-3]):[0-5]\d(\n.+)?|[A-Z][a-z]{2} \d{1,2})", label), (since, label)
        no_horizontal_overflow(page)


def chart_ticks(page) -> dict[str, list[list[str]]]:
    """Per chart, the tick labels uPlot drew on its x and y axes (it draws them on the canvas)."""
    return page.evaluate("""() => Object.fromEntries(Corral.views.analytics.plots().map(u =>
        [u.root.parentNode.id, u.axes.map(a => (a._values || []).filter(v => v !== ''))]))""")


def test_every_page_fits_a_1400_px_window(vg: ViewerGateway, page1400) -> None:
    page = page1400
    page.goto(vg.url)
    page.wait_for_selector("#flows tr")
    no_horizontal_overflow(page)
    shot(page, "viewer-list-1400")
    page.goto(vg.url + "#/analytics")
    page.wait_for_selector("table.breakdown tbody tr")
    no_horizontal_overflow(page)
    for table in page.query_selector_all("table"):
        assert table.evaluate("t => t.scrollWidth <= t.parentNode.clientWidth")
    flow = next(r for r in vg.gw.rows() if r["provider"] == "openai" and r["stream"])
    page.goto(vg.url + f"#/flow/{flow['id']}")
    page.wait_for_selector("#request-body")
    no_horizontal_overflow(page)
    shot(page, "viewer-detail-1400")


def test_the_viewer_has_a_favicon(vg: ViewerGateway, page1400) -> None:
    page = page1400
    page.goto(vg.url)
    href = page.get_attribute("link[rel=icon]", "href")
    assert href and href.endswith(".svg")
    answer = page.request.get(vg.url + href)
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.text().lstrip().startswith("<svg")


@reliability("secrets", "viewer copy-as-curl replayed", "the same request through Corral, key from $VARIABLE",
             "a new row, credential fingerprinted")
def test_copy_as_curl_goes_through_corral_and_is_recorded(vg: ViewerGateway, page1400) -> None:
    """The command the detail page offers, run as it is by a shell: a new flow through the gateway,
    never the upstream directly; the request headers shown are the ones the client sent."""
    page = page1400
    flow = next(r for r in vg.gw.rows() if r["provider"] == "openai" and r["stream"] and r["status"] == 200)
    page.goto(vg.url + f"#/flow/{flow['id']}")
    page.wait_for_selector("#request-body")
    command = page.evaluate("() => document.getElementById('curl').textContent")
    assert command.startswith(f"curl -X POST {vg.gw.base('openai')}/v1/chat/completions")
    assert vg.mock.url not in command  # the upstream is Corral's business
    assert "sk-viewer-test-secret" not in command and "fp_" not in command
    headers = dict((k.lower(), v) for k, v in (page.eval_on_selector_all(
        "table.headers", "ts => [...ts[0].querySelectorAll('tr')].map(r => [...r.cells].map(c => c.textContent))")))
    assert headers["host"] == f"127.0.0.1:{vg.gw.port}"  # what the client sent, not the upstream's name
    assert headers["authorization"].startswith("fp_")
    summary = page.inner_text(".kv")
    assert "POST /openai/v1/chat/completions" in summary and f"{vg.mock.url}/v1/chat/completions" in summary
    before = {r["id"] for r in vg.gw.rows()}
    env = {**os.environ, "OPENAI_API_KEY": "sk-replayed-by-curl"}
    out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "data:" in out.stdout
    again = vg.gw.wait_rows(lambda r: r["id"] not in before)[0]
    assert (again["mode"], again["provider"], again["status"]) == ("reverse", "openai", 200)
    assert again["path"] == flow["path"] and again["gateway_path"] == "/openai/v1/chat/completions"
    assert again["request_body"] == flow["request_body"]
    assert again["credential"] == credentials.fingerprint("sk-replayed-by-curl")
    assert "sk-replayed-by-curl" not in json.dumps(again)
