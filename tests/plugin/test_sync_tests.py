"""Sync test functions whose autouse async fixture acquires: a recovery that starts while the
fixture is torn down (after an acquire that was an instant idle hit, so no runtime ran in that
loop yet) must not be lost, or the next test's acquire waits until its timeout."""

from __future__ import annotations

import pytest

from ._inner import dedent, flags

CONFTEST = """
import pytest_asyncio

from mockpool import ServiceSpec


def _reset(instance):
    raise RuntimeError("reset always fails")


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="flaky", factory=dict, reset=_reset, max_size=1))


@pytest_asyncio.fixture(autouse=True)
async def uses_flaky(mockpool):
    async with mockpool.acquire("flaky", timeout=3) as instance:
        assert instance == {}, "the last test's write is visible"
        instance["x"] = 1
        yield instance
"""

TESTS = """
def test_one(mockpool):
    pass


def test_two(mockpool):
    pass


def test_three(mockpool):
    stats = mockpool.stats("flaky")
    assert (stats.size, stats.in_use) == (1, 1)
"""


def test_a_recovery_started_in_a_fixture_teardown_is_not_lost(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        dedent(
            """
            [tool.pytest.ini_options]
            asyncio_mode = "strict"
            asyncio_default_fixture_loop_scope = "function"
            filterwarnings = ["error"]
            """
        )
    )
    pytester.makeconftest(dedent(CONFTEST))
    pytester.makepyfile(test_sync=dedent(TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=3)  # test_three's setup timed out: 'flaky' stayed recovering
