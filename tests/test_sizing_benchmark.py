"""The self-sizing benchmark's harness (``benchmarks/sizing.py``): every workload runs through
it at a tiny size, and its arithmetic (best, ratio, churn, bounds, pruning) gives the expected
figures on known inputs. Wall times are never asserted."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from benchmarks.sizing import (
    CHURN_TARGET,
    RATIO_TARGET,
    Case,
    Cost,
    Double,
    Hold,
    Params,
    Run,
    Tally,
    _pruned,
    churn,
    measure,
    percentile,
    ratio,
    run_test,
    summarize,
    table,
    workloads,
)
from mockpool import MockPool, ServiceSpec

#: Small enough that the six workloads run in a few seconds: 8 tests, 1 ms awaits, a
#: 40 ms trickle, and 50 loop turns for what the real run makes a millisecond of CPU.
TINY = Params(
    tests=8,
    sequential_tests=4,
    io_hold_s=0.001,
    sequential_await_s=0.001,
    trickle_s=0.04,
    trickle_every_s=0.01,
    services=3,
    max_total=4,
)
TURNS_PER_MS = 50.0


@pytest.mark.parametrize("name", [w.name for w in workloads(TINY, TURNS_PER_MS)])
def test_each_workload_runs_default_and_fixed_sizes_and_does_all_its_work(name: str) -> None:
    workload = next(w for w in workloads(TINY, TURNS_PER_MS) if w.name == name)
    runs = measure(workload, sizes=(1, 2), rounds=1)
    assert [r.max_size for r in runs] == [None, 1, 2]
    for run in runs:
        assert run.workload == name
        assert run.timeouts == 0
        # run_variant raised if a test failed or skipped work; this is the count it checked.
        assert run.passed == len(workload.cases)
        assert 1 <= run.peak_size <= run.created
        assert run.destroyed <= run.created
    for run in runs[1:]:
        if workload.max_total is not None:
            assert run.peak_size <= workload.max_total
    summary = summarize(name, runs)
    assert summary.best_size in (1, 2)
    assert summary.ratio == pytest.approx(runs[0].wall_s / summary.best_s)
    assert summary.tests == len(workload.cases)


def test_the_workloads_are_the_issues_six_io_on_an_expensive_double_nested_and_groups() -> None:
    by_name = {w.name: w for w in workloads(TINY, TURNS_PER_MS)}
    assert list(by_name) == [
        "cpu",
        "io",
        "io, expensive",
        "mixed",
        "burst+trickle",
        "many services",
        "nested",
        "groups",
        "sequential",
    ]
    assert by_name["io, expensive"].factories == by_name["cpu"].factories
    assert by_name["io, expensive"].cases[0].hold == by_name["io"].cases[0].hold
    assert by_name["cpu"].cases[0].hold.await_s is None
    assert by_name["cpu"].factories == {"client": Cost(turns=20 * 50, payload=325 * 1024)}
    assert by_name["io"].factories == {"cache": Cost()}
    assert by_name["io"].cases[0].hold.turns == 0
    trickle = by_name["burst+trickle"]
    assert trickle.burst == 8 and len(trickle.cases) == 8 + 4
    many = by_name["many services"]
    assert many.max_total == 4 and len(many.factories) == 3
    assert {len(c.services) for c in many.cases} <= {1, 2}
    assert all(list(c.services) == sorted(c.services) for c in many.cases)
    nested = by_name["nested"]
    assert list(nested.factories) == ["cache", "client"]
    assert nested.factories["client"] == by_name["cpu"].factories["client"]
    assert {c.services for c in nested.cases} == {("cache", "client")}  # client inside cache
    groups = by_name["groups"]
    assert groups.groups == {"app": ("client", "db", "cache")}
    assert list(groups.factories) == ["client", "db", "cache", "app"]  # members registered first
    assert groups.factories["client"] == by_name["cpu"].factories["client"]
    assert {c.services for c in groups.cases} == {("app",), ("client",)}
    assert by_name["sequential"].schedule == "sequential" and len(by_name["sequential"].cases) == 4


def test_a_double_left_dirty_fails_the_test() -> None:
    """The tests check what they lease: a pool whose reset cleans nothing is caught."""

    async def main() -> None:
        pool = MockPool()
        pool.register(ServiceSpec(name="x", factory=Double, max_size=1))
        async with pool:
            tally = Tally()
            case = Case(("x",), Hold())
            await run_test(pool, 1, case, tally)
            with pytest.raises(AssertionError, match="test 2: a used double"):
                await run_test(pool, 2, case, tally)
            assert tally.passed == 1

    asyncio.run(main())


def _run(max_size: int | None, wall_s: float, **overrides: Any) -> Run:
    fields: dict[str, Any] = {
        "workload": "w",
        "max_size": max_size,
        "round": 0,
        "wall_s": wall_s,
        "start_s": 0.01,
        "passed": 100,
        "timeouts": 0,
        "created": 10,
        "destroyed": 0,
        "peak_size": 10,
        "peak_per_service": {"a": 10 if max_size is None else min(10, max_size)},
        "peak_in_use": 10,
        "latency_p50_s": 0.0,
        "latency_p99_s": 0.0,
    }
    fields.update(overrides)
    return Run(**fields)


def test_ratio_and_churn_on_known_inputs() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) == math.inf
    assert churn(created=200, destroyed=10) == 0.05
    assert churn(created=0, destroyed=0) == 0.0


def test_summary_takes_the_best_complete_rounds_and_the_worst_churn() -> None:
    runs = [
        _run(None, 2.0, created=100, destroyed=3, peak_size=40),
        _run(None, 1.8, round=1, created=50, destroyed=4, peak_size=60),
        _run(4, 1.5),
        _run(4, 1.6, round=1),
        # Faster, but two tests timed out: it did less work and cannot be the best.
        _run(8, 1.0, timeouts=2, passed=98),
        _run(16, 1.7),
    ]
    s = summarize("w", runs, load=1.5)
    assert (s.default_s, s.best_size, s.best_s) == (1.8, 4, 1.5)
    assert s.ratio == pytest.approx(1.2)
    assert (s.churn, s.created, s.destroyed) == (0.08, 50, 4)
    assert s.peak_size == 60
    assert s.timeouts == 0
    assert s.rounds == 2
    assert s.misses() == [
        "w: default sizing took 1.20x the best fixed size (max_size=4; target <= 1.15x)",
        "w: churn 8.0% (4 of 50 instances destroyed before close; target <= 5%)",
    ]
    lines = table([s]).splitlines()
    assert lines[1].split() == ["w", "100", "1.800", "s", "0.010", "s", "1.500", "s", "(4)", "1.20x", "4/50", "8.0%", "60", "0", "1.5"]  # fmt: skip


def test_targets_are_inclusive_and_timeouts_always_miss() -> None:
    at_target = [_run(None, RATIO_TARGET, created=100, destroyed=round(100 * CHURN_TARGET)), _run(2, 1.0)]
    assert summarize("w", at_target).misses() == []
    timed_out = [_run(None, 1.0, timeouts=1, passed=99), _run(2, 1.0)]
    s = summarize("w", timed_out)
    assert s.timeouts == 1
    (miss,) = s.misses()
    assert miss == (
        "w: 1 AcquireTimeout with default sizing (target 0); those runs did not do the whole "
        "work, so their time and ratio are not comparable"
    )


def test_a_fixed_size_that_grew_past_its_bound_is_reported() -> None:
    runs = [
        _run(None, 1.0),
        _run(2, 1.0, peak_per_service={"a": 4, "b": 2}),
        _run(2, 1.1, round=1, peak_per_service={"a": 3, "b": 3}),
        _run(4, 2.0, peak_per_service={"a": 5}),
        _run(8, 2.0, peak_per_service={"a": 8}),
    ]
    s = summarize("w", runs)
    assert s.best_size == 2 and s.best_grew
    (miss,) = s.misses()
    assert miss == (
        "w: a fixed max_size was passed (max_size -> most instances of one service alive): "
        "2 -> 4 (a, b); 4 -> 5 (a)"
    )
    assert "(2*)" in table([s])


def test_no_complete_fixed_size_leaves_no_ratio() -> None:
    s = summarize("w", [_run(None, 1.0), _run(1, 30.0, timeouts=5, passed=95)])
    assert s.best_size is None and math.isnan(s.ratio)
    assert "none complete" in table([s])
    with pytest.raises(ValueError, match="no run with default sizing"):
        summarize("w", [_run(1, 1.0)])


def test_pruning_drops_sizes_twice_as_slow_as_the_first_rounds_fastest() -> None:
    first = [_run(None, 1.0), _run(1, 2.5), _run(2, 1.9), _run(4, 0.8), _run(8, 0.5, timeouts=1)]
    # The fastest complete run of round 1 took 0.8 s (the 0.5 s one was incomplete).
    assert [m for m in (1, 2, 4, 8) if _pruned(first, m)] == [1, 2, 8]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([], 50) == 0.0
