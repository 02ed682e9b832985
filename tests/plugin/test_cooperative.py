"""pytest-asyncio-cooperative's scheduler waits instead of spinning (mockpool.plugin.cooperative):
the shim's ``wait`` waits while every slot runs a test and no test waits to start, returns at
once while one does, and the plugin installs it only on the version with the flipped timeout.
Each test's task owns the leases taken in it, its function fixtures' included."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from mockpool.plugin.cooperative import APPLIED, FLIPPED, CooperativeAsyncio, own_leases, undo

from ._inner import dedent, flags, read_history, setup_project


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_flipped_timeout_waits_for_a_test_to_finish() -> None:
    """The scheduler passes ``elapsed - task_timeout``: -600 at its start. asyncio returns at
    once on it; the shim waits (up to the 30 s left of it) for the first test to finish."""
    shim = CooperativeAsyncio(asyncio, max_tasks=1)
    finish = asyncio.Event()
    test = asyncio.create_task(finish.wait())
    waiting = asyncio.create_task(shim.wait([test], timeout=-600, return_when=asyncio.FIRST_COMPLETED))
    await _turns(20)
    assert not waiting.done()  # asyncio.wait itself would have returned at its first turn
    finish.set()
    done, pending = await waiting
    assert done == {test} and pending == set()


@pytest.mark.asyncio
async def test_with_tests_waiting_to_start_and_a_free_slot_it_returns_at_once() -> None:
    """The scheduler starts one waiting test per return: while one waits and a slot is free,
    the shim returns at once, as asyncio did."""
    shim = CooperativeAsyncio(asyncio, max_tasks=2)
    test = asyncio.create_task(asyncio.Event().wait())

    async def run_tests() -> tuple[set[object], set[object]]:  # named as the scheduler is
        sidelined_tasks = ["a test not started yet"]
        assert sidelined_tasks
        return await shim.wait([test], timeout=-600, return_when=asyncio.FIRST_COMPLETED)

    done, pending = await run_tests()
    assert done == set() and pending == {test}
    test.cancel()


def test_the_installed_cooperative_has_the_flipped_line() -> None:
    """The version the project tests with is the one the fix is for."""
    plugin = pytest.importorskip("pytest_asyncio_cooperative.plugin")
    assert FLIPPED in inspect.getsource(plugin.run_tests)


PROBE_TEST = """
import asyncio
import sys

import pytest


@pytest.mark.asyncio_cooperative
async def test_the_scheduler_sees(mockpool):
    seen = type(sys.modules["pytest_asyncio_cooperative.plugin"].asyncio).__name__
    assert seen == "{expected}", seen
"""


@pytest.mark.parametrize(("option", "expected"), [(None, "CooperativeAsyncio"), ("false", "module")])
def test_the_plugin_installs_the_fix_unless_told_not_to(
    pytester: pytest.Pytester, option: str | None, expected: str
) -> None:
    setup_project(pytester, probe=False)
    pytester.makepyfile(test_probe=dedent(PROBE_TEST.replace("{expected}", expected)))
    extra = ["-o", f"mockpool_fix_cooperative_wait={option}"] if option else []
    result = pytester.runpytest_inprocess(
        *flags("cooperative", *extra, "-W", "ignore:FixtureDef.has_location:pytest.PytestRemovedIn10Warning")
    )
    result.assert_outcomes(passed=1)
    module = sys.modules.get("pytest_asyncio_cooperative.plugin")
    if module is not None:
        assert module.asyncio is asyncio  # given back as the inner session ended


def test_only_the_session_that_applied_the_fix_takes_it_back() -> None:
    """A pytest run inside another (pytester, in process) must not undo the outer one's fix."""
    plugin = pytest.importorskip("pytest_asyncio_cooperative.plugin")
    shim = CooperativeAsyncio(asyncio, max_tasks=100)
    outer, inner = _Config(), _Config()
    outer.stash[APPLIED] = True
    plugin.asyncio = shim
    try:
        undo(inner)  # type: ignore[arg-type]
        assert vars(plugin)["asyncio"] is shim
        undo(outer)  # type: ignore[arg-type]
        assert vars(plugin)["asyncio"] is asyncio
    finally:
        plugin.asyncio = asyncio


class _Config:
    """What undo() and own_leases() read of a config: its stash, the plugins loaded."""

    def __init__(self) -> None:
        self.stash = pytest.Stash()
        self.pluginmanager = self

    def has_plugin(self, name: str) -> bool:
        return name == "asyncio-cooperative"


OWNED_IN_TASK = """
import pytest


@pytest.fixture(scope="session")
async def shared(mockpool):
    async with mockpool.acquire("counter") as counter:
        yield counter


@pytest.fixture
async def leaky(mockpool):
    lease = mockpool.acquire("counter")
    yield await lease.__aenter__()  # never left: the test's leak


@pytest.fixture
async def tidy(mockpool):
    async with mockpool.acquire("counter") as counter:
        yield counter


@pytest.mark.asyncio_cooperative
async def test_leaky_fixture(leaky):
    leaky.value += 1


@pytest.mark.asyncio_cooperative
async def test_tidy_fixture(tidy, shared):
    tidy.value += 1


@pytest.mark.asyncio_cooperative
async def test_shared_only(shared):
    pass
"""


def test_a_cooperative_test_owns_its_function_fixtures_leases(pytester: pytest.Pytester) -> None:
    """Cooperative fills a test's fixtures and tears them down in the test's task, outside
    anything pytest's hooks wrap: the task owns its leases, so a function fixture's leak fails
    its test (it passed, the lease listed as no test's at session end) and history names the
    service for the test (the next run warms it); a session fixture's lease is no test's."""
    from mockpool.history.format import OUTSIDE_TESTS

    setup_project(pytester, probe=False)
    pytester.makepyfile(test_owned=dedent(OWNED_IN_TASK))
    result = pytester.runpytest_inprocess(
        *flags("cooperative", "-W", "ignore:FixtureDef.has_location:pytest.PytestRemovedIn10Warning")
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_owned.py::test_leaky_fixture ended still holding 1 lease(s)*", "leaked leases (1):"]
    )
    tests = read_history(pytester)["tests"]
    assert tests["test_owned.py::test_leaky_fixture"]["services"] == ["counter"]
    assert tests["test_owned.py::test_tidy_fixture"]["services"] == ["counter"]
    assert tests["test_owned.py::test_shared_only"]["services"] == []
    assert tests[OUTSIDE_TESTS]["services"] == ["counter"]  # the session fixture's


def test_only_the_session_that_made_tasks_own_their_leases_takes_it_back() -> None:
    plugin = pytest.importorskip("pytest_asyncio_cooperative.plugin")
    fixtures = pytest.importorskip("pytest_asyncio_cooperative.fixtures")
    real = (plugin.item_to_task, fixtures.fill_fixture_fixtures)
    outer, inner = _Config(), _Config()
    try:
        assert own_leases(outer)  # type: ignore[arg-type]
        wrapped = (plugin.item_to_task, fixtures.fill_fixture_fixtures)
        assert wrapped[0] is not real[0] and wrapped[1] is not real[1]
        assert own_leases(inner)  # type: ignore[arg-type]
        undo(inner)  # type: ignore[arg-type]
        assert (plugin.item_to_task, fixtures.fill_fixture_fixtures) == wrapped
        undo(outer)  # type: ignore[arg-type]
        assert (plugin.item_to_task, fixtures.fill_fixture_fixtures) == real
    finally:
        plugin.item_to_task, fixtures.fill_fixture_fixtures = real
