"""The environment that sends a program's HTTP clients through Corral: what `corral env` prints and what
`corral run` hands the program it starts.

Each runtime reads its own variables, and some *replace* the trust store while others *add* to it:

- Python (httpx, requests), curl, Go, git, AWS SDKs: HTTPS_PROXY / HTTP_PROXY (ALL_PROXY for curl);
  SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, GIT_SSL_CAINFO, AWS_CA_BUNDLE replace the trust
  store, so they get the bundle (system roots + Corral CA).
- Node.js: fetch ignores the proxy variables before Node 24, so Corral's preload (NODE_OPTIONS,
  addon/node/corral-preload.cjs) installs a proxying dispatcher; NODE_EXTRA_CA_CERTS adds, so the CA alone.
- Java: JAVA_TOOL_OPTIONS with http(s).proxyHost/Port, and javax.net.ssl.trustStore, which replaces:
  a PKCS12 truststore of the same bundle.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from addon import ca, netaddr

NO_PROXY = "localhost,127.0.0.1,::1"  # reverse-mode calls to the gateway itself go direct
NODE_PRELOAD = Path(__file__).resolve().parent / "node" / "corral-preload.cjs"
JAVA_TRUSTSTORE = "corral-truststore.p12"
JAVA_TRUSTSTORE_PASSWORD = "corral"  # a truststore holds public certificates only; Java wants a password
PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
BUNDLE_NAMES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE")


def proxy_variables(proxy: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PROXY_NAMES:
        out[name] = out[name.lower()] = proxy
    out["NO_PROXY"] = out["no_proxy"] = NO_PROXY
    return out


def trust_variables(files: ca.CaFiles) -> dict[str, str]:
    bundle = str(ca.write_bundle(files))
    out = {name: bundle for name in BUNDLE_NAMES}  # the bundle where the variable replaces the trust store
    out["NODE_EXTRA_CA_CERTS"] = str(files.cert)  # the CA alone where it adds to it
    return out


def node_options(current: str) -> str:
    """``current`` NODE_OPTIONS with Corral's preload required first (once)."""
    path = str(NODE_PRELOAD)
    if path in current:
        return current
    quoted = f'"{path}"' if " " in path else path  # NODE_OPTIONS takes double-quoted values
    return f"--require {quoted} {current}".strip()


def java_options(current: str, proxy: str | None, truststore: Path | None) -> str:
    """``current`` JAVA_TOOL_OPTIONS plus proxy and trust system properties (HttpClient, HttpsURLConnection)."""
    props: list[str] = []
    if proxy:
        hostport = proxy.rpartition("@")[2].removeprefix("http://")
        host, port = netaddr.parse_hostport(hostport)
        host = f"[{host}]" if ":" in host else host
        for scheme in ("http", "https"):
            props += [f"-D{scheme}.proxyHost={host}", f"-D{scheme}.proxyPort={port}"]
        props.append("-Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1]")  # applies to https too
    if truststore:
        props += [f"-Djavax.net.ssl.trustStore={truststore}", "-Djavax.net.ssl.trustStoreType=PKCS12",
                  f"-Djavax.net.ssl.trustStorePassword={JAVA_TRUSTSTORE_PASSWORD}"]
    kept = [p for p in current.split() if p.split("=", 1)[0] not in {q.split("=", 1)[0] for q in props}]
    return " ".join([*kept, *props])


def java_truststore(files: ca.CaFiles) -> Path | None:
    """A PKCS12 truststore of the client bundle (system roots + Corral CA), rebuilt when the bundle changes.
    None when this `cryptography` cannot write Java truststores (before 45)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
        serialize = pkcs12.serialize_java_truststore
    except (ImportError, AttributeError):
        return None
    pem = ca.write_bundle(files).read_bytes()
    target = files.confdir / JAVA_TRUSTSTORE
    stamp = target.with_name(target.name + ".sha256")
    digest = hashlib.sha256(pem).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    with warnings.catch_warnings():  # some system roots have a non-positive serial: still trusted by Java
        warnings.simplefilter("ignore")
        certs = x509.load_pem_x509_certificates(pem)
    entries = [pkcs12.PKCS12Certificate(c, f"corral-{i}".encode()) for i, c in enumerate(certs)]
    data = serialize(entries, BestAvailableEncryption(JAVA_TRUSTSTORE_PASSWORD.encode()))
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    stamp.write_text(digest)
    return target


def variables(files: ca.CaFiles, proxy: str | None, base: Mapping[str, str], java: bool = True) -> dict[str, str]:
    """Everything a program needs to go through Corral: ``proxy`` None means trust only (transparent
    capture needs no proxy settings). ``base`` is the environment being extended (NODE_OPTIONS and
    JAVA_TOOL_OPTIONS are added to, not replaced)."""
    out = proxy_variables(proxy) if proxy else {}
    out.update(trust_variables(files))
    if proxy:
        out["NODE_OPTIONS"] = node_options(base.get("NODE_OPTIONS", ""))
    truststore = java_truststore(files) if java else None
    if proxy or truststore:
        out["JAVA_TOOL_OPTIONS"] = java_options(base.get("JAVA_TOOL_OPTIONS", ""), proxy, truststore)
    return out
