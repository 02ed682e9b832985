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
from stress.scenario import KINDS, make_cases


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


def test_a_tiny_real_run_measures_every_kind_both_ways() -> None:
    costs = asyncio.run(floor.measure(rounds=1))
    assert [c.kind for c in costs] == list(KINDS)
    for c in costs:
        assert c.pooled_body_s > 0 and c.fresh_body_s > 0
        assert c.pooled_double_s > 0 and c.fresh_double_s > 0
