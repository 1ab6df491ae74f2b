"""Corral as a mitmproxy script: ``mitmdump -s addon/corral.py`` or ``mitmweb -s addon/corral.py``.

Every Corral setting is a ``--set corral_...`` option (see addon/config.py), e.g.
``mitmdump -s addon/corral.py --set corral_config=corral.toml --set connection_strategy=lazy``.
"""

import sys
from pathlib import Path

# mitmproxy loads this file by path: make the checkout importable when Corral is not pip-installed.
_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addon.chain import build  # noqa: E402

addons = build()
