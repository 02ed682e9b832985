"""benchmarks/learning.py's printed rates read as the report's do."""

from __future__ import annotations

import pytest

from benchmarks.learning import _percent


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(None, "-"), (1.0, "100.0%"), (0.9996, "99.9%"), (0.0, "0.0%"), (0.0004, "0.1%"), (0.4567, "45.7%")],
)
def test_a_rate_reads_100_only_when_all_and_0_only_when_none(rate: float | None, shown: str) -> None:
    assert _percent(rate) == shown
