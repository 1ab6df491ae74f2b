"""The `corral` command run in this process: the output and exit status a shell would see, without
starting an interpreter for it.

A `corral` subprocess spends ~0.7 s of CPU importing Corral before it does any work, and the suite
runs dozens of commands. Here the same argv goes through the same ``main()`` with stdout and stderr
captured. Commands that start a gateway, or whose point is the process itself (its working directory,
its environment), run as subprocesses instead (``tests.support.gateway.CORRAL``).
"""

from __future__ import annotations

import contextlib
import io
import subprocess

from addon.cli.main import main


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse, and `raise SystemExit("corral: ...")` in the commands
            if isinstance(e.code, str):
                print(e.code, file=err)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(["corral", *args], code, out.getvalue(), err.getvalue())
