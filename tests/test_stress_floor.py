"""The stress floor benchmark (``benchmarks/stress_floor.py``): its split of a test into body and
double on a clock the test moves, its sums over the suite's mix, and one tiny real run. Wall
times are never asserted."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType
from typing import Any

import pytest

import benchmarks.stress_floor as floor
from stress.baseline import FreshUse
from stress.graph import stress_specs
from stress.scenario import KINDS, Case, make_cases


class Clock:
    """``perf_counter`` for the module under test: moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Costly:
    """A ``use`` whose blocks take 1 s to enter and 2 s to leave, on the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, name: str) -> Costly:
        return self

    async def __aenter__(self) -> Any:
        self.clock.now += 1.0
        return object()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.clock.now += 2.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("benchmarks.stress_floor.perf_counter", clock)
    return clock


def test_a_body_is_the_time_inside_the_block_not_the_acquire_or_release(clock: Clock) -> None:
    use = floor.SplitUse(Costly(clock))

    async def test() -> None:
        async with use("a"):
            clock.now += 0.25

    asyncio.run(test())
    assert use.body_s == pytest.approx(0.25)
    assert clock.now == pytest.approx(3.25)  # the 3 s of entering and leaving are not body


def test_a_nested_block_counts_its_body_once_and_its_acquire_and_release_not_at_all(clock: Clock) -> None:
    use = floor.SplitUse(Costly(clock))

    async def test() -> None:
        async with use("outer"):
            clock.now += 0.1
            async with use("inner"):
                clock.now += 0.2
            clock.now += 0.4

    asyncio.run(test())
    assert use.body_s == pytest.approx(0.7)
    assert clock.now == pytest.approx(6.7)


def test_a_body_that_raises_is_counted_and_the_error_propagates(clock: Clock) -> None:
    use = floor.SplitUse(Costly(clock))

    async def test() -> None:
        async with use("a"):
            clock.now += 0.5
            raise KeyError("boom")

    with pytest.raises(KeyError):
        asyncio.run(test())
    assert use.body_s == pytest.approx(0.5)


def test_totals_weigh_each_kind_by_the_suite_mix_and_the_ceiling_leaves_the_pool_out() -> None:
    costs = [floor.KindCost(kind, 1.0, 0.5, 2.0, 10.0) for kind in KINDS]
    costs[0] = floor.KindCost(costs[0].kind, 3.0, 0.5, 2.0, 10.0)
    sums = floor.totals(costs, 100)
    mix = Counter(case.kind for case in make_cases(100))
    first = mix[costs[0].kind]
    assert sums["pooled_body_s"] == pytest.approx(3.0 * first + 1.0 * (100 - first))
    assert sums["pooled_double_s"] == pytest.approx(50.0)
    assert sums["fresh_body_s"] == pytest.approx(200.0)
    assert sums["fresh_double_s"] == pytest.approx(1000.0)
    assert sums["ceiling"] == pytest.approx(1200.0 / sums["pooled_body_s"])
    assert sums["serial_speedup"] == pytest.approx(1200.0 / (sums["pooled_body_s"] + 50.0))


def test_the_concurrent_ceiling_adds_the_fresh_doubles_to_the_concurrent_floor() -> None:
    costs = [floor.KindCost(kind, 1.0, 0.5, 2.0, 10.0) for kind in KINDS]
    assert "concurrent_ceiling" not in floor.totals(costs, 100)
    sums = floor.totals(costs, 100, concurrent_s=4.0)
    assert sums["concurrent_floor_s"] == 4.0
    assert sums["concurrent_ceiling"] == pytest.approx((4.0 + 1000.0) / 4.0)


def test_the_concurrent_floor_gives_each_use_a_double_of_its_own_built_beforehand() -> None:
    async def run() -> None:
        use = floor.PrebuiltUse(FreshUse(stress_specs()))
        cases = [Case(i, "database", 0.0) for i in range(2)] + [Case(2, "watch_party", 0.0)]
        await use.stock(cases)
        async with use("database") as a, use("database") as b:
            assert a.instance is not b.instance
            assert not a.degraded and a.tier is None and a.members == {}
        async with use("device_session") as group:
            assert set(group.members) == {"redis", "jwt", "database"}
        with pytest.raises(RuntimeError, match="no double of 'database'"):
            use("database")

    asyncio.run(run())


def test_a_tiny_real_concurrent_floor_runs_every_kind_without_a_failure() -> None:
    wall, failed = asyncio.run(floor.concurrent_floor(2 * len(KINDS)))
    assert failed == 0
    assert wall > 0


def test_a_tiny_real_run_measures_every_kind_both_ways() -> None:
    costs = asyncio.run(floor.measure(rounds=1))
    assert [c.kind for c in costs] == list(KINDS)
    for c in costs:
        assert c.pooled_body_s > 0 and c.fresh_body_s > 0
        assert c.pooled_double_s > 0 and c.fresh_double_s > 0
