"""Money as Corral shows it: one format for every cost and saving in the CLI and exports (web/app.js
``fmt.usd`` is the same rule for the viewer; tests/unit/cli/test_money.py holds both to it).

Two significant digits at least, two decimals at least: $12.35, $0.50, $0.012, $0.0000042. LLM calls
cost fractions of a cent, so a fixed six decimals would show a real $0.0000042 as $0.000004 and a
cheaper one as $0.000000, which reads as free. A flow whose tokens have no known price is
"unpriced", never $0: a made-up zero would hide spend.
"""

from __future__ import annotations

import math

UNPRICED = "unpriced"


def decimals(value: float) -> int:
    """Decimals that keep two significant digits of ``value`` (at least 2, as for cents)."""
    if value == 0 or not math.isfinite(value):
        return 2
    return max(2, 1 - math.floor(math.log10(abs(value))))


def plain(value: float | None) -> str:
    """A machine-readable decimal without exponent (CSV): ``0.0000042``; "" for no value."""
    if value is None:
        return ""
    text = f"{value:.{decimals(value) + 2}f}".rstrip("0")  # two more digits: exports are for sums
    return text + "0" if text.endswith(".") else text


def usd(value: float | None) -> str:
    """``$0.0000042``; "-" for no value."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{decimals(value)}f}"


def cost(value: float | None, unpriced: int | bool = 0) -> str:
    """A cost that may be unknown: "unpriced" when nothing counted has a price (``value`` None or 0 with
    unpriced flows), ``$0.12 + 3 unpriced`` for a sum that leaves some out, "-" when nothing was counted."""
    count = int(unpriced)
    if value is None or (count and value == 0):
        return UNPRICED if count else "-"
    if count and not isinstance(unpriced, bool):
        return f"{usd(value)} + {count} unpriced"
    return usd(value)
