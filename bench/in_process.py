"""The budgets' features measured in process, beside the side-by-side pairs: each script drives the
feature's own hooks with ``time.process_time()`` (bench/keys_check.py, bench/unified_stream.py), so a
busy machine moves the figure little, where a pair of two gateway processes at 40 requests/s differs
by up to ±0.5 ms with no feature at all (the hardening row, same code as the default chain, shows it).
``make bench`` runs them after the systems have stopped and prints both figures per budget.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# budget system -> (module, the line that holds the figure, iterations in quick mode)
SCRIPTS = {
    "corral-keys": ("bench.keys_check", re.compile(r"^whole key path .*?: ([0-9.]+) µs CPU per request"), 10_000),
    "corral-unified": ("bench.unified_stream", re.compile(r"^unified over native, .*?: ([0-9.]+) µs CPU per request"),
                       1_000),
}


def measure(python: str, quick: bool = False, timeout: float = 300.0) -> dict[str, dict]:
    """Per budget system: {"ms": figure or None, "command": how to rerun it, "output": the script's lines}.
    Quick mode runs fewer iterations (each script takes the least CPU per call over batches)."""
    out: dict[str, dict] = {}
    for name, (module, pattern, quick_n) in SCRIPTS.items():
        args = ["-n", str(quick_n)] if quick else []
        command = " ".join([".venv/bin/python -m", module, *args])
        try:
            run = subprocess.run([python, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                                 timeout=timeout)
            lines = run.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError) as e:
            lines = [f"did not run: {e}"]
        value = next((float(m.group(1)) for line in lines if (m := pattern.search(line))), None)
        out[name] = {"ms": None if value is None else round(value / 1000, 4), "command": command, "output": lines}
    return out
