"""The same pool-using tests under every async runner, with no runner-specific configuration.

Each inner run has a sync test beside the async ones, two tests that would see each other's
redis writes if an instance were not reset (or were shared), a custom service registered by
the hook, and a test that waits until the pool's supervisors ran a health check *in its own
loop* while it runs. Function loop scope means a new loop per test, so every redis lease
there crosses loops: "attached to a different loop" would fail it.
"""

from __future__ import annotations

import pytest

from ._inner import Report, dedent, flags, setup_project

BODY = """
import asyncio

import probe
import pytest

{mark}
async def test_redis_first(mockpool):
    async with mockpool.acquire("redis") as r:
        assert await r.get("shared") is None, "another test's write is visible"
        await r.set("shared", "first")


{mark}
async def test_redis_second(mockpool):
    async with mockpool.acquire("redis") as r:
        assert await r.get("shared") is None, "another test's write is visible"
        await r.set("shared", "second")


{mark}
async def test_counter(mockpool):
    async with mockpool.acquire("counter") as c:
        assert c.value == 0
        c.value += 1


{mark}
async def test_supervisors_run_in_this_loop(mockpool):
    me = id(asyncio.get_running_loop())
    for _ in range(1000):  # waits for a condition (bounded), does not order events
        if me in probe.CHECKED_LOOPS:
            break
        await asyncio.sleep(0.005)
    assert me in probe.CHECKED_LOOPS


def test_sync_reads_the_pool(mockpool):
    assert {{"redis", "counter", "probe"}} <= set(mockpool.services)
    assert mockpool.stats("counter").max_size == 4
"""

INNER_TIMEOUT_S = 30

ANYIO_CONFTEST_EXTRA = """

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""

ASYNCIO = {
    "strict-function": ("strict", "function", "@pytest.mark.asyncio"),
    "strict-session": ("strict", "session", "@pytest.mark.asyncio(loop_scope='session')"),
    "auto-function": ("auto", "function", ""),
    "auto-session": ("auto", "session", ""),
}


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run in a subprocess with a time bound: what these runs guard against (a loop torn down
    while the pool's runtime is starting) shows as a hang, which must fail, not stall the suite."""
    return pytester.runpytest_subprocess(*args, timeout=INNER_TIMEOUT_S)


def _check(
    pytester: pytest.Pytester, result: pytest.RunResult, *, passed: int = 5, counters: int = 1
) -> Report:
    result.assert_outcomes(passed=passed)
    result.stdout.no_fnmatch_line("*different*loop*")
    result.stdout.no_fnmatch_line("*never awaited*")
    report = Report.read(pytester.path / "report.json")
    assert report.service("redis")["acquisitions"] == 2
    assert report.service("counter")["acquisitions"] == counters
    assert report.service("redis")["leaks"] == 0
    return report


@pytest.mark.parametrize("variant", sorted(ASYNCIO))
def test_pytest_asyncio(pytester: pytest.Pytester, variant: str) -> None:
    mode, scope, mark = ASYNCIO[variant]
    setup_project(
        pytester,
        ini={
            "mockpool_services": "redis",
            "asyncio_mode": mode,
            "asyncio_default_fixture_loop_scope": scope,
            "asyncio_default_test_loop_scope": scope,
        },
    )
    pytester.makepyfile(test_matrix=dedent(BODY.format(mark=mark)))
    result = _run(pytester, *flags("asyncio", "--mockpool-report=report.json"))
    _check(pytester, result)
    result.stdout.fnmatch_lines([f"mockpool: *runner: pytest-asyncio ({mode}, {scope} loop)*"])


def test_anyio(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"mockpool_services": "redis"})
    pytester.makeconftest((pytester.path / "conftest.py").read_text(encoding="utf-8") + ANYIO_CONFTEST_EXTRA)
    pytester.makepyfile(test_matrix=dedent(BODY.format(mark="@pytest.mark.anyio")))
    result = _run(pytester, *flags("anyio", "--mockpool-report=report.json"))
    _check(pytester, result)
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
        test_matrix=dedent(BODY.format(mark="@pytest.mark.asyncio_cooperative")),
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
    _check(pytester, result, passed=7, counters=3)
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
    pytester.makepyfile(test_matrix=dedent(BODY.format(mark="@pytest.mark.asyncio")))
    result = _run(pytester, *flags("asyncio", "-n", "2", "--mockpool-report=report.json", xdist=True))
    report = _check(pytester, result)
    result.stdout.fnmatch_lines(["mockpool: *2 xdist workers*", "*= mockpool (2 workers) =*"])
    assert sorted(report.data["workers"]) == ["gw0", "gw1"]
