"""Runner breadth beyond the dev venv (test_runners.py covers pytest 9 + pytest-asyncio 1.x).

* pytest 7.4 with pytest-asyncio 0.23 (the era of the per-test ``event_loop`` fixture), and
  pytest 8 with pytest-asyncio 1.x, strict and auto: each in its own cached venv
  (``_venvs.py``) with mockpool installed from this checkout, running the runner matrix's inner
  tests in a subprocess with that venv's python. The first run builds the venvs (12-20 s
  each with an empty pip cache); later runs reuse them.
* pytest-xdist with pytest-randomly: the same tests shuffled, on two workers.
* trio under anyio's plugin: acquiring says clearly that mockpool runs on asyncio.
"""

from __future__ import annotations

import re

import pytest

from ._inner import (
    ASYNCIO_VARIANTS,
    RUNNER_BODY,
    check_runner_run,
    dedent,
    flags,
    pyproject,
    setup_asyncio_project,
    setup_project,
)
from ._venvs import Venv, VenvSpec

INNER_TIMEOUT_S = 60

PYTEST74 = VenvSpec("pytest7.4-asyncio0.23", ("pytest==7.4.*", "pytest-asyncio==0.23.*"))
PYTEST8 = VenvSpec("pytest8-asyncio1", ("pytest==8.*", "pytest-asyncio==1.*"))


@pytest.fixture(scope="session")
def venv(request: pytest.FixtureRequest) -> Venv:
    """The venv of ``request.param`` (a ``VenvSpec``). Session-scoped, so it is built before
    ``pytester`` points ``HOME`` at a temporary directory (the cache and pip's own cache live
    under the real one)."""
    spec: VenvSpec = request.param
    return Venv.get(spec)


def _run_in(pytester: pytest.Pytester, venv: Venv, *args: str) -> pytest.RunResult:
    """Run pytest with the venv's python. ResourceWarnings are shown (Python hides them by
    default): an event loop collected unclosed, outside any test, must not go unnoticed."""
    result = pytester.run(
        str(venv.python), "-W", "default::ResourceWarning", "-m", "pytest", *args, timeout=INNER_TIMEOUT_S
    )
    for stream in (result.stdout, result.stderr):
        stream.no_fnmatch_line("*ResourceWarning*")
    return result


# == pytest 7.4 + pytest-asyncio 0.23 ==========================================================

#: The old era's ways of getting a loop: a sync test that drives the function-scoped
#: ``event_loop`` fixture itself (a new loop per test, closed by the fixture without cancelling
#: what is still pending: the pool's runtime there), and a class whose tests share one loop
#: (``scope="class"``, new in 0.23). Every test acquires redis, so leases cross loops.
EVENT_LOOP_TESTS = """
import asyncio

import pytest


def test_sync_drives_event_loop(mockpool, event_loop):
    async def use():
        async with mockpool.acquire("redis") as r:
            assert await r.get("shared") is None, "another test's write is visible"
            await r.set("shared", "sync")

    event_loop.run_until_complete(use())


@pytest.mark.asyncio(scope="class")
class TestClassLoop:
    loops = []

    async def test_one(self, mockpool):
        self.loops.append(asyncio.get_running_loop())
        async with mockpool.acquire("redis") as r:
            assert await r.get("shared") is None, "another test's write is visible"
            await r.set("shared", "one")

    async def test_two(self, mockpool):
        self.loops.append(asyncio.get_running_loop())
        assert self.loops[0] is self.loops[-1], "the class's tests did not share a loop"
        async with mockpool.acquire("redis") as r:
            assert await r.get("shared") is None, "another test's write is visible"
            await r.set("shared", "two")
"""


@pytest.mark.slow
@pytest.mark.parametrize("venv", [PYTEST74], indirect=True, ids=["pytest7.4-asyncio0.23"])
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest74_asyncio023(pytester: pytest.Pytester, venv: Venv, mode: str) -> None:
    # pytest-asyncio 0.23 has no asyncio_default_*_loop_scope options: under
    # filterwarnings=error an unknown option would fail the run.
    setup_project(pytester, ini={"mockpool_services": "redis", "asyncio_mode": mode})
    mark = "@pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(
        test_matrix=dedent(RUNNER_BODY.format(mark=mark)), test_event_loop=dedent(EVENT_LOOP_TESTS)
    )
    result = _run_in(pytester, venv, *flags("asyncio", "--mockpool-report=report.json"))
    result.stdout.fnmatch_lines(["platform * pytest-7.4.*", "plugins: *asyncio-0.23.*"])
    check_runner_run(pytester, result, passed=8, redis=5)
    result.stdout.fnmatch_lines([f"mockpool: *runner: pytest-asyncio ({mode}, function loop)*"])


# == pytest 8 + pytest-asyncio 1.x =============================================================


@pytest.mark.slow
@pytest.mark.parametrize("venv", [PYTEST8], indirect=True, ids=["pytest8-asyncio1"])
@pytest.mark.parametrize("variant", sorted(ASYNCIO_VARIANTS))
def test_pytest8_asyncio1(pytester: pytest.Pytester, venv: Venv, variant: str) -> None:
    mode, scope = setup_asyncio_project(pytester, variant)
    result = _run_in(pytester, venv, *flags("asyncio", "--mockpool-report=report.json"))
    result.stdout.fnmatch_lines(["platform * pytest-8.*", "plugins: *asyncio-1.*"])
    check_runner_run(pytester, result)
    result.stdout.fnmatch_lines([f"mockpool: *runner: pytest-asyncio ({mode}, {scope} loop)*"])


# == xdist + pytest-randomly ===================================================================

