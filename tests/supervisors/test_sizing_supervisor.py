"""The sizing supervisor's measurements: what it counts as leases held when it prices one."""

from __future__ import annotations

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
