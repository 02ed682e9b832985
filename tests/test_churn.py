"""No churn, with default settings and the supervisors running, over runs long enough for the
scaling supervisor's shrink windows (30 s) to pass: instances destroyed before the pool closes
stay within 5 % of those created (issue 14), in the shapes a suite takes: one test at a time
over many services, bursts with long quiet spells between them, and a run warmed from history
whose tests come late.

Time is virtual (``looptime``), and the pool's clock is the loop's: the supervisors sleep on it,
so minutes pass at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import looptime

from mockpool import MockPool, ServiceSpec

#: Issue 14: instances destroyed before close are at most this share of those created.
CHURN_MAX = 0.05


class LoopClock:
    """The running loop's (virtual) time as the pool's clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _in_virtual_time(main: Coroutine[Any, Any, None]) -> None:
    loop = looptime.new_event_loop(start=0.0)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


def _churn(pool: MockPool) -> tuple[int, int]:
    """Instances created and destroyed so far, all services together (read before close)."""
    stats = pool.stats().values()
    return sum(s.created for s in stats), sum(s.destroyed for s in stats)


def test_a_sequential_suite_over_many_services_keeps_what_it_made() -> None:
    """One test at a time, pytest-style; each of eight services is leased by a test every
    40 s or so (the suite goes round its modules). Each service's one instance sat idle through
    a whole shrink window between its tests, so the watermark took it, and the next test made
    it again: 28 of 36 instances destroyed before close in a run like this one."""

    async def main() -> None:
        pool = MockPool(clock=LoopClock())
        names = [f"svc{i}" for i in range(8)]
        for name in names:
            pool.register(ServiceSpec(name=name, factory=dict, reset=dict.clear))
        async with pool:
            for _ in range(6):
                for name in names:
                    async with pool.acquire(name):
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(5.0)  # the tests between, which lease none of these
            created, destroyed = _churn(pool)
            assert created == len(names)
            assert destroyed <= CHURN_MAX * created, (created, destroyed)
            pool.check_invariants()

    _in_virtual_time(main())


def test_bursts_with_quiet_spells_between_keep_what_they_made() -> None:
    """Three bursts of 100 concurrent tests, five quiet minutes apart: the instances the first
    burst needed are needed again by the next, and stay. What may go is an instance made for a
    waiter that a release served first, which no test ever held: how many such the controller
    makes depends on how fast the machine runs the burst (real CPU time against the loop's
    virtual clock), 0 or 1 in 12 runs on a loaded machine; so the bound is on what tests
    needed, and churn beyond those spares stays within issue 14's 5 %."""

    async def main() -> None:
        pool = MockPool(clock=LoopClock())
        pool.register(ServiceSpec(name="svc", factory=dict, reset=dict.clear))

        async def test() -> None:
            async with pool.acquire("svc"):
                await asyncio.sleep(0.02)

        async with pool:
            for _ in range(3):
                await asyncio.gather(*(test() for _ in range(100)))
                await asyncio.sleep(300.0)
            created, destroyed = _churn(pool)
            spares = created - pool.stats("svc").peak_in_use  # made, never held by a test
            assert pool.stats("svc").size >= pool.stats("svc").peak_in_use  # what tests needed stays
            assert destroyed - spares <= CHURN_MAX * created, (created, destroyed, spares)
            pool.check_invariants()

    _in_virtual_time(main())


def test_a_run_warmed_from_history_keeps_the_warm_instances_for_tests_that_come_late(
    tmp_path: Path,
) -> None:
    """History says ``late`` settled at 4 instances; this run's tests that use it come two
    minutes in. The warm-up made them at start, and they must still be there."""

    async def run(concurrent: int, wait_s: float) -> tuple[int, int]:
        pool = MockPool(clock=LoopClock(), history=tmp_path / "history.json")
        pool.register(ServiceSpec(name="late", factory=dict, reset=dict.clear))

        async def test() -> None:
            async with pool.acquire("late"):
                await asyncio.sleep(0.5)

        async with pool:
            await asyncio.sleep(wait_s)
            await asyncio.gather(*(test() for _ in range(concurrent)))
            churn = _churn(pool)
        return churn

    async def main() -> None:
        await run(concurrent=4, wait_s=0.0)  # the first run settles at 4 (sleeping leases)
        created, destroyed = await run(concurrent=4, wait_s=120.0)
        assert destroyed <= CHURN_MAX * created, (created, destroyed)

    _in_virtual_time(main())
