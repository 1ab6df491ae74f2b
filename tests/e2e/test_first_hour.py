"""The first hour of a new user: `corral start` refuses a bad setting in one line before it claims to
serve, says how to pick another port, takes a plain database path, prints its viewer's URL once it
serves; /_corral/health and /_corral/ready answer probes without recording them; `corral flows --follow`
works in a terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import sqlite3
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import CORRAL, REPO_ROOT, Gateway, free_port
from tests.support.waiting import until


def start(tmp_path: Path, *args: str, config: str | None = None, cwd: Path = REPO_ROOT,
          listen: str | None = None) -> subprocess.CompletedProcess[str]:
    """`corral start` expected to refuse to run (it would otherwise serve until the timeout)."""
    cmd = [*CORRAL, "start", "--listen", listen or f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "c.db"),
           "--certs", str(tmp_path / "certs"), "--set", "corral_viewer_listen="]
    if config is not None:
        (tmp_path / "corral.toml").write_text(config)
        cmd += ["--config", str(tmp_path / "corral.toml")]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def refused_in_one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1, lines  # in particular no "serving on" before it
    return lines[0]


@pytest.mark.parametrize(("config", "args", "expected"), [
    ('[cache]\nttl = "one day"\n', (), '{file}: [cache] ttl: expected an integer, got "one day" (a string)'),
    ("[cache]\ntll = 5\n", (), "{file}: [cache] tll: unknown setting (did you mean [cache] ttl?)"),
    ('[providers.openia]\nupstream = "http://127.0.0.1:9"\n', (),
     "{file}: [providers.openia]: unknown provider 'openia' (did you mean 'openai'?); "
     "a provider of your own needs custom = true (and an upstream)"),
    ('[[limits]]\nname = "rpm"\nprovider = "opnai"\nrequests_per_minute = 5\n', (),
     "{file}: [[limits]] 'rpm' provider: unknown provider 'opnai' (did you mean 'openai'?); see `corral providers`"),
    ('[cache]\nproviders = ["opnai"]\n', (),
     "{file}: [cache] providers: unknown provider 'opnai' (did you mean 'openai'?); see `corral providers`"),
    ('[gateway]\nworkers = "two"\n', (), "{file}: [gateway] workers: expected a number, got 'two'"),
    ('[state]\non_failure = "maybe"\n', (), """{file}: [state] on_failure: expected "open" or "closed", got 'maybe'"""),
    (None, ("--set", "corral_cache_tl=5"), "--set corral_cache_tl=5: unknown option (did you mean corral_cache_ttl?)"),
    (None, ("--set", "corral_cache_ttl=soon"), "--set corral_cache_ttl=soon: expected an integer, got 'soon'"),
])
def test_a_bad_setting_is_one_line_naming_file_key_expected_and_given(
    tmp_path: Path, config: str | None, args: tuple[str, ...], expected: str,
) -> None:
    line = refused_in_one_line(start(tmp_path, *args, config=config))
    assert line == "corral: " + expected.format(file=tmp_path / "corral.toml")


def test_custom_provider_with_custom_true_is_accepted(tmp_path: Path) -> None:
    config = '[providers.my-llm]\ncustom = true\nupstream = "http://127.0.0.1:9"\n'
    (tmp_path / "corral.toml").write_text(config)
    gw = Gateway(None, workdir=tmp_path, config={"providers.my-llm": {"custom": True, "upstream": "http://127.0.0.1:9"}})
    with gw:
        resp = httpx.post(gw.base("my-llm") + "/v1/chat/completions", json={"model": "m"}, timeout=20)
        assert resp.status_code == 502  # routed to its (dead) upstream, not refused as an unknown route


def test_missing_config_file_is_named_as_given_resolved(tmp_path: Path) -> None:
    line = refused_in_one_line(start(tmp_path, "--config", "missing.toml", cwd=tmp_path))
    assert line == f"corral: config file not found: {tmp_path / 'missing.toml'}"


def test_port_in_use_says_how_to_choose_another_in_corral_words(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused_in_one_line(start(tmp_path, listen=f"127.0.0.1:{port}"))
    assert line == (f"corral: cannot listen on 127.0.0.1:{port}: address already in use; choose another address "
                    "with --listen HOST:PORT or [gateway] listen in corral.toml")
    assert "--mode" not in line


def test_plain_database_path_is_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "plain" / "record.db"
    with Gateway(None, db=str(path), workdir=tmp_path) as gw:
        httpx.post(gw.url + "/nope/v1/chat/completions", content=b"{}", timeout=20)  # recorded: unknown route
        until(lambda: "recording to" in gw.log())
        assert f"corral: recording to sqlite:///{path}" in gw.log()

        def recorded() -> list:
            with sqlite3.connect(path) as db:
                return db.execute("SELECT path FROM flows").fetchall()
        assert until(recorded) == [("/nope/v1/chat/completions",)]


def test_banner_comes_once_serving_and_names_the_viewer(gateway: Gateway) -> None:
    log = until(lambda: "corral: viewer on" in gateway.log() and gateway.log())
    lines = [line for line in log.splitlines() if line.startswith("corral: ")]
    assert lines[0] == f"corral: serving on {gateway.url}  (reverse mode: {gateway.url}/<provider>/...)"
    assert f"corral: viewer on {gateway.viewer_url}" in lines
    assert httpx.get(gateway.viewer_url, timeout=20).status_code == 200


def test_health_and_ready_answer_json_and_are_never_recorded(gateway: Gateway) -> None:
    health = httpx.get(gateway.url + "/_corral/health", timeout=20)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = httpx.get(gateway.url + "/_corral/ready", timeout=20)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "state": "ok"}}
    # A probe after them that is recorded: once it is there, the probes would be too.
    httpx.post(gateway.url + "/_corral-after-probes/x", content=b"{}", timeout=20)
    until(lambda: gateway.query("SELECT id FROM flows WHERE path = ?", ("/_corral-after-probes/x",)))
    assert gateway.query("SELECT id FROM flows WHERE path LIKE ?", ("/_corral/%",)) == []


def test_flows_follow_in_a_terminal_prints_new_flows_as_they_are_recorded(gateway: Gateway) -> None:
    """`corral flows --follow` on a pty, as a user runs it: the header at once, a flow made afterwards
    appears without a restart, Ctrl-C (SIGINT) ends it quietly."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([*CORRAL, "flows", "--follow", "--status", "404", "--limit", "0", "--db", gateway.db,
                             "--config", str(gateway.config_path)], cwd=REPO_ROOT, stdin=secondary,
                            stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    seen = b""

    def read_until(text: bytes) -> bytes:
        nonlocal seen

        def arrived() -> bool:
            nonlocal seen
            while select.select([primary], [], [], 0)[0]:
                try:
                    seen += os.read(primary, 4096)
                except OSError:  # the process ended and the pty closed
                    break
            return text in seen
        until(arrived, timeout=30, message=f"{text!r} never appeared; got {seen!r}")
        return seen

    try:
        read_until(b"retries  error")
        mark = "f" + uuid.uuid4().hex[:8]
        httpx.post(f"{gateway.url}/{mark}/v1/chat/completions", content=b"{}", timeout=20)
        out = read_until(mark.encode()).decode()
        line = next(line for line in out.splitlines() if mark in line)
        assert " 404 " in line and line.endswith("…") and line == line.rstrip()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        assert b"Traceback" not in seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
