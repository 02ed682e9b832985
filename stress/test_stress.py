"""The stress suite under pytest: the same tests as ``python -m stress``, one pytest test each.

Sequential (pytest-asyncio, a loop per test)::

    python -m pytest stress

Concurrent, all in one loop (pytest-asyncio-cooperative; pytest-asyncio must be off)::

    python -m pytest stress -p asyncio-cooperative -p no:asyncio --max-asyncio-tasks 1199

``STRESS_TESTS`` sets the number of tests (1199), ``STRESS_SEED`` the seed (0).
"""

from __future__ import annotations

import os

import pytest

from mockpool import MockPool

from .runner import PoolUse
from .scenario import Case, make_cases, run_case

CASES = make_cases(int(os.environ.get("STRESS_TESTS", "1199")), seed=int(os.environ.get("STRESS_SEED", "0")))


@pytest.mark.asyncio
@pytest.mark.asyncio_cooperative
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_stress(mockpool: MockPool, case: Case) -> None:
    await run_case(PoolUse(mockpool), case)
