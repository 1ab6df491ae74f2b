"""The reliability report (docs/reliability.md) is made from the tests themselves.

A test that proves how Corral handles a fault or a kind of bad input says so with ``@reliability(...)``;
``python -m tests.support.reliability`` prints the table, and tests/unit/test_reliability_doc.py fails when
docs/reliability.md differs from it, so the report can never claim a behaviour no test proves.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Entry:
    area: str
    kind: str
    client_sees: str
    recorded: str
    test: str


REGISTRY: list[Entry] = []
AREAS = ["load and shutdown", "upstream faults", "bad client input", "secrets", "isolation", "file safety"]


def reliability(area: str, kind: str, client_sees: str, recorded: str) -> Callable[[F], F]:
    assert area in AREAS, area

    def mark(func: F) -> F:
        where = func.__module__.removeprefix("tests.").replace(".", "/")  # e.g. e2e/test_load
        REGISTRY.append(Entry(area, kind, client_sees, recorded, f"{where}::{func.__name__}"))
        return func

    return mark


def collect() -> list[Entry]:
    tests_dir = Path(__file__).resolve().parent.parent
    for info in pkgutil.walk_packages([str(tests_dir)], prefix="tests."):
        if info.name.rpartition(".")[2].startswith("test_"):
            try:
                importlib.import_module(info.name)
            except pytest.skip.Exception:
                # Skipped at import on this machine (test_viewer_browser without chromium). Letting it
                # propagate skipped the doc check itself, so a stale report went unnoticed there.
                pass
    unique = {(e.area, e.kind, e.test): e for e in REGISTRY}
    return sorted(unique.values(), key=lambda e: (AREAS.index(e.area), e.kind.lower(), e.test))


def render() -> str:
    lines = [
        "# Reliability and security report",
        "",
        "Generated from the tests (`python -m tests.support.reliability > docs/reliability.md`);",
        "`tests/unit/test_reliability_doc.py` fails when this file and the tests disagree.",
        "",
    ]
    for area in AREAS:
        entries = [e for e in collect() if e.area == area]
        if not entries:
            continue
        lines += [
            f"## {area.capitalize()}",
            "",
            "| fault or input | client sees | recorded | test |",
            "|---|---|---|---|",
        ]
        lines += [f"| {e.kind} | {e.client_sees} | {e.recorded} | `{e.test}` |" for e in entries]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    # Run as a script this module is __main__; the tests register with the importable one.
    from tests.support import reliability as _imported

    print(_imported.render(), end="")
