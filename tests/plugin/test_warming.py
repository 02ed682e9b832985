"""The plugin knows the collected order: it creates what the next test needs while the
current one runs (from ``@pytest.mark.mockpool`` on a first run, from history later)."""

from __future__ import annotations

import pytest

from ._inner import dedent, flags, pyproject, read_history, setup_project

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


SUBSET_CONFTEST = """
import pytest_asyncio

from mockpool import ServiceSpec


def pytest_mockpool_register(pool, config):
    for name in ("catalog", "worker", "inbox", "other"):
        pool.register(ServiceSpec(name=name, factory=list, reset=list.clear))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def catalog(mockpool):
    async with mockpool.acquire("catalog") as catalog:
        yield catalog
"""

#: Tests whose leases are no test's: a module fixture's, a thread's.
OUTSIDE = """
import asyncio
import threading

import pytest


@pytest.mark.asyncio(loop_scope="module")
async def test_fixture(catalog):
    pass


def test_thread(mockpool):
    async def lease():
        async with mockpool.acquire("worker"):
            pass

    thread = threading.Thread(target=asyncio.run, args=(lease(),))
    thread.start()
    thread.join()
"""

#: Tests that lease in their bodies, and one that leases nothing.
OWNED = """
import pytest


@pytest.mark.asyncio(loop_scope="module")
async def test_inbox(mockpool):
    async with mockpool.acquire("inbox"):
        pass


@pytest.mark.asyncio(loop_scope="module")
async def test_other(mockpool):
    async with mockpool.acquire("other"):
        pass


def test_nothing(mockpool):
    assert "inbox" in mockpool.services
"""


def _first_run(pytester: pytest.Pytester, **tests: str) -> None:
    pytester.makepyprojecttoml(pyproject(asyncio_default_fixture_loop_scope="function"))
    pytester.makeconftest(dedent(SUBSET_CONFTEST))
    pytester.makepyfile(**{name: dedent(body) for name, body in tests.items()})
    passed = sum(body.count("def test_") for body in tests.values())
    pytester.runpytest(*flags("asyncio")).assert_outcomes(passed=passed)


def test_services_leased_outside_tests_are_warmed_in_every_run(pytester: pytest.Pytester) -> None:
    """A module fixture's lease and a thread's belong to no test: history keeps the services
    as used outside tests, and every later run warms them, a ``-k`` subset too. A subset
    still warms no service that only the tests it left out use."""
    from mockpool.history.format import OUTSIDE_TESTS

    _first_run(pytester, test_outside=OUTSIDE, test_owned=OWNED)
    tests = read_history(pytester)["tests"]
    assert tests[OUTSIDE_TESTS]["services"] == ["catalog", "worker"]
    assert tests["test_outside.py::test_thread"]["services"] == []

    inbox = pytester.runpytest(*flags("asyncio", "-k", "test_inbox"))
    inbox.assert_outcomes(passed=1, deselected=4)
    inbox.stdout.fnmatch_lines(["warmed ahead: catalog=1, worker=1, inbox=1"])
    outside = pytester.runpytest(*flags("asyncio", "test_outside.py"))
    outside.assert_outcomes(passed=2)
    outside.stdout.fnmatch_lines(["warmed ahead: catalog=1, worker=1"])


def test_a_run_of_tests_known_to_lease_nothing_warms_nothing(pytester: pytest.Pytester) -> None:
    """History knows each test that ran, even one that leased nothing: a run of such tests
    alone warms nothing (it warmed every service history knew, as it does when it knows none
    of the collected tests)."""
    _first_run(pytester, test_owned=OWNED)
    assert read_history(pytester)["tests"]["test_owned.py::test_nothing"]["services"] == []
    nothing = pytester.runpytest(*flags("asyncio", "-k", "test_nothing"))
    nothing.assert_outcomes(passed=1, deselected=2)
    nothing.stdout.no_fnmatch_line("warmed ahead:*")
    other = pytester.runpytest(*flags("asyncio", "-k", "test_other"))
    other.assert_outcomes(passed=1, deselected=2)
    other.stdout.fnmatch_lines(["warmed ahead: other=1"])


PAUSED_CONFTEST = """
import asyncio

from mockpool import ServiceSpec

STARTED = []


async def slow():
    STARTED.append(asyncio.get_running_loop())
    if len(STARTED) == 1:
        await asyncio.Event().wait()  # the first creation goes on only if its loop runs again
    return {}


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="slow", factory=slow, reset=dict.clear))
"""

PAUSED = """
import asyncio

import pytest

from conftest import STARTED


@pytest.mark.asyncio(loop_scope="session")
async def test_in_the_session_loop(mockpool):
    # The plugin creates ahead what the next test is marked to need, in this loop.
    for _ in range(1000):  # bounded wait for the creation to be under way
        if STARTED:
            break
        await asyncio.sleep(0)
    assert STARTED == [asyncio.get_running_loop()]


@pytest.mark.asyncio
@pytest.mark.mockpool("slow")
async def test_in_its_own_loop(mockpool):
    # The session loop is open and not running now: its creation covers no one here.
    async with mockpool.acquire("slow", timeout=5) as instance:
        assert instance == {}
"""


def test_a_creation_ahead_in_a_session_loop_keeps_no_function_loop_test_waiting(
    pytester: pytest.Pytester,
) -> None:
    """pytest-asyncio keeps a session-scoped loop open, not running, while a function-scoped
    test runs. The creation warming started there for the next test went on only when that
    loop ran again: the next test waited for it until its timeout."""
    pytester.makepyprojecttoml(pyproject(asyncio_default_fixture_loop_scope="function"))
    pytester.makeconftest(dedent(PAUSED_CONFTEST))
    pytester.makepyfile(test_paused=dedent(PAUSED))
    result = pytester.runpytest(*flags("asyncio", "-p", "no:cacheprovider"))
    result.assert_outcomes(passed=2)
