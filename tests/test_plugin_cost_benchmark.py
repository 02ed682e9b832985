"""The plugin-cost benchmark (``benchmarks/plugin_cost.py``): its suites are what it says they
are, and pass, on the pool and on plain fixtures. Wall times are never asserted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import plugin_cost


@pytest.mark.parametrize("variant", ["pool", "plain", "pool db", "floor+plugin"])
def test_each_suite_passes_as_a_pytest_process(tmp_path: Path, variant: str) -> None:
    plugin_cost.write_suites(tmp_path)
    suite, extra = plugin_cost.VARIANTS[variant]
    tests = (tmp_path / suite / "test_suite.py").read_text()
    assert tests.count("def test_") == plugin_cost.N
    assert ("mockpool.acquire" in tests) == variant.startswith("pool")
    wall, cpu = plugin_cost.run(tmp_path, suite, extra, dict(os.environ))
    assert wall > 0 and cpu > 0
