"""`corral export` pieces that need no database: the progress bar."""

from __future__ import annotations

import io

from addon.cli.export import Progress


def test_progress_bar_on_stderr_for_large_exports(tmp_path) -> None:
    buf = io.StringIO()
    p = Progress(2000, buf, enabled=True)
    for _ in range(2000):
        p.step()
    p.close()
    assert "100% 2000/2000" in buf.getvalue() and buf.getvalue().count("\r") == 101
    quiet = io.StringIO()
    Progress(10, quiet, enabled=True).step()
    assert quiet.getvalue() == ""  # small exports stay silent
