"""Summary, header, JSON report, history in pytest's cache, and the xdist merge."""

from __future__ import annotations

import json

import pytest

from mockpool.report import HIT_LEGEND

from ._inner import Report, dedent, flags, pyproject, setup_project

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
            "service  acquisitions  hit rate  reuse rate  wait p50  wait p99  reset fail  recoveries  leaks  degraded  timeouts",
            # The first acquisition waits for the creation (a miss), the second is a hit.
            "counter             2     50.0%       50.0%  * 0           0      0         0         0",
            HIT_LEGEND,
        ]
    )
    result.stdout.no_fnmatch_line("problem: *")
    result.stdout.no_fnmatch_line("last errors:")


def test_summary_shows_a_dash_for_a_service_no_test_acquired(pytester: pytest.Pytester) -> None:
    """A hit rate of 0.0% reads as every acquisition missing, and a wait of 0us as served at
    once: with no acquisition, there is neither."""
    setup_project(pytester, ini={**ASYNCIO_INI, "mockpool_services": "jwt"}, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    (row,) = [line for line in result.stdout.lines if line.startswith("jwt ")]
    assert row.split() == ["jwt", "0", "-", "-", "-", "-", "0", "0", "0", "0", "0"]


MANY_HITS = """
import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(30))
async def test_counter(mockpool, n):
    async with mockpool.acquire("counter") as c:
        c.value += 1
"""


def test_summary_wait_percentiles_weigh_in_the_acquisitions_served_at_once(pytester: pytest.Pytester) -> None:
    """29 of 30 acquisitions find the instance idle: the median wait is 0, as the JSON report
    says, not the one wait for the creation (it was "wait p50 44.1ms" in a 126-test suite)."""
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_many=dedent(MANY_HITS))
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(passed=30)
    (row,) = [line for line in result.stdout.lines if line.startswith("counter ")]
    cells = row.split()
    assert cells[1:4] == ["30", "96.7%", "96.7%"]
    assert cells[4] == "0us"  # wait p50
    assert cells[5] != "0us"  # wait p99: the creation's wait, 1 in 30
    counter = Report.read(pytester.path / "report.json").service("counter")
    assert counter["wait_p50_s"] == 0.0 < counter["wait_p99_s"]


ONE_CONFTEST = """
from mockpool import ServiceSpec


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="one", factory=dict, max_size=1))
"""

STARVED_TESTS = """
import pytest

from mockpool import AcquireTimeout


@pytest.mark.asyncio
async def test_first(mockpool):
    async with mockpool.acquire("one"):
        pass


@pytest.mark.asyncio
async def test_starved(mockpool):
    async with mockpool.acquire("one"):
        with pytest.raises(AcquireTimeout):
            async with mockpool.acquire("one", timeout=0.01):
                pass
"""


def test_summary_shows_the_timeouts_the_rates_leave_out(pytester: pytest.Pytester) -> None:
    """A miss, a hit and a timeout: the summary read "3 acquisitions, hit rate 50.0%" (1.5
    hits?) with the timeout nowhere, though the rates count the 2 served and the waits count
    the timeout's 10 ms. The timeouts column and the legend make the row add up."""
    pytester.makepyprojecttoml(pyproject(**ASYNCIO_INI))
    pytester.makeconftest(dedent(ONE_CONFTEST))
    pytester.makepyfile(test_starved=dedent(STARVED_TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    line = next(line for line in result.stdout.lines if line.startswith("service "))
    header = [cell.strip() for cell in line.split("  ") if cell.strip()]
    (row,) = [line.split() for line in result.stdout.lines if line.startswith("one ")]
    cells = dict(zip(header, row, strict=True))
    assert (cells["acquisitions"], cells["hit rate"], cells["timeouts"]) == ("3", "50.0%", "1")
    result.stdout.fnmatch_lines([HIT_LEGEND])


FLAKY_CONFTEST = """
from mockpool import ServiceSpec


def _reset(instance):
    raise AttributeError("'AsyncFakeSocket' object has no attribute 'kill'")


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="flaky", factory=dict, reset=_reset, max_size=1))
"""

FLAKY_TESTS = """
import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(3))
async def test_flaky(mockpool, n):
    async with mockpool.acquire("flaky", timeout=5) as d:
        assert d == {}
"""


def test_summary_names_a_service_whose_resets_always_fail(pytester: pytest.Pytester) -> None:
    """Every lease ends in a failed reset, so every lease rebuilds the instance: the summary
    says so, with the count, the error and the fix, instead of passing it over."""
    pytester.makepyprojecttoml(pyproject(**ASYNCIO_INI))
    pytester.makeconftest(dedent(FLAKY_CONFTEST))
    pytester.makepyfile(test_flaky=dedent(FLAKY_TESTS))
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(passed=3)
    error = "AttributeError: 'AsyncFakeSocket' object has no attribute 'kill'"
    problem = (
        "service 'flaky': 3 of 3 resets failed, so those leases rebuilt their instance "
        f"(last error: {error}); the reset hook raises: fix it, or remove reset="
    )
    result.stdout.fnmatch_lines(
        [
            "service  acquisitions  hit rate  reuse rate  wait p50  wait p99  reset fail  recoveries  leaks  degraded  timeouts",
            "flaky               3 * 3           3      0         0         0",
            f"problem: {problem}",
            "last errors:",
            f"  flaky: {error}",
        ]
    )
    report = Report.read(pytester.path / "report.json")
    assert report.service("flaky")["reset_failures"] == 3
    assert report.data["problems"] == [problem]


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


def test_a_run_after_an_xdist_run_warms_the_size_one_worker_settled_at(pytester: pytest.Pytester) -> None:
    """Two workers, each running its tests one at a time, each held one ``counter`` at most:
    the merged history says peak 2 (summed over the workers) and size 1 (one worker's pool).
    A run in one process warms 1: it warmed the summed peak, 2, before."""
    from mockpool.history import History, RunRecord, ServiceUsage

    worker = RunRecord(
        1.0,
        2.0,
        {"counter": ServiceUsage(10, 1, 0.001, 0.002, (10.0,), size=1)},
        {"test_two.py::test_one": ("counter",)},
    )
    history = History().merge(RunRecord.combine([worker, worker]))
    assert (history.peak("counter"), history.size("counter")) == (2.0, 1.0)
    target = pytester.path / ".pytest_cache" / "v" / "mockpool"
    target.mkdir(parents=True)
    (target / "history").write_text(json.dumps(history.to_dict()), encoding="utf-8")
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_two=dedent(TWO_TESTS))
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["warmed ahead: counter=1"])


