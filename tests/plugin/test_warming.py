"""The plugin knows the collected order: it creates what the next test needs while the
current one runs (from ``@pytest.mark.mockpool`` on a first run, from history later)."""

from __future__ import annotations

import pytest

from ._inner import dedent, flags, setup_project

AHEAD = """
import asyncio

import pytest


@pytest.mark.asyncio
async def test_first(mockpool):
    # Nothing here acquires "counter"; the next test is marked as needing it.
    assert mockpool.stats("counter").size == 0 or mockpool.stats("counter").creating
    for _ in range(1000):  # bounded wait for a condition
        if mockpool.stats("counter").idle == 1:
            break
        await asyncio.sleep(0.005)
    assert mockpool.stats("counter").idle == 1


@pytest.mark.asyncio
@pytest.mark.mockpool("counter")
async def test_second(mockpool):
    async with mockpool.acquire("counter") as c:
        assert c.value == 0
    stats = mockpool.stats("counter")
    assert (stats.acquisitions, stats.hits) == (1, 1)
"""


@pytest.mark.parametrize("scope", ["function", "session"])
def test_marked_services_are_created_during_the_previous_test(pytester: pytest.Pytester, scope: str) -> None:
    setup_project(
        pytester,
        ini={
            "asyncio_mode": "strict",
            "asyncio_default_fixture_loop_scope": scope,
            "asyncio_default_test_loop_scope": scope,
        },
        probe=False,
    )
    pytester.makepyfile(test_ahead=dedent(AHEAD))
    result = pytester.runpytest(*flags("asyncio", "-p", "no:cacheprovider"))
    result.assert_outcomes(passed=2)


def test_warming_off(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    # Without the wait of the first test (it would time out): the second test misses.
    body = AHEAD.replace("for _ in range(1000):", "for _ in range(0):").replace(
        '    assert mockpool.stats("counter").idle == 1\n', ""
    )
    pytester.makepyfile(test_ahead=dedent(body))
    result = pytester.runpytest(*flags("asyncio", "-p", "no:cacheprovider", "-o", "mockpool_warm=false"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*assert (1, 0) == (1, 1)*"])


FIXTURE_LEASE = """
import pytest
import pytest_asyncio


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_counter(mockpool):
    async with mockpool.acquire("counter") as c:
        yield c


@pytest.mark.asyncio(loop_scope="module")
async def test_uses_module_fixture(shared_counter):
    shared_counter.value += 1


@pytest.mark.asyncio(loop_scope="module")
async def test_again(shared_counter, mockpool):
    assert shared_counter.value == 1
    assert mockpool.stats("counter").in_use == 1
"""


def test_a_module_fixture_lease_is_no_test_leak(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    pytester.makepyfile(test_fixture=dedent(FIXTURE_LEASE))
    result = pytester.runpytest(*flags("asyncio", "-p", "no:cacheprovider"))
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*leaked leases*")
