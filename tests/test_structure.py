"""Structural changes while the pool runs: register, unregister and resize."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from mockpool import MockPool, PoolClosedError, ServiceConfigError, ServiceSpec, UnknownServiceError


class Double:
    destroyed = 0

    def close(self) -> None:
        type(self).destroyed += 1


def _spec(name: str = "svc", **kw: object) -> ServiceSpec:
    return ServiceSpec(name=name, factory=Double, destroy=Double.close, **kw)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_register_while_running_serves_at_once() -> None:
    pool = MockPool()
    async with pool:
        pool.register(_spec("late", min_size=1))
        async with pool.acquire("late") as d:
            assert isinstance(d, Double)
        assert pool.services == ("late",)


@pytest.mark.asyncio
async def test_unregister_fails_waiters_destroys_idle_now_and_leased_on_release() -> None:
    Double.destroyed = 0
    pool = MockPool()
    pool.register(_spec(max_size=2, min_size=2))
    async with pool:
        held = pool.acquire("svc")
        await held.__aenter__()
        blocker = pool.acquire("svc")
        await blocker.__aenter__()
        waiter = asyncio.create_task(pool.acquire("svc").__aenter__())
        while pool.stats("svc").waiting == 0:
            await asyncio.sleep(0)
        await blocker.__aexit__(None, None, None)  # goes to the waiter
        assert pool.stats("svc").waiting == 0
        await waiter
        late = asyncio.create_task(pool.acquire("svc").__aenter__())
        while pool.stats("svc").waiting == 0:
            await asyncio.sleep(0)
        pool.unregister("svc")
        with pytest.raises(PoolClosedError, match="svc"):
            await late
        with pytest.raises(UnknownServiceError):
            pool.acquire("svc")
        assert Double.destroyed == 0  # both instances are leased
        await held.__aexit__(None, None, None)
        await anyio.wait_all_tasks_blocked()
        assert Double.destroyed == 1  # destroyed on release, not put back
    assert Double.destroyed == 2  # the other at close


@pytest.mark.asyncio
async def test_resize_grows_to_min_size_and_shrinks_idle_to_max_size() -> None:
    pool = MockPool()
    pool.register(_spec(max_size=8))
    async with pool:
        await pool.resize("svc", min_size=4)
        await anyio.wait_all_tasks_blocked()
        assert pool.stats("svc").size == 4
        await pool.resize("svc", min_size=1, max_size=2)
        await anyio.wait_all_tasks_blocked()
        stats = pool.stats("svc")
        assert (stats.size, stats.max_size) == (2, 2)
        pool.check_invariants()
        with pytest.raises(ServiceConfigError, match="min_size"):
            await pool.resize("svc", min_size=5)  # above max_size: refused, nothing changed
        assert pool.stats("svc").max_size == 2


@pytest.mark.asyncio
async def test_resize_a_group() -> None:
    """resize validates the new sizes through ServiceSpec; a group's factory, which takes one
    argument per member, must be checked against its members there too."""
    pool = MockPool()
    pool.register(_spec(max_size=8))
    pool.register(ServiceSpec(name="group", factory=lambda svc: [svc], depends_on=("svc",), max_size=4))
    async with pool:
        await pool.resize("group", min_size=1, max_size=2)
        await anyio.wait_all_tasks_blocked()
        stats = pool.stats("group")
        assert (stats.size, stats.max_size) == (1, 2)
        pool.check_invariants()
