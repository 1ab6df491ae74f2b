"""The wheel lists its packages by name (pyproject.toml): every package of the source tree must be there,
or an installed Corral fails at import (the wheel e2e test finds it too, but only minutes in)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_package_is_in_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("addon", "providers") for init in (ROOT / top).rglob("__init__.py")}
    assert found - listed == set(), "add them to [tool.setuptools] packages"
