"""The same pool-using tests under every async runner, with no runner-specific configuration,
on the dev venv's versions (pytest 9 with pytest-asyncio 1.x): pytest-asyncio strict and auto,
function and session loops; anyio's plugin (asyncio backend); pytest-asyncio-cooperative; and
xdist -n 2.
Other versions (pytest 7.4 + pytest-asyncio 0.23, pytest 8 + pytest-asyncio 1.x), xdist with
pytest-randomly, and trio: test_runner_breadth.py.

Each inner run has a sync test beside the async ones, two tests that would see each other's
redis writes if an instance were not reset (or were shared), a custom service registered by
the hook, and a test that waits until the pool's supervisors ran a health check *in its own
loop* while it runs (``_inner.RUNNER_BODY``). Function loop scope means a new loop per test,
so every redis lease there crosses loops: "attached to a different loop" would fail it.
"""

from __future__ import annotations

import pytest

from ._inner import (
    ASYNCIO_VARIANTS,
    RUNNER_BODY,
    check_runner_run,
    dedent,
    flags,
    setup_asyncio_project,
    setup_project,
)

INNER_TIMEOUT_S = 30

ANYIO_CONFTEST_EXTRA = """

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run in a subprocess with a time bound: what these runs guard against (a loop torn down
    while the pool's runtime is starting) shows as a hang, which must fail, not stall the suite."""
    return pytester.runpytest_subprocess(*args, timeout=INNER_TIMEOUT_S)


@pytest.mark.parametrize("variant", sorted(ASYNCIO_VARIANTS))
def test_pytest_asyncio(pytester: pytest.Pytester, variant: str) -> None:
    mode, scope = setup_asyncio_project(pytester, variant)
    result = _run(pytester, *flags("asyncio", "--mockpool-report=report.json"))
    check_runner_run(pytester, result)
    result.stdout.fnmatch_lines([f"mockpool: *runner: pytest-asyncio ({mode}, {scope} loop)*"])


def test_anyio(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"mockpool_services": "redis"})
    pytester.makeconftest((pytester.path / "conftest.py").read_text(encoding="utf-8") + ANYIO_CONFTEST_EXTRA)
    pytester.makepyfile(test_matrix=dedent(RUNNER_BODY.format(mark="@pytest.mark.anyio")))
    result = _run(pytester, *flags("anyio", "--mockpool-report=report.json"))
    check_runner_run(pytester, result)
    result.stdout.fnmatch_lines(["mockpool: *runner: anyio*"])


COOPERATIVE_CONCURRENCY = """
import asyncio

import pytest

STARTED = {}


async def _hold_and_meet(mockpool, me, other):
    async with mockpool.acquire("counter") as c:
        STARTED[me] = c
        # Both tests hold a counter at once: only possible when they run concurrently.
        for _ in range(1000):
            if other in STARTED:
                break
            await asyncio.sleep(0.005)
        assert other in STARTED, "the tests did not run concurrently"
        assert STARTED[other] is not c, "two concurrent tests got the same instance"


@pytest.mark.asyncio_cooperative
async def test_meet_a(mockpool):
    await _hold_and_meet(mockpool, "a", "b")


@pytest.mark.asyncio_cooperative
async def test_meet_b(mockpool):
    await _hold_and_meet(mockpool, "b", "a")
"""


def test_cooperative(pytester: pytest.Pytester) -> None:
    # cooperative 0.40 reads FixtureDef.has_location, deprecated in pytest 9.
    setup_project(
        pytester,
        ini={"mockpool_services": "redis"},
    )
    pytester.makepyfile(
        test_matrix=dedent(RUNNER_BODY.format(mark="@pytest.mark.asyncio_cooperative")),
        test_concurrent=dedent(COOPERATIVE_CONCURRENCY),
    )
    result = _run(
        pytester,
        *flags(
            "cooperative",
            "--mockpool-report=report.json",
            "-W",
            "ignore:FixtureDef.has_location:pytest.PytestRemovedIn10Warning",
        ),
    )
    check_runner_run(pytester, result, passed=7, counters=3)
    result.stdout.fnmatch_lines(["mockpool: *runner: asyncio-cooperative*"])


def test_xdist_two_workers(pytester: pytest.Pytester) -> None:
    setup_project(
        pytester,
        ini={
            "mockpool_services": "redis",
            "asyncio_mode": "strict",
            "asyncio_default_fixture_loop_scope": "function",
        },
    )
    pytester.makepyfile(test_matrix=dedent(RUNNER_BODY.format(mark="@pytest.mark.asyncio")))
    result = _run(pytester, *flags("asyncio", "-n", "2", "--mockpool-report=report.json", xdist=True))
    report = check_runner_run(pytester, result)
    result.stdout.fnmatch_lines(["mockpool: *2 xdist workers*", "*= mockpool (2 workers) =*"])
    assert sorted(report.data["workers"]) == ["gw0", "gw1"]
