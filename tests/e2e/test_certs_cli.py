"""`corral certs` / `corral env` / `corral start` agree on one CA directory, whatever the cwd and
whichever command runs first; upstream TLS is verified unless [gateway] upstream_ca says otherwise."""

from __future__ import annotations

import hashlib
import os
import shlex
import ssl
import subprocess
from pathlib import Path

import httpx

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


def test_start_uses_the_configured_ca(tmp_path: Path, mock: MockUpstream) -> None:
    """`corral start` with [gateway] certs intercepts with the CA `corral env` handed out."""
    gw = Gateway(mock.url, workdir=tmp_path, config={"gateway": {"certs": "ca-from-config"}})
    gw.command = lambda: [*CORRAL, "start", "--listen", f"127.0.0.1:{gw.port}", "--db", gw.db,
                          "--config", str(gw.config_path)]
    ca = tmp_path / "ca-from-config" / "mitmproxy-ca-cert.pem"
    with gw:
        trust = ssl.create_default_context(cafile=str(ca))
        tag = new_tag()
        with httpx.Client(proxy=gw.url, verify=trust, trust_env=False, timeout=20) as c:
            r = c.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"},
                       headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag})
        assert r.status_code == 200
        assert gw.row_for(tag)["mode"] == "explicit"


def test_upstream_tls_is_verified_unless_upstream_ca_is_set(tmp_path: Path) -> None:
    with MockUpstream(tls=True) as tls_mock:
        tls_mock.default = "openai-chat-json-1"
        body = corpus.load("openai-chat-json-1")["request"]["body"]
        for trusted in (False, True):
            config = {"gateway": {"upstream_ca": str(tls_mock.ca_path)}} if trusted else {}
            (tmp_path / str(trusted)).mkdir()
            with Gateway(tls_mock.url, workdir=tmp_path / str(trusted), config=config) as gw:
                tag = new_tag()
                r = httpx.post(gw.base("openai") + "/v1/chat/completions", json=body, trust_env=False, timeout=20,
                               headers={"x-test-id": tag, "authorization": "Bearer sk-test"})
                row = gw.row_for(tag)
                if trusted:
                    assert r.status_code == 200 and row["input_tokens"] is not None
                else:
                    assert r.status_code == 502 and "certificate" in (row["error"] or "").lower()
        assert tls_mock.request_count == 1  # the untrusted attempt never got past the handshake