RANDOMLY_SEED = 20240611

#: Each process writes the order it will run the tests in (after pytest-randomly shuffled it).
ORDER_SPY = """


def pytest_collection_finish(session):
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    with open(f"order-{worker}.txt", "w") as out:
        out.write("\\n".join(item.name for item in session.items))
"""

DEFINITION_ORDER = [
    "test_redis_first",
    "test_redis_second",
    "test_counter",
    "test_supervisors_run_in_this_loop",
    "test_sync_reads_the_pool",
]


def test_xdist_with_randomly(pytester: pytest.Pytester) -> None:
    setup_project(
        pytester,
        ini={
            "mockpool_services": "redis",
            "asyncio_mode": "strict",
            "asyncio_default_fixture_loop_scope": "function",
        },
    )
    pytester.makeconftest((pytester.path / "conftest.py").read_text(encoding="utf-8") + ORDER_SPY)
    pytester.makepyfile(test_matrix=dedent(RUNNER_BODY.format(mark="@pytest.mark.asyncio")))
    result = pytester.runpytest_subprocess(
        *flags(
            "asyncio",
            "-n",
            "2",
            f"--randomly-seed={RANDOMLY_SEED}",
            "--mockpool-report=report.json",
            xdist=True,
            randomly=True,
        ),
        timeout=INNER_TIMEOUT_S,
    )
    result.stdout.fnmatch_lines([f"Using --randomly-seed={RANDOMLY_SEED}"])
    report = check_runner_run(pytester, result)
    assert sorted(report.data["workers"]) == ["gw0", "gw1"]
    orders = {
        path.name: path.read_text(encoding="utf-8").split("\n") for path in pytester.path.glob("order-*")
    }
    assert set(orders) == {"order-gw0.txt", "order-gw1.txt"}
    # Both workers shuffled the same way (xdist requires it), away from the definition order.
    assert orders["order-gw0.txt"] == orders["order-gw1.txt"]
    assert sorted(orders["order-gw0.txt"]) == sorted(DEFINITION_ORDER)
    assert orders["order-gw0.txt"] != DEFINITION_ORDER


# == trio ======================================================================================

#: ``redis`` (built-in) starts empty: its acquire waits for a creation. ``warm_redis`` and
#: ``warm_plain`` are created when the fixture makes the pool (min_size=1): their acquire is
#: served at once by an idle instance, which does not look at the loop.
TRIO_CONFTEST = """
import pytest

from mockpool import ServiceSpec
from mockpool.services import redis_service


@pytest.fixture
def anyio_backend():
    return "trio"


def pytest_mockpool_register(pool, config):
    pool.register(redis_service(name="warm_redis", min_size=1))
    pool.register(ServiceSpec(name="warm_plain", factory=object, min_size=1))
"""

TRIO_TESTS = """
import pytest

from mockpool import MockPool, ServiceSpec


@pytest.mark.anyio
async def test_acquire_waits(mockpool):
    async with mockpool.acquire("redis"):
        pass


@pytest.mark.anyio
async def test_own_pool():
    pool = MockPool(name="mine")
    pool.register(ServiceSpec(name="plex", factory=object))
    async with pool.acquire("plex"):
        pass


@pytest.mark.anyio
async def test_idle_loop_bound_instance(mockpool):
    async with mockpool.acquire("warm_redis") as r:
        await r.set("k", "v")


@pytest.mark.anyio
async def test_idle_plain_instance(mockpool):
    async with mockpool.acquire("warm_plain"):
        pass


@pytest.mark.anyio
async def test_reading_the_pool_is_fine(mockpool):
    assert {"redis", "warm_redis", "warm_plain"} <= set(mockpool.services)
"""

#: Per test: a line of its failure that must say which service and that mockpool runs on
#: asyncio, not trio.
TRIO_FAILURES = {
    "test_acquire_waits": r"^E +mockpool\.errors\.MockPoolError: service 'redis': .*\basyncio\b.*\btrio\b",
    "test_own_pool": r"^E +mockpool\.errors\.MockPoolError: service 'plex': .*\basyncio\b.*\btrio\b",
    # fakeredis fails first ("no running event loop"); the plugin adds the explanation.
    "test_idle_loop_bound_instance": (
        r"^E +mockpool: test_trio\.py::test_idle_loop_bound_instance acquired 'warm_redis' under "
        r"trio; mockpool runs on asyncio\b"
    ),
    "test_idle_plain_instance": (
        r"^mockpool: test_trio\.py::test_idle_plain_instance acquired 'warm_plain' under trio; "
        r"mockpool runs on asyncio\b"
    ),
}


def test_trio_says_mockpool_runs_on_asyncio(pytester: pytest.Pytester) -> None:
    pytest.importorskip("trio")
    pytester.makepyprojecttoml(pyproject(mockpool_services="redis"))
    pytester.makeconftest(TRIO_CONFTEST)
    pytester.makepyfile(test_trio=dedent(TRIO_TESTS))
    result = pytester.runpytest_subprocess(*flags("anyio"), timeout=INNER_TIMEOUT_S)
    result.assert_outcomes(passed=1, failed=len(TRIO_FAILURES))
    out = result.stdout.str()
    sections = re.split(r"^_+ (test_\w+) _+$", out, flags=re.MULTILINE)
    failures = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert set(failures) == set(TRIO_FAILURES)
    for test, pattern in TRIO_FAILURES.items():
        assert re.search(pattern, failures[test], flags=re.MULTILINE), f"{test}:\n{failures[test]}"
    # No failure comes from the plugin's own set-up of the test under trio.
    assert "enter_loop" not in out and "_enter_test" not in out
