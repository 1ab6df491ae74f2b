"""Corral as a pip-installed package, away from the checkout: the wheel is built from this checkout and
installed into a fresh virtualenv, and its `corral` command (run in a temporary directory, HOME
pointing at a temporary one) starts, finds its catalog, records a real request into the per-user
database, shows it with `corral flows`, and serves the viewer's pages.

Offline: the wheel is built with this venv's setuptools (--no-build-isolation, --no-index) and
installed --no-deps --no-index. The new virtualenv sees this venv's site-packages through a .pth
file, minus Corral's own (editable) install, so `addon` can only come from the wheel.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import REPO_ROOT, Gateway, free_port
from tests.support.mock_upstream import MockUpstream

# Checkout contents the build does not read (and must not depend on).
_NOT_COPIED = {".git", "data", "certs", "build", "tests", "bench", "docs", "scripts"}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _left_out(directory: str, names: list[str]) -> set[str]:
    top = Path(directory) == REPO_ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
            or (top and (n in _NOT_COPIED or n.startswith(".venv")))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the checkout (a build writes build/ and *.egg-info next to the sources)."""
    src = tmp_path_factory.mktemp("src") / "corral"
    shutil.copytree(REPO_ROOT, src, ignore=_left_out)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)])
    [built] = out.glob("corral-*.whl")
    return built


def _corral_own_entries() -> set[str]:
    """Top-level names in this venv's site-packages that belong to Corral's own install."""
    try:
        files = importlib.metadata.distribution("corral").files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {f.parts[0] for f in files if f.parts[0] != ".."}


@dataclass
class Installed:
    root: Path  # the virtualenv
    site: Path  # its site-packages
    home: Path  # HOME of every command run from it
    env: dict[str, str]

    @property
    def data(self) -> Path:
        """Where an installed Corral keeps its database and CA by default (addon/paths.py)."""
        return self.home / ".local" / "share" / "corral"

    def corral(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return run([str(self.root / "bin" / "corral"), *args], cwd=cwd, env=self.env)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)])
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # The dependencies: this venv's site-packages, one symlink per entry, Corral's own left out.
    deps = base / "deps"
    deps.mkdir()
    own = _corral_own_entries()
    for directory in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
        for entry in Path(directory).iterdir():
            if entry.name not in own and entry.name != "__pycache__" and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (site / "corral-test-deps.pth").write_text(f"{deps}\n")
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XDG_DATA_HOME")}
    env["HOME"] = str(home)
    return Installed(venv, site, home, env)


def test_the_wheel_ships_the_viewer_and_the_catalog(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    web = {str(p.relative_to(REPO_ROOT / "web")) for p in (REPO_ROOT / "web").rglob("*") if p.is_file()}
    assert "index.html" in web
    assert {n.removeprefix("addon/web/") for n in names if n.startswith("addon/web/")} == web
    assert {"providers/catalog.toml", "addon/corral.py", "addon/storage/migrations.py",
            "addon/node/corral-preload.cjs"} <= names  # the preload `corral run` hands to Node.js
    assert not any(n.startswith(("web/", "tests/", "bench/")) for n in names)


class InstalledGateway(Gateway):
    """A gateway of the installed package run with nothing but defaults: ./corral.toml, the per-user
    database and CA, and ``command`` (without --db or --certs)."""

    def __init__(self, installed: Installed, workdir: Path, upstream: str, port: int, command: list[str],
                 viewer: str = "") -> None:
        self.installed, self.argv = installed, command
        super().__init__(upstream, db=f"sqlite:///{installed.data / 'corral.db'}", workdir=workdir, port=port,
                         config={"viewer": {"listen": viewer}})

    def command(self) -> list[str]:
        return self.argv

    def start(self, timeout: float = 60.0, cwd: Path | None = None, env: dict[str, str] | None = None) -> Gateway:
        return super().start(timeout, cwd=cwd or self.workdir, env=env or self.installed.env)


def call_openai(gw: Gateway, tag: str) -> dict:
    """One recorded chat completion through ``gw``; its row, once written."""
    exchange = corpus.load("openai-chat-json-1")
    try:
        reply = httpx.post(gw.base("openai") + "/v1/chat/completions", json=exchange["request"]["body"], timeout=20,
                           headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag,
                                    "authorization": "Bearer sk-wheel-test"})
    except httpx.HTTPError as e:
        raise AssertionError(f"{e!r}; gateway log:\n{gw.log()}") from e
    assert reply.status_code == 200, reply.text
    row = gw.row_for(tag)  # read from the per-user database: no --db was given
    assert row["input_tokens"] == exchange["expect"]["input_tokens"]
    return row


def test_installed_corral_records_and_serves_outside_the_checkout(
    installed: Installed, fresh_mock: MockUpstream, tmp_path: Path, tag: str
) -> None:
    imported = run([str(installed.root / "bin" / "python"), "-c", "import addon, providers; print(addon.__file__); "
                    "print(providers.__file__)"], cwd=tmp_path, env=installed.env).stdout.split()
    assert all(Path(f).is_relative_to(installed.site) for f in imported), imported
    shown = installed.corral("paths", cwd=tmp_path).stdout
    assert f"database:  sqlite:///{installed.data / 'corral.db'}" in shown
    assert f"certs:     {installed.data / 'certs'}" in shown

    viewer = f"127.0.0.1:{free_port()}"
    port = free_port()
    gw = InstalledGateway(installed, tmp_path, fresh_mock.url, port, viewer=viewer,
                          command=[str(installed.root / "bin" / "corral"), "start", "--listen", f"127.0.0.1:{port}"])
    gw.start()
    try:
        recorded = call_openai(gw, tag)
        rows = [json.loads(line) for line in installed.corral("flows", "--json", cwd=tmp_path).stdout.splitlines()]
        [row] = [r for r in rows if r["id"] == recorded["id"]]
        assert (row["provider"], row["status"], row["mode"]) == ("openai", 200, "reverse")

        index = httpx.get(f"http://{viewer}/", timeout=10)
        assert index.status_code == 200 and index.content == (REPO_ROOT / "web" / "index.html").read_bytes()
        assert httpx.get(f"http://{viewer}/vendor/uplot/uPlot.iife.min.js", timeout=10).status_code == 200
    finally:
        gw.stop()
    assert (installed.data / "certs" / "mitmproxy-ca.pem").is_file()
    assert "Traceback" not in gw.log(), gw.log()


def test_installed_script_loads_into_mitmdump(installed: Installed, fresh_mock: MockUpstream, tmp_path: Path,
                                              tag: str) -> None:
    """The README's ``mitmdump -s "$(corral paths --script)"`` (mitmdump is run through its module here:
    only Corral's own command is installed into this virtualenv)."""
    script = Path(installed.corral("paths", "--script", cwd=tmp_path).stdout.strip())
    assert script == installed.site / "addon" / "corral.py"
    port = free_port()
    mitmdump = [str(installed.root / "bin" / "python"), "-c",
                "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())",
                "-s", str(script), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={installed.data / 'certs'}", "--set", "connection_strategy=lazy"]
    gw = InstalledGateway(installed, tmp_path, fresh_mock.url, port, command=mitmdump)
    gw.start()
    try:
        call_openai(gw, tag)
    finally:
        gw.stop()
    assert "error in script" not in gw.log() and "Traceback" not in gw.log(), gw.log()
