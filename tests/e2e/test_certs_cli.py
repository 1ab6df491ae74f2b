"""`corral certs` / `corral env` / `corral start` agree on one CA directory, whatever the cwd and
whichever command runs first; upstream TLS is verified unless [gateway] upstream_ca says otherwise."""

from __future__ import annotations

import hashlib
import os
import shlex
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import CORRAL, REPO_ROOT, Gateway, new_tag
from tests.support.mock_upstream import MockUpstream


def corral(*args: str, cwd: Path) -> str:
    # Run from outside the checkout: only PYTHONPATH finds the code, nothing depends on the cwd.
    proc = subprocess.run([*CORRAL, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_env_certs_and_start_share_the_ca_from_the_config(tmp_path: Path) -> None:
    conf_dir, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    conf_dir.mkdir(), elsewhere.mkdir()
    config = conf_dir / "corral.toml"
    config.write_text('[gateway]\ncerts = "my-ca"\nlisten = "127.0.0.1:18123"\n')
    ca_dir = conf_dir / "my-ca"

    # `corral env` first: it creates the CA (relative to the config file, not the cwd).
    lines = corral("env", "--config", str(config), cwd=elsewhere).splitlines()
    env = {line.split("=", 1)[0].removeprefix("export "): shlex.split(line.split("=", 1)[1])[0] for line in lines}
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:18123"
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca_dir / "mitmproxy-ca-cert.pem")
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"]
    assert (ca_dir / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    ca_pem = (ca_dir / "mitmproxy-ca-cert.pem").read_text()
    assert bundle.rstrip().endswith(ca_pem.rstrip()) and bundle.count("BEGIN CERTIFICATE") > 10  # roots + CA
    ssl.create_default_context(cafile=env["SSL_CERT_FILE"])  # a valid trust store

    # `corral certs` from yet another cwd: same CA, fingerprint matches the file.
    out = corral("certs", "--config", str(config), "--bundle", str(tmp_path / "b.pem"), cwd=tmp_path)
    der = ssl.PEM_cert_to_DER_cert(ca_pem)
    fp = hashlib.sha256(der).hexdigest().upper()
    assert ":".join(fp[i:i + 2] for i in range(0, 64, 2)) in out
    assert str(ca_dir / "mitmproxy-ca-cert.pem") in out and "mode 0600" in out
    assert (tmp_path / "b.pem").read_text() == bundle

    # A key that was made readable by others is fixed.
    (ca_dir / "mitmproxy-ca.pem").chmod(0o644)
    corral("certs", "--config", str(config), cwd=tmp_path)
    assert (ca_dir / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, MockUpstream, MockUpstream]]:
    """One gateway for the rest of the module: its CA in [gateway] certs (no --certs flag), upstream TLS
    trusted through [gateway] upstream_ca = the CA of one TLS mock (openai's upstream) and not of another
    (groq's). Upstream failures are retried without noticeable waits."""
    with MockUpstream(tls=True) as trusted, MockUpstream(tls=True) as untrusted:
        trusted.default = untrusted.default = "openai-chat-json-1"
        workdir = tmp_path_factory.mktemp("certs")
        config = {"gateway": {"certs": "ca-from-config", "upstream_ca": str(trusted.ca_path)},
                  "providers.groq": {"upstream": untrusted.url},
                  "retries": {"backoff": 0.01, "backoff_max": 0.02}}
        gw = Gateway(trusted.url, workdir=workdir, config=config)
        gw.command = lambda: [*CORRAL, "start", "--listen", f"127.0.0.1:{gw.port}", "--db", gw.db,
                              "--config", str(gw.config_path)]
        with gw:
            yield gw, trusted, untrusted


def test_start_uses_the_configured_ca(tls_gw) -> None:
    """`corral start` with [gateway] certs intercepts with the CA `corral env` handed out."""
    gw, _, _ = tls_gw
    ca = gw.workdir / "ca-from-config" / "mitmproxy-ca-cert.pem"
    trust = ssl.create_default_context(cafile=str(ca))
    tag = new_tag()
    with httpx.Client(proxy=gw.url, verify=trust, trust_env=False, timeout=20) as c:
        r = c.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"},
                   headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag})
    assert r.status_code == 200
    assert gw.row_for(tag)["mode"] == "explicit"


def test_upstream_tls_is_verified_unless_upstream_ca_is_set(tls_gw) -> None:
    gw, trusted, untrusted = tls_gw
    body = corpus.load("openai-chat-json-1")["request"]["body"]
    for prefix, ok in (("groq/openai", False), ("openai", True)):
        tag = new_tag()
        r = httpx.post(gw.base(prefix) + "/v1/chat/completions", json=body, trust_env=False, timeout=20,
                       headers={"x-test-id": tag, "authorization": "Bearer sk-test"})
        row = gw.row_for(tag)
        if ok:  # its certificate is signed by the CA in upstream_ca
            assert r.status_code == 200 and row["input_tokens"] is not None
        else:  # verified, and not trusted: no answer from it reaches the client
            assert r.status_code == 502 and "certificate" in (row["error"] or "").lower()
    assert untrusted.request_count == 0  # the untrusted attempts never got past the handshake
    assert trusted.request_count >= 1
