"""The sizing supervisor's measurements: what it counts as leases held when it prices one."""

from __future__ import annotations

import pytest

from mockpool import MockPool, ServiceSpec
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
