"""Corral's certificate authority: mitmproxy's own CA files in the certs directory (its ``confdir``).

mitmproxy creates them on first start; ``corral env`` and ``corral certs`` create them the same way
(``CertStore.from_store``) so the order of commands does not matter. Clients get one *bundle*:
``SSL_CERT_FILE`` replaces the trust store of httpx-based SDKs instead of adding to it, so the bundle
holds the system roots followed by the Corral CA.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

BASENAME = "mitmproxy"  # mitmproxy's CONF_BASENAME: the file names mitmproxy itself uses
BUNDLE_NAME = "corral-ca-bundle.pem"
KEY_SIZE = 2048  # mitmproxy's default `key_size`


@dataclass(frozen=True)
class CaFiles:
    confdir: Path

    @property
    def cert(self) -> Path:
        """The CA certificate alone (PEM): what NODE_EXTRA_CA_CERTS and browsers take."""
        return self.confdir / f"{BASENAME}-ca-cert.pem"

    @property
    def key(self) -> Path:
        """Private key + certificate (PEM): the secret, mode 0600."""
        return self.confdir / f"{BASENAME}-ca.pem"

    @property
    def secrets(self) -> tuple[Path, ...]:
        return (self.key, self.confdir / f"{BASENAME}-ca.p12")

    @property
    def bundle(self) -> Path:
        return self.confdir / BUNDLE_NAME


def ensure_ca(confdir: Path) -> CaFiles:
    """The CA in ``confdir``, created exactly as mitmproxy would if missing; key files made private."""
    confdir = Path(confdir).expanduser().resolve()
    files = CaFiles(confdir)
    if not files.key.exists():  # the same test mitmproxy makes before creating its store
        from mitmproxy.certs import CertStore  # imported only when needed: `corral env` stays quick

        CertStore.create_store(confdir, BASENAME, KEY_SIZE)
    secure_keys(files)
    return files


def secure_keys(files: CaFiles) -> list[Path]:
    """chmod 0600 every private-key file readable by others (mitmproxy writes them 0600, but a copied or
    restored directory may not be). Returns the files that had to be fixed."""
    fixed = []
    for path in files.secrets:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, 0o600)
            fixed.append(path)
    return fixed


def sha256_fingerprint(cert_pem: Path) -> str:
    """SHA-256 over the DER certificate, as browsers and `openssl x509 -fingerprint -sha256` show it."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def system_roots() -> tuple[Path, bytes]:
    """The machine's CA bundle when it has one, else certifi's (what mitmproxy verifies upstream with)."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and os.path.isfile(cafile) and os.path.getsize(cafile) > 0:
        path = Path(cafile)
    else:
        import certifi

        path = Path(certifi.where())
    return path, path.read_bytes()


def write_bundle(files: CaFiles, target: Path | None = None) -> Path:
    """System roots + the Corral CA in one PEM file (replaced atomically, so readers never see half)."""
    target = Path(target or files.bundle).expanduser().resolve()
    roots_path, roots = system_roots()
    content = (
        roots.rstrip(b"\n")
        + f"\n\n# Corral CA ({files.cert}); roots above from {roots_path}\n".encode()
        + files.cert.read_bytes()
    )
    if target.exists() and target.read_bytes() == content:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, target)
    return target
