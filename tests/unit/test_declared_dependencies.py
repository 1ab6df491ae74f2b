"""pyproject.toml's [project] dependencies are exactly what addon/ and providers/ import.

A third-party import that is not declared works in the dev .venv (something else pulled it in) and
breaks a `pip install` the day that something stops depending on it; a declared dependency nothing
imports (a test-only library) is installed on every user's machine for nothing.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"addon", "providers"}
# Declared but never imported by name: another dependency loads it.
USED_WITHOUT_IMPORT = {"psycopg2-binary"}  # peewee's playhouse imports psycopg2 for postgresql:// URLs
# Files only their host program loads: the pytest plugin runs inside pytest (the pytest11 entry point).
HOSTED = {"addon/pytest_plugin.py": {"pytest"}}
# Standard library from a later Python than this one (imported under a version check).
LATER_STDLIB = {"compression"}  # Python 3.14: compression.zstd


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    found = re.match(r"[A-Za-z0-9._-]+", spec)
    assert found, spec
    return normalise(found.group())


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> set[str]:
    return {requirement_name(spec) for spec in project()["dependencies"]}


def feature_extras() -> set[str]:
    """What the optional features' extras declare (``pip install corral[bedrock]``): imported only when the
    feature is turned on. The ``test`` extra is not one."""
    extras = project().get("optional-dependencies", {})
    return {requirement_name(spec) for name, specs in extras.items() if name != "test" for spec in specs}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the files that import it, over every absolute import in the shipped code."""
    found: dict[str, set[str]] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    hosted = top in HOSTED.get(str(path.relative_to(ROOT)), set())
                    if top not in sys.stdlib_module_names | LATER_STDLIB and top not in FIRST_PARTY and not hosted:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_walk_sees_the_known_imports() -> None:
    imports = third_party_imports()
    assert {"mitmproxy", "peewee", "playhouse", "tornado", "certifi", "limits"} <= set(imports)
    assert "json" not in imports and "addon" not in imports


def test_every_third_party_import_is_a_declared_dependency() -> None:
    owners = importlib.metadata.packages_distributions()
    deps = declared() | feature_extras()
    undeclared = {}
    for module, files in third_party_imports().items():
        dists = {normalise(d) for d in owners.get(module, [])}
        if not dists & deps:
            undeclared[module] = (sorted(dists) or ["<not installed>"], sorted(files))
    assert not undeclared, f"imported but not in [project] dependencies (module: distributions, files): {undeclared}"


def test_every_declared_dependency_is_imported() -> None:
    owners = importlib.metadata.packages_distributions()
    used = {normalise(d) for module in third_party_imports() for d in owners.get(module, [])}
    unused = declared() - used - USED_WITHOUT_IMPORT
    assert not unused, f"declared but imported by neither addon/ nor providers/ (a test extra?): {sorted(unused)}"


def test_no_extra_repeats_a_core_dependency() -> None:
    core = declared()
    for extra, specs in project().get("optional-dependencies", {}).items():
        repeated = {requirement_name(spec) for spec in specs} & core
        assert not repeated, f"extra [{extra}] repeats core dependencies {sorted(repeated)}"
