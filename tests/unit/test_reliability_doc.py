"""docs/reliability.md is exactly what the @reliability-marked tests prove."""

from tests.support.gateway import REPO_ROOT
from tests.support.reliability import render


def test_reliability_report_is_generated_from_the_tests() -> None:
    doc = (REPO_ROOT / "docs" / "reliability.md").read_text()
    assert doc == render(), "docs/reliability.md is stale: python -m tests.support.reliability > docs/reliability.md"
