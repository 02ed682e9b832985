"""What the sizing controller reads: the leases held, their own work, a creation's cost."""

from __future__ import annotations

from typing import Any

import pytest

from mockpool import FakeClock, MockPool, ServiceSpec
from mockpool.supervisors.sizing import SizingSupervisor


def _pool_with_a_group() -> MockPool:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="m", factory=list, reset=list.clear))
    pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
    return pool


@pytest.mark.asyncio
async def test_an_idle_group_instance_is_no_lease_to_divide_the_loops_load_by() -> None:
    """An idle group instance keeps its member leased, but no test runs on it. Counted as a
    lease held, it made the loop's cost per lease look small while the loop did nothing, and
    a burst of tests after a quiet spell got dozens of instances of every service."""
    pool = _pool_with_a_group()
    async with pool:
        async with pool.acquire("g"):
            pass
        assert pool.stats("m").in_use == 1  # lent to the idle group instance
        supervisor = SizingSupervisor(pool)
        await supervisor.tick()
        runtime = pool.current_runtime()
        assert runtime is not None and runtime.busy is not None
        assert runtime.lease_cost is None, "a lease's cost was measured with no lease held"


@pytest.mark.asyncio
async def test_a_lease_a_test_holds_is_priced() -> None:
    pool = _pool_with_a_group()
    async with pool:
        async with pool.acquire("g"):
            pass
        async with pool.acquire("m"):
            supervisor = SizingSupervisor(pool)
            await supervisor.tick()
            runtime = pool.current_runtime()
            assert runtime is not None and runtime.lease_cost is not None


@pytest.mark.asyncio
async def test_a_lease_held_while_a_sync_factory_ran_counts_that_time_out_of_its_work() -> None:
    """No lease runs while a sync factory holds the loop: the sizing controller weighs a
    creation against the leases' own work, not against holds its creations stretched."""
    clock = FakeClock()

    def slow() -> dict[str, int]:
        clock.advance(1.0)  # the factory holds the loop for a second
        return {}

    pool = MockPool(supervise=False, clock=clock)
    pool.register(ServiceSpec(name="a", factory=dict, reset=dict.clear))
    pool.register(ServiceSpec(name="slow", factory=slow, reset=dict.clear))
    async with pool:
        async with pool.acquire("a"):
            clock.advance(0.25)
        async with pool.acquire("a"):
            clock.advance(0.25)
            async with pool.acquire("slow"):
                pass
        a = pool.service_pools["a"].sizing_input()
        assert a.hold_s == pytest.approx(0.25 + 0.1 * (1.25 - 0.25))
        assert a.work_s == pytest.approx(0.25)


@pytest.mark.asyncio
async def test_a_group_creation_costs_its_members_too() -> None:
    """Built from idle members, a group instance takes no time, but it keeps one of each for
    good, and their own waiters then need new ones: the controller prices a group creation
    with its members'. Priced alone, groups were made by the dozen and starved their members
    (the learning benchmark's second run took 1.0 s against 0.7 s for the first)."""
    clock = FakeClock()

    def factory(seconds: float) -> Any:
        def make(*members: object) -> dict[str, object]:
            clock.advance(seconds)
            return {"members": members}

        return make

    pool = MockPool(supervise=False, clock=clock)
    pool.register(ServiceSpec(name="m", factory=factory(1.0)))
    pool.register(ServiceSpec(name="g", factory=factory(0.5), depends_on=("m",)))
    async with pool:
        async with pool.acquire("m"):
            pass
        async with pool.acquire("g"):  # built on m's idle instance
            pass
        assert pool.service_pools["m"].sizing_input().create_s == pytest.approx(1.0)
        assert pool.service_pools["g"].metrics.create_ewma == pytest.approx(0.5)
        assert pool.service_pools["g"].sizing_input().create_s == pytest.approx(1.5)
