"""``pytest --corral-fixtures=DIR``: the app's tests talk to a Corral gateway that replays recorded LLM
exchanges, so they run offline, free and deterministic.

Registered through the ``pytest11`` entry point and inert unless the option is given. For the session
it starts ``corral start`` on a free loopback port with the fixture set in ``DIR`` and points the
process's SDKs at it: the base-URL variables the OpenAI, Anthropic and google-genai SDKs read (reverse
mode), and the proxy and CA variables for every other client (explicit mode, as ``corral env``).
``--corral-mode=record`` (or ``replay-or-record``) records against the real providers instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from addon import ca

MODES = ("replay", "record", "replay-or-record")
STARTUP_TIMEOUT = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("corral", "LLM fixtures through a Corral gateway")
    group.addoption("--corral-fixtures", metavar="DIR", help="fixture set directory (or .yaml file): replay it")
    group.addoption("--corral-mode", choices=MODES, default="replay", help="replay (default), record, replay-or-record")
    group.addoption("--corral-config", metavar="FILE",
                    help="corral.toml for the gateway (e.g. the upstreams to record from)")
    group.addoption("--corral-pace", choices=("fast", "original"), default="fast", help="stream replay pace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_environment(url: str, certs: Path) -> dict[str, str]:
    """What the SDKs and HTTP clients of the test process read: base URLs, else the proxy and its CA
    (the bundle: public roots plus Corral's CA, so hosts Corral tunnels untouched still verify)."""
    files = ca.CaFiles(certs)
    bundle, cert = str(files.bundle), str(files.cert)
    return {
        "OPENAI_BASE_URL": f"{url}/openai/v1",
        "ANTHROPIC_BASE_URL": f"{url}/anthropic",
        "GOOGLE_GEMINI_BASE_URL": f"{url}/gemini",
        "HTTPS_PROXY": url, "https_proxy": url, "HTTP_PROXY": url, "http_proxy": url,
        "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1",
        "SSL_CERT_FILE": bundle, "REQUESTS_CA_BUNDLE": bundle, "CURL_CA_BUNDLE": bundle,
        "NODE_EXTRA_CA_CERTS": cert,
    }


class FixtureGateway:
    def __init__(self, fixtures: str, mode: str, pace: str, config: str | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="corral-fixtures-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "gateway.log"
        self.cmd = [sys.executable, "-m", "addon.cli", "start", "--listen", f"127.0.0.1:{self.port}",
                    "--db", f"sqlite:///{self.workdir / 'corral.db'}", "--certs", str(self.workdir / "certs"),
                    "--config", str(Path(config).resolve()) if config else os.devnull,
                    "--mode", mode, "--fixtures", fixtures,
                    "--set", f"corral_fixtures_pace={pace}", "--set", "corral_viewer_listen="]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise pytest.UsageError(f"corral gateway exited:\n{self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise pytest.UsageError(f"corral gateway did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a recording gateway writes its set before it exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"


@pytest.fixture(scope="session", autouse=True)
def corral_gateway(request: pytest.FixtureRequest) -> Iterator[FixtureGateway | None]:
    """The session's fixture gateway (None without --corral-fixtures); its environment is in force."""
    fixtures = request.config.getoption("--corral-fixtures")
    if not fixtures:
        yield None
        return
    gw = FixtureGateway(str(Path(fixtures).resolve()), request.config.getoption("--corral-mode"),
                        request.config.getoption("--corral-pace"), request.config.getoption("--corral-config"))
    gw.start()
    ca.write_bundle(ca.CaFiles(gw.certs))  # the gateway made its CA before listening
    saved = dict(os.environ)
    os.environ.update(client_environment(gw.url, gw.certs))
    try:
        yield gw
    finally:
        os.environ.clear()
        os.environ.update(saved)
        gw.stop()
