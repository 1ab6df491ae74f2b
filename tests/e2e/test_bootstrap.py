"""scripts/bootstrap.sh (what `./corral` runs first): progress lines, the installer's output in a log file,
and a failure that says where that log is. Offline: the dependency cannot be found, which is the point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.gateway import REPO_ROOT


def test_failed_install_points_to_its_log(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts" / "bootstrap.sh")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\ndependencies = ["corral-test-no-such-package==0.0.1"]\n')
    env = {**os.environ, "CORRAL_PYTHON": sys.executable, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path),
           "PIP_CONFIG_FILE": os.devnull}
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "bootstrap.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    log = tmp_path / ".venv" / "install.log"
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("corral: [1/2] creating .venv with Python 3.")
    assert lines[1] == ("corral: [2/2] installing 1 dependencies (mitmproxy and its own) into .venv "
                        "(output: .venv/install.log)")
    assert f"corral: the installer's output is in {log}; its last lines:" in lines
    assert "corral-test-no-such-package" in log.read_text()
    assert not (tmp_path / ".venv" / ".corral-installed").exists()  # the next run tries again
