"""The gateway under test: a real `corral start` subprocess on a free loopback port.

Tests talk to it over real sockets with the real SDKs, and read what it recorded straight from the
database (rows are written by a background thread in batches, so reads poll until rows appear).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playhouse import db_url

from tests.support import pgdb

REPO_ROOT = Path(__file__).resolve().parents[2]
CORRAL = [sys.executable, "-m", "addon.cli"]

# Catalog providers whose upstream the tests point at the mock.
MOCKED_PROVIDERS = (
    "openai", "azure", "anthropic", "gemini", "groq", "mistral", "cohere", "deepseek",
    "openrouter", "together", "ollama", "bedrock", "xai", "fireworks",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_REFUSING: list[socket.socket] = []  # kept open until the test process ends


def refused_port() -> int:
    """A loopback port that refuses every connection for the rest of the test run: bound by this process
    and never listened on. A port ``free_port()`` found free may be taken a moment later by another
    worker's gateway or mock (``make test`` runs several at once); this one cannot be."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 20.0) -> None:
    """Until something accepts on loopback ``port`` (a gateway's viewer binds its port after the proxy's)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on port {port} after {timeout:g} s") from None
            time.sleep(0.02)


def toml_value(value: Any) -> str:
    return json.dumps(value)  # JSON scalars and arrays of them are valid TOML


def write_config(path: Path, upstream: str | None, extra: dict[str, Any] | None = None) -> None:
    """corral.toml pointing every mocked provider at ``upstream``, plus ``extra`` sections
    (a list value is an array of tables: ``{"limits": [{...}, {...}]}`` -> ``[[limits]]``)."""
    sections: dict[str, dict[str, Any]] = {}
    arrays = {name: tables for name, tables in (extra or {}).items() if isinstance(tables, list)}
    extra = {name: table for name, table in (extra or {}).items() if not isinstance(table, list)}
    if upstream:
        for name in MOCKED_PROVIDERS:
            sections[f"providers.{name}"] = {"upstream": upstream}
    for name, table in (extra or {}).items():
        sections.setdefault(name, {}).update(table)
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    for name, tables in arrays.items():  # arrays of tables: [[limits]] ...
        for table in tables:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
    path.write_text("\n".join(lines))


class Gateway:
    def __init__(
        self,
        upstream: str | None,
        db: str | None = None,
        config: dict[str, dict[str, Any]] | None = None,
        sets: list[str] | None = None,
        workdir: Path | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="corral-test-"))
        self.port = port or free_port()
        if db is None:  # CORRAL_TEST_DB=postgres: a fresh PostgreSQL database per gateway
            db = pgdb.create_database() if pgdb.backend() == "postgres" else f"sqlite:///{self.workdir / 'corral.db'}"
        self.db = db
        self.config_path = self.workdir / "corral.toml"
        config = dict(config or {})
        if "viewer" not in config and not any("corral_viewer_listen" in spec for spec in sets or []):
            # Test gateways run side by side: none of them claims the viewer's default port.
            config["viewer"] = {"listen": ""}
        write_config(self.config_path, upstream, config)
        self.sets = sets or []
        self.args = args or []  # more `corral start` arguments, e.g. ["--workers", "2"]
        self.log_path = self.workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader = None

    # --- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [*CORRAL, "start", "--listen", f"127.0.0.1:{self.port}", "--db", self.db,
               "--config", str(self.config_path), "--certs", str(self.workdir / "certs")]
        for spec in self.sets:
            cmd += ["--set", spec]
        return cmd + self.args

    def start(self, timeout: float = 20.0, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> Gateway:
        env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command(), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not listen within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return code

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def peak_rss(self) -> int:
        """The gateway process's peak resident set size in bytes (VmHWM, Linux /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- addressing ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base(self, prefix: str) -> str:
        return f"{self.url}/{prefix.strip('/')}"

    # --- the record ------------------------------------------------------------------------

    def _db(self):
        if self._reader is None:
            self._reader = db_url.connect(self.db)
        return self._reader

    @property
    def is_postgres(self) -> bool:
        return not self.db.startswith("sqlite:")

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts. Write placeholders as ``?``: they become the driver's (``%s``)."""
        db = self._db()
        if params and db.param != "?":
            sql = sql.replace("?", db.param)
        cursor = db.execute_sql(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows(self) -> list[dict[str, Any]]:
        try:
            return self.query("SELECT * FROM flows ORDER BY started_at")
        except Exception:
            return []

    def wait_rows(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Rows matching ``predicate`` once at least ``count`` exist (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [r for r in self.rows() if predicate(r)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} matching rows, found {len(found)}; log:\n{self.log()[-3000:]}")

    def row_for(self, tag: str, timeout: float = 10.0) -> dict[str, Any]:
        """The one row whose request carried header ``x-test-id: <tag>``."""
        return self.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 1, timeout)[0]


def new_tag() -> str:
    return uuid.uuid4().hex