COOPERATIVE_TESTS = """
import pytest


@pytest.mark.asyncio_cooperative
async def test_one(mockpool):
    async with mockpool.acquire("counter") as counter:
        assert counter.value == 0


@pytest.mark.asyncio_cooperative
async def test_two(mockpool):
    async with mockpool.acquire("counter") as counter:
        assert counter.value == 0
"""


def test_a_cooperative_run_warmed_from_history_reports_its_warm_up(pytester: pytest.Pytester) -> None:
    """Under cooperative the warm-up runs in the background of the runner's loop; the report
    says what it made and how long it took, as it does under the other runners (it said 0
    warmed and no warm-up while the summary listed what was warmed)."""
    from mockpool.history import History, RunRecord, ServiceUsage

    run = RunRecord(1.0, 2.0, {"counter": ServiceUsage(10, 2, 0.001, 0.002, (10.0,), size=2)}, {})
    target = pytester.path / ".pytest_cache" / "v" / "mockpool"
    target.mkdir(parents=True)
    (target / "history").write_text(json.dumps(History().merge(run).to_dict()), encoding="utf-8")
    setup_project(pytester, probe=False)
    pytester.makepyfile(test_two=dedent(COOPERATIVE_TESTS))
    result = pytester.runpytest(
        *flags(
            "cooperative",
            "--mockpool-report=report.json",
            "-W",
            "ignore:FixtureDef.has_location:pytest.PytestRemovedIn10Warning",
        )
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["warmed ahead: counter=2"])
    report = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    assert report["learning"]["counter"]["warmed"] == 2
    assert report["warmup_s"] is not None and report["warmup_s"] >= 0


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
            # workerinput, not PYTEST_XDIST_WORKER: an outer xdist run sets that variable in
            # this inner run's controller too.
            workerinput = getattr(config, "workerinput", None)
            who = workerinput["workerid"] if workerinput is not None else "controller"
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
    # The merged figures are those of the workers' own reports, added up.
    workers = [w["services"]["counter"] for w in report.data["workers"].values()]
    merged = report.service("counter")
    for counter in (
        "hits",
        "reuses",
        "misses",
        "timeouts",
        "cancellations",
        "acquire_errors",
        "reset_failures",
    ):
        assert merged[counter] == sum(w[counter] for w in workers), counter
    # Every acquisition ended one way: served, timed out, cancelled or failed.
    unserved = merged["timeouts"] + merged["cancellations"] + merged["acquire_errors"]
    assert merged["acquisitions"] == merged["reuses"] + merged["misses"] + unserved
    served = sum(w["reuses"] + w["misses"] for w in workers)
    assert merged["hit_rate"] == pytest.approx(merged["hits"] / served)
    assert merged["reuse_rate"] == pytest.approx(merged["reuses"] / served)
    # Each worker misses at most once (its first creation): most of the 6 waited 0 s.
    assert merged["misses"] <= 2
    assert merged["wait_p50_s"] == 0.0
    assert report.data["problems"] == []


