"""The viewer in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright; no browser
downloads). Screenshots land in tests/artifacts/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import REPO_ROOT
from tests.support.viewer import ViewerGateway

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
    page.wait_for_function("document.querySelectorAll('#flows tr').length === 1")
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
