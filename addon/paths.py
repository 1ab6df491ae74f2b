"""Where Corral keeps its files, resolved the same way by every command whatever the working directory.

Running from a checkout (the repo that holds pyproject.toml next to addon/), files live inside it:
``data/corral.db`` and ``certs/``. Installed elsewhere, they live in per-user directories
(``$XDG_DATA_HOME/corral``, default ``~/.local/share/corral``). The viewer's static files are the
checkout's ``web/``, which a wheel installs as ``addon/web/`` (pyproject.toml's package-dir).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    root = PACKAGE_ROOT
    if (root / "pyproject.toml").is_file() and (root / "addon").is_dir() and (root / "providers").is_dir():
        return root
    return None


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"


def data_dir() -> Path:
    root = checkout_root()
    return root / "data" if root else user_data_dir()


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'corral.db'}"


def default_certs_dir() -> Path:
    root = checkout_root()
    return root / "certs" if root else user_data_dir() / "certs"


def web_dir() -> Path:
    root = checkout_root()
    return root / "web" if root else Path(__file__).resolve().parent / "web"


def mitmproxy_script() -> Path:
    """The file to load with ``mitmdump -s`` / ``mitmweb -s``."""
    return Path(__file__).resolve().parent / "corral.py"


def default_config_file() -> Path | None:
    """corral.toml in the working directory, else in the checkout root; None when there is none."""
    for candidate in (Path.cwd() / "corral.toml", (checkout_root() or Path("/nonexistent")) / "corral.toml"):
        if candidate.is_file():
            return candidate
    return None