SYNC_ONLY = """
def test_sync_one(mockpool):
    assert mockpool.stats("counter").acquisitions == 0


def test_sync_two(mockpool):
    assert mockpool.stats("counter").acquisitions == 0
"""


def test_the_report_means_the_same_with_and_without_xdist(pytester: pytest.Pytester) -> None:
    """The same tests, in one process and on two xdist workers: one type per figure, null
    where the summary shows a dash (nothing served), the runner the tests ran under (not the
    controller's guess from its plugins), and the number of pools the figures cover."""
    setup_project(pytester, ini=ASYNCIO_INI, probe=False)
    pytester.makepyfile(test_sync=dedent(SYNC_ONLY))
    one = pytester.runpytest(*flags("asyncio", "--mockpool-report=one.json"))
    one.assert_outcomes(passed=2)
    two = pytester.runpytest_subprocess(
        *flags("asyncio", "-n", "2", "--mockpool-report=two.json", xdist=True)
    )
    two.assert_outcomes(passed=2)
    for result, name, workers in ((one, "one.json", 1), (two, "two.json", 2)):
        (row,) = [line for line in result.stdout.lines if line.startswith("counter ")]
        assert row.split()[2:6] == ["-"] * 4, name
        report = Report.read(pytester.path / name)
        counter = report.service("counter")
        nothing = {key: counter[key] for key in ("hit_rate", "reuse_rate", "wait_p50_s", "wait_p99_s")}
        assert nothing == dict.fromkeys(nothing), name
        assert counter["recoveries"] == {"snapshot": 0, "factory": 0, "minimal": 0, "stub": 0}, name
        assert report.data["pytest"]["runner"] == "none (sync tests only)", name
        assert report.data["pytest"]["workers"] == workers, name
    assert len(Report.read(pytester.path / "two.json").data["workers"]) == 2


def test_the_merged_summary_weighs_each_worker_by_the_waits_it_had() -> None:
    """Worker gw0's ring kept 2,048 of its 6,000 waits of 1 s, gw1 had 100 of 10 s: the
    merged p97 is 1 s (10 s is 1.6 % of the waits), as one process with them all says. It
    read 10 s when gw1's 100 samples stood beside gw0's 2,048 as equals."""
    from mockpool.metrics import ServiceMetrics
    from mockpool.plugin.summary import _merge

    def worker(waits: list[float]) -> dict[str, object]:
        m = ServiceMetrics()
        for w in waits:
            m.record_wait(w)
        counters = dict.fromkeys(("acquisitions", "hits", "reuses", "misses", "leaks", "degraded_leases"), 0)
        counters.update(dict.fromkeys(("timeouts", "cancellations", "acquire_errors", "resets"), 0))
        counters.update(reset_failures=0, isolation_failures=0, zero_waits=0)
        return {
            "services": {
                "svc": {
                    **counters,
                    "recoveries": {},
                    "last_error": None,
                    "last_reset_error": None,
                    "recorded_waits": m.waits.count,
                    "waits": m.waits.values(),
                }
            }
        }

    row = _merge([worker([1.0] * 6000), worker([10.0] * 100)])["svc"]
    assert row.wait_percentiles(97, 98.5) == (1.0, 10.0)  # 98.4 % of the waits are 1 s


def test_the_summary_prints_no_100_for_a_rate_short_of_it() -> None:
    """Two workers, 2,499 hits and one miss between them: ``hit rate 100.0%`` read as "every
    acquisition found one idle". It reads 99.9 %; all hits on one worker still read 100.0 %."""
    from mockpool.plugin.summary import _merge, summary_table

    def worker(hits: int, misses: int) -> dict[str, object]:
        counters = dict.fromkeys(("leaks", "degraded_leases", "timeouts", "cancellations"), 0)
        counters.update(
            dict.fromkeys(("acquire_errors", "resets", "reset_failures", "isolation_failures"), 0)
        )
        served = {"acquisitions": hits + misses, "hits": hits, "reuses": hits, "misses": misses}
        return {
            "services": {
                "svc": {
                    **counters,
                    **served,
                    "zero_waits": hits,
                    "recoveries": {},
                    "last_error": None,
                    "last_reset_error": None,
                    "recorded_waits": misses,
                    "waits": [0.5] * misses,
                }
            }
        }

    header, row = summary_table(_merge([worker(1500, 0), worker(999, 1)]))
    cells = dict(zip(header, row, strict=True))
    assert (cells["acquisitions"], cells["hit rate"], cells["reuse rate"]) == ("2500", "99.9%", "99.9%")
    header, row = summary_table(_merge([worker(1500, 0)]))
    assert dict(zip(header, row, strict=True))["hit rate"] == "100.0%"
