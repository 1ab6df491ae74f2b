"""The `corral start --workers` supervisor (addon/workers.py) with stand-in workers: tiny Python
processes that exit, crash or wait for SIGTERM as told, so its decisions are tested without starting
gateways. The real thing (two gateway workers on one port) is tests/e2e/test_workers.py."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from addon import workers
from addon.cli.main import main
from tests.support.waiting import until

# A stand-in worker: logs "<worker> start" to LOG, then does what ACT says (per worker number).
WORKER = """
import os, signal, sys, time
log, act = sys.argv[1], sys.argv[2]
me = os.environ["CORRAL_WORKER"]
def note(what):
    with open(log, "a") as f:
        f.write(f"{me} {what}\\n")
def on_term(*_):
    note("terminated")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("start")
runs = sum(1 for line in open(log) if line == f"{me} start\\n")
what = dict(item.split("=") for item in act.split(","))[me]
if what == "fail-when-2-runs":  # fail at start, once the other worker is up (its SIGTERM handler set)
    deadline = time.monotonic() + 20
    while "2 start\\n" not in open(log).read() and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(3)
if what == "crash-once" and runs == 1:
    sys.exit(1)
if what in ("exit", "crash-once"):
    sys.exit(0)
while True:
    signal.pause()
"""


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def supervise(tmp_path: Path, act: str, grace: float) -> tuple[int, list[str]]:
    log = tmp_path / "log"
    log.touch()
    code = workers.Supervisor(2, ["-c", WORKER, str(log), act], startup_grace=grace, command=[sys.executable]).run()
    return code, log.read_text().splitlines()


def test_a_worker_failing_at_start_stops_every_worker_with_its_code(tmp_path, capsys, restore_signals) -> None:
    code, log = supervise(tmp_path, "1=fail-when-2-runs,2=wait", grace=60)
    assert code == 3
    assert "2 terminated" in log  # the healthy worker was stopped, not left behind
    assert "worker 1 failed to start (exit 3); stopping" in capsys.readouterr().out


def test_a_worker_crashing_in_service_is_restarted(tmp_path, capsys, restore_signals) -> None:
    code, log = supervise(tmp_path, "1=crash-once,2=exit", grace=0)
    assert code == 0
    assert log.count("1 start") == 2  # crashed after the grace: started again
    out = capsys.readouterr().out
    assert "worker 1 exited with 1; restarting it" in out and "worker 2 stopped" in out


def test_sigterm_to_the_supervisor_reaches_every_worker(tmp_path, restore_signals) -> None:
    log = tmp_path / "log"

    def terminate_once_both_run() -> None:
        try:
            until(lambda: log.exists() and {"1 start", "2 start"} <= set(log.read_text().splitlines()), timeout=20)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_both_run, daemon=True).start()
    code, lines = supervise(tmp_path, "1=wait,2=wait", grace=60)
    assert code == 0
    assert {"1 terminated", "2 terminated"} <= set(lines)


def test_workers_refuse_a_port_already_in_use(tmp_path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["start", "--workers", "2", "--listen", f"127.0.0.1:{port}",
                     "--db", f"sqlite:///{tmp_path / 'c.db'}", "--certs", str(tmp_path / "certs")])
    assert code == 2 and "cannot listen" in capsys.readouterr().out
