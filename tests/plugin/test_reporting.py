"""Summary, header, JSON report, history in pytest's cache, and the xdist merge."""

from __future__ import annotations

import json

import pytest

from ._inner import Report, dedent, flags, setup_project

ASYNCIO_INI = {"asyncio_mode": "strict", "asyncio_default_fixture_loop_scope": "function"}

TWO_TESTS = """
import pytest


@pytest.mark.asyncio
async def test_one(mockpool):
    async with mockpool.acquire("counter") as c:
        c.value += 1


@pytest.mark.asyncio
async def test_two(mockpool):
    async with mockpool.acquire("counter") as c:
        assert c.value == 0
"""


def _history(pytester: pytest.Pytester) -> dict[str, object]:
    path = pytester.path / ".pytest_cache" / "v" / "mockpool" / "history"
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_summary_section_and_header(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "mockpool: services: + pytest_mockpool_register; runner: pytest-asyncio (strict, function loop); *",
            "*= mockpool =*",
            "service * acquisitions * hit rate * wait p50 * wait p99 * recoveries * leaks * degraded",
            # The first acquisition waits for the creation (a miss), the second is a hit.
            "counter * 2 * 50.0% * 0 * 0 * 0",
        ]
    )


def test_report_path_from_ini_is_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={**ASYNCIO_INI, "mockpool_report": "out/mockpool.json"}, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    sub = pytester.mkdir("sub")
    result = pytester.runpytest(*flags("asyncio"), "--rootdir", str(pytester.path), str(pytester.path))
    result.assert_outcomes(passed=2)
    assert not (sub / "out").exists()
    report = Report.read(pytester.path / "out" / "mockpool.json")
    assert report.service("counter")["acquisitions"] == 2
    assert report.service("counter")["hits"] == 1
    assert report.data["pytest"]["runner"] == "pytest-asyncio (strict, function loop)"
    assert report.data["pytest"]["leaks"] == []


def test_summary_can_be_turned_off(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={**ASYNCIO_INI, "mockpool_summary": "false"}, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*= mockpool =*")


def test_history_in_the_cache_warms_the_next_run(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    first = pytester.runpytest(*flags("asyncio", "--mockpool-report=first.json"))
    first.assert_outcomes(passed=2)
    history = _history(pytester)
    assert history["runs"] == 1
    assert history["tests"] == {
        "test_two.py::test_one": {"services": ["counter"], "last_run": 1},
        "test_two.py::test_two": {"services": ["counter"], "last_run": 1},
    }
    assert Report.read(pytester.path / "first.json").service("counter")["hits"] == 1

    second = pytester.runpytest(*flags("asyncio", "--mockpool-report=second.json"))
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["warmed ahead: counter=1", "history: 2 run(s) kept in pytest's cache*"])
    # Warmed before the first test asked: every acquisition is a hit now.
    assert Report.read(pytester.path / "second.json").service("counter")["hits"] == 2
    assert _history(pytester)["runs"] == 2


def test_history_off_and_corrupt_cache(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    target = pytester.path / ".pytest_cache" / "v" / "mockpool"
    target.mkdir(parents=True)
    (target / "history").write_text('{"format": "something else"}', encoding="utf-8")
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["history in the cache ignored*"])
    off = pytester.runpytest(*flags("asyncio", "-o", "mockpool_history=false"))
    off.assert_outcomes(passed=2)
    off.stdout.no_fnmatch_line("history: *")


CACHE_SPY = """

import os


def pytest_configure(config):
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    original = cache.set

    def spying_set(key, value):
        if key.startswith("mockpool/"):
            who = os.environ.get("PYTEST_XDIST_WORKER", "controller")
            with open(os.path.join(str(config.rootpath), "cache-writes.log"), "a") as log:
                log.write(f"{who} {key}\\n")
        return original(key, value)

    cache.set = spying_set
"""

XDIST_TESTS = """
import os

import pytest


def test_sync_sees_its_share(mockpool):
    # mockpool_max_total = 8 is divided among the 2 workers.
    assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "2"
    assert mockpool.budget.max_total == 4
    assert mockpool.name == "pytest-" + os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(6))
async def test_counter(mockpool, n):
    async with mockpool.acquire("counter") as c:
        assert c.value == 0
        c.value = n
"""


def test_xdist_workers_report_and_the_controller_writes_the_cache_once(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={**ASYNCIO_INI, "mockpool_max_total": "8"}, probe=False)
    pytester.makeconftest((pytester.path / "conftest.py").read_text(encoding="utf-8") + CACHE_SPY)
    pytester.makepyfile(test_x=dedent(XDIST_TESTS))
    result = pytester.runpytest_subprocess(
        *flags("asyncio", "-n", "2", "--mockpool-report=report.json", xdist=True)
    )
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*= mockpool (2 workers) =*", "counter * 6 *"])
    assert result.stdout.str().count("= mockpool") == 1
    writes = (pytester.path / "cache-writes.log").read_text(encoding="utf-8").splitlines()
    assert writes == ["controller mockpool/history"]
    history = _history(pytester)
    assert history["runs"] == 1
    tests = history["tests"]
    assert isinstance(tests, dict)
    assert len([t for t in tests if "test_counter" in t]) == 6
    report = Report.read(pytester.path / "report.json")
    assert report.service("counter")["acquisitions"] == 6
    assert report.data["pytest"]["workers"] == 2
