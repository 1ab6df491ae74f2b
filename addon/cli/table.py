"""The plain-text tables of `corral flows`, `stats`, `cache stats`, `limits` and `providers`."""

from __future__ import annotations

from collections.abc import Sequence

from addon.cli.text import printable


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, each as wide as its widest cell; no trailing blanks.
    Cells come from the record, i.e. from clients: terminal control characters are escaped."""
    headers = [printable(h) for h in headers]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip() for line in lines)
