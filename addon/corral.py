"""Corral as a mitmproxy script: ``mitmdump -s addon/corral.py`` or ``mitmweb -s addon/corral.py``
(pip-installed: ``mitmweb -s "$(corral paths --script)"``).

Every Corral setting is a ``--set corral_...`` option (see addon/config.py), e.g.
``mitmdump -s addon/corral.py --listen-host 127.0.0.1 --set confdir=certs --set connection_strategy=lazy
--set corral_config=corral.toml``. ``confdir`` is where the CA lives (``corral start`` uses certs/);
mitmproxy listens on every interface by default, which Corral refuses without ``proxyauth``.
"""

import sys
from pathlib import Path

# mitmproxy loads this file by path and puts its directory (addon/) first on sys.path, where
# addon/limits/ would shadow the `limits` package: Corral is imported as `addon` from the directory
# above, which is also what makes a checkout importable when Corral is not pip-installed.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
_root = str(_here.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addon.chain import addon  # noqa: E402

addons = [addon()]
