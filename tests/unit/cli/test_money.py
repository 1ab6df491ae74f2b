"""One money format in the CLI, exports and the viewer: addon/money.py and web/money.js on the same
cases, so a small real cost never shows as $0.000000 and an unknown price never as $0."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from addon import money
from tests.support.gateway import REPO_ROOT

USD = [
    (0.0000042, "$0.0000042"),
    (0.00000000123, "$0.0000000012"),
    (0.00002295, "$0.000023"),
    (0.0123, "$0.012"),
    (0.5, "$0.50"),
    (1.234, "$1.23"),
    (1234.5, "$1,234.50"),
    (0.0, "$0.00"),
    (None, "-"),
]
COST = [
    ((None, True), "unpriced"),  # one flow with tokens and no price
    ((None, False), "-"),  # one flow with nothing to price (e.g. refused before upstream)
    ((0.0, 3), "unpriced"),  # a sum over flows none of which has a price
    ((0.0000042, 2), "$0.0000042 + 2 unpriced"),  # a sum that leaves some flows out
    ((0.0000042, 0), "$0.0000042"),
    ((0.0, 0), "$0.00"),  # cache hits: priced, and free
]


@pytest.mark.parametrize(("value", "shown"), USD)
def test_usd(value: float | None, shown: str) -> None:
    assert money.usd(value) == shown


@pytest.mark.parametrize(("args", "shown"), COST)
def test_cost(args: tuple, shown: str) -> None:
    assert money.cost(*args) == shown


def test_plain_is_for_machines_and_has_no_exponent() -> None:
    assert money.plain(0.0000042) == "0.0000042"
    assert money.plain(4.2e-12) == "0.0000000000042"
    assert money.plain(1.5) == "1.5" and money.plain(0.0) == "0.0" and money.plain(None) == ""


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine")
def test_the_viewer_formats_money_the_same_way() -> None:
    script = f"""
const Money = require({json.dumps(str(REPO_ROOT / "web" / "money.js"))});
const usd = {json.dumps([v for v, _ in USD])}.map((v) => Money.usd(v));
const cost = {json.dumps([list(a) for a, _ in COST])}.map(([v, u]) => Money.cost(v, u));
console.log(JSON.stringify({{usd, cost}}));
"""
    out = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    assert out == {"usd": [s for _, s in USD], "cost": [s for _, s in COST]}
