"""Draw the main ratios of every bench run over commits: bench/history.jsonl -> bench/history.png.

Runs in the bench's own environment (bench/.venv-plot, matplotlib), not Corral's:
    bench/.venv-plot/bin/python bench/plot.py bench/history.jsonl bench/history.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The ratios drawn, and the target line each is held to (issue 23).
SERIES = {
    "corral/portkey req/s c=1": 1.0,
    "corral/portkey req/s c=64": 1.0,
    "corral-w2/portkey req/s c=64": 1.3,
    "corral/portkey CPU per req c=64": 1.0,
    "corral/mitmdump CPU per req c=64": None,
}


def load(path: Path) -> list[dict]:
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs


def main(src: str, dst: str) -> int:
    runs = load(Path(src)) if Path(src).exists() else []
    if not runs:
        print(f"plot: no runs in {src}")
        return 0
    labels = [f"{r.get('commit') or '?'}\n{r['started_at'][4:8]} {r['started_at'][9:13]}"
              + ("\nquick" if r.get("kind") == "quick" else "") for r in runs]
    x = list(range(len(runs)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.9 * len(runs) + 3), 7), sharex=True)
    for name, target in SERIES.items():
        ys = [r.get("ratios", {}).get(name) for r in runs]
        ax = bottom if "CPU" in name else top
        line, = ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", label=name)
        if target is not None:
            ax.axhline(target, color=line.get_color(), linestyle=":", linewidth=1)
    top.set_ylabel("req/s ratio (higher is better)")
    bottom.set_ylabel("CPU ms/request ratio (lower is better)")
    top.set_title("Corral vs Portkey and mitmdump, per bench run (dotted: target)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    bottom.set_xticks(x, labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"plot: {len(runs)} runs -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:3] if len(sys.argv) >= 3 else ("bench/history.jsonl", "bench/history.png"))))
