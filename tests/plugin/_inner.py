"""Helpers to build and run inner pytest sessions (``pytester``) for the plugin's tests.

Every inner run names the plugins it runs with: other async runners installed next to
mockpool are switched off with ``-p no:...`` (the anyio pattern), the looptime plugin too
(it leaks event loops under pytest-asyncio 1.x), and the inner project writes its own
``[tool.pytest.ini_options]`` with ``filterwarnings = error``.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Never wanted in an inner run (``-p no:randomly`` last: ``flags(randomly=True)`` drops it).
BASE_FLAGS = ("-p", "no:looptime_plugin", "-p", "no:randomly")

#: Plugins to switch off per async runner, so only that runner drives the inner tests.
RUNNER_FLAGS = {
    "asyncio": ("-p", "no:anyio", "-p", "no:asyncio-cooperative"),
    "anyio": ("-p", "no:asyncio", "-p", "no:asyncio-cooperative"),
    "cooperative": ("-p", "no:asyncio", "-p", "no:anyio"),
}

#: A conftest registering two custom services: a counter (isolation), a probe whose health
#: check records the loop it ran in (the supervisors' progress while tests run). The probe
#: is left out where it is not the point: with anyio 4.16, a health check the supervisor
#: spawned just before a loop closes is cancelled before it starts, and its coroutine is
#: reported "never awaited" when collected (see docs/pytest.md, known issues).
CONFTEST = """
import asyncio

import probe

from mockpool import ServiceSpec


class Counter:
    def __init__(self):
        self.value = 0


def _reset(counter):
    counter.value = 0


def _health(instance):
    probe.CHECKED_LOOPS.add(id(asyncio.get_running_loop()))
    return True


PROBE_SERVICE = {probe}


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="counter", factory=Counter, reset=_reset, max_size=4))
    if PROBE_SERVICE:
        pool.register(
            ServiceSpec(name="probe", factory=object, health_check=_health, health_interval=0.05, min_size=1)
        )
"""

PROBE = "CHECKED_LOOPS = set()\n"


def pyproject(**options: Any) -> str:
    """``[tool.pytest.ini_options]`` with ``filterwarnings = error`` and ``options``."""
    lines = ["[tool.pytest.ini_options]", 'filterwarnings = ["error"]']
    for key, value in options.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def conftest(*, probe: bool = True) -> str:
    return CONFTEST.replace("{probe}", str(probe))


def setup_project(
    pytester: pytest.Pytester, *, ini: dict[str, Any] | None = None, probe: bool = True
) -> None:
    pytester.makepyprojecttoml(pyproject(**(ini or {})))
    pytester.makeconftest(conftest(probe=probe))
    pytester.makepyfile(probe=PROBE)


def flags(runner: str, *extra: str, xdist: bool = False, randomly: bool = False) -> list[str]:
    """The flags of an inner run under ``runner``; ``xdist`` leaves xdist on, ``randomly``
    turns pytest-randomly on (it is off by default, like in the project's own addopts)."""
    base = list(BASE_FLAGS)
    if randomly:
        base = [*base[:-2], "-p", "randomly"]
    out = [*base, *RUNNER_FLAGS[runner]]
    if not xdist:
        out += ["-p", "no:xdist"]
    return out + list(extra)


def dedent(source: str) -> str:
    return textwrap.dedent(source).lstrip()


@dataclass
class Report:
    """The JSON report an inner run wrote with ``--mockpool-report``."""

    data: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Report:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def service(self, name: str) -> dict[str, Any]:
        services: dict[str, Any] = self.data["services"]
        return dict(services[name])


#: pytest-asyncio variants of the runner matrix: (mode, default loop scope, the test's mark).
ASYNCIO_VARIANTS = {
    "strict-function": ("strict", "function", "@pytest.mark.asyncio"),
    "strict-session": ("strict", "session", "@pytest.mark.asyncio(loop_scope='session')"),
    "auto-function": ("auto", "function", ""),
    "auto-session": ("auto", "session", ""),
}

#: The runner matrix's inner tests (test_runners.py, test_runner_breadth.py): two tests that
#: would see each other's redis writes if an instance were not reset (or were shared), a
#: custom service registered by the hook, a test that waits until the pool's supervisors ran
#: a health check *in its own loop*, and a sync test. ``{mark}`` is the runner's mark.
RUNNER_BODY = """
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


def setup_asyncio_project(pytester: pytest.Pytester, variant: str) -> tuple[str, str]:
    """A project with :data:`RUNNER_BODY` under pytest-asyncio's ``variant`` (a key of
    :data:`ASYNCIO_VARIANTS`); returns its ``(mode, loop scope)``."""
    mode, scope, mark = ASYNCIO_VARIANTS[variant]
    setup_project(
        pytester,
        ini={
            "mockpool_services": "redis",
            "asyncio_mode": mode,
            "asyncio_default_fixture_loop_scope": scope,
            "asyncio_default_test_loop_scope": scope,
        },
    )
    pytester.makepyfile(test_matrix=dedent(RUNNER_BODY.format(mark=mark)))
    return mode, scope


def check_runner_run(
    pytester: pytest.Pytester,
    result: pytest.RunResult,
    *,
    passed: int = 5,
    counters: int = 1,
    redis: int = 2,
) -> Report:
    """All passed, no cross-loop error, no coroutine left unawaited, and the report (written
    with ``--mockpool-report=report.json``) counts the acquisitions and no leak."""
    result.assert_outcomes(passed=passed)
    result.stdout.no_fnmatch_line("*different*loop*")
    result.stdout.no_fnmatch_line("*never awaited*")
    report = Report.read(pytester.path / "report.json")
    assert report.service("redis")["acquisitions"] == redis
    assert report.service("counter")["acquisitions"] == counters
    assert report.service("redis")["leaks"] == 0
    return report


def read_history(pytester: pytest.Pytester) -> dict[str, Any]:
    """The history an inner run kept in pytest's cache (``mockpool/history``)."""
    path = pytester.path / ".pytest_cache" / "v" / "mockpool" / "history"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
