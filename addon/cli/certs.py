"""`corral certs`: where Corral's CA is, its fingerprint, and the client bundle.

The CA is mitmproxy's confdir (default: the checkout's certs/); it is created here if missing, so
`corral certs` may run before the first `corral start`.
"""

from __future__ import annotations

import argparse
import stat

from addon import ca
from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="show the CA (paths, SHA-256 fingerprint); --bundle writes the client bundle")
    common.add_config_args(p, db=False)
    common.add_certs_arg(p)
    p.add_argument("--bundle", metavar="PATH", help="write system roots + Corral CA to PATH")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    files = ca.ensure_ca(common.certs_dir(settings))
    bundle = ca.write_bundle(files, args.bundle) if args.bundle else ca.write_bundle(files)
    mode = stat.S_IMODE(files.key.stat().st_mode)
    print(f"directory:    {files.confdir}")
    print(f"certificate:  {files.cert}")
    print(f"private key:  {files.key}  (mode {mode:04o})")
    print(f"SHA-256:      {ca.sha256_fingerprint(files.cert)}")
    print(f"bundle:       {bundle}  (system roots + Corral CA)")
    return 0
