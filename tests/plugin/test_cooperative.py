"""pytest-asyncio-cooperative's scheduler waits instead of spinning (mockpool.plugin.cooperative):
the shim's ``wait`` waits while every slot runs a test and no test waits to start, returns at
once while one does, and the plugin installs it only on the version with the flipped timeout."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from mockpool.plugin.cooperative import APPLIED, FLIPPED, CooperativeAsyncio, undo

from ._inner import dedent, flags, setup_project


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
    """What undo() reads of a config: its stash."""

    def __init__(self) -> None:
        self.stash = pytest.Stash()
