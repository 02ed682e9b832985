"""Under the plugin, in isolation-verify mode, the test whose lease left state that the reset
did not clean fails, naming the service and what differed; the next test gets a clean one."""

from __future__ import annotations

import pytest

from ._inner import conftest, dedent, flags, setup_project

SLOPPY = """

from mockpool import ServiceSpec as _Spec


class Box:
    def __init__(self):
        self.items = []
        self.mode = "strict"


def _forgets_mode(box):
    box.items.clear()


_register = pytest_mockpool_register


def pytest_mockpool_register(pool, config):
    _register(pool, config)
    pool.isolation_verify = True  # before register: services read it when registered
    pool.register(
        _Spec(
            name="box",
            factory=Box,
            reset=_forgets_mode,
            fingerprint=lambda box: {"items": list(box.items), "mode": box.mode},
            max_size=1,
        )
    )
"""

TESTS = """
import pytest


@pytest.mark.asyncio
async def test_changes_only_data(mockpool):
    async with mockpool.acquire("box") as box:
        box.items.append(1)


@pytest.mark.asyncio
async def test_changes_a_setting(mockpool):
    async with mockpool.acquire("box") as box:
        box.mode = "loose"


@pytest.mark.asyncio
async def test_next_one_is_clean(mockpool):
    async with mockpool.acquire("box") as box:
        assert box.mode == "strict"
    assert mockpool.stats("box").isolation_failures == 1
"""


def test_the_test_that_left_state_behind_fails(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    pytester.makeconftest(conftest(probe=False) + SLOPPY)
    pytester.makepyfile(test_box=dedent(TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=3, errors=1)  # the body passed; its teardown fails
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_changes_a_setting*",
            "*test_changes_a_setting left state that the reset did not clean:",
            "*service 'box': isolation check failed*mode: fresh 'strict' != now 'loose'*",
        ]
    )
