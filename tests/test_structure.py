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


@pytest.mark.asyncio
async def test_a_creation_that_a_lowered_max_size_left_over_makes_nothing() -> None:
    """A group's creation waits for its member when ``resize`` lowers the group's
    ``max_size`` to what it has: the creation is now past the bound. It made its instance once
    the member came, and the pool destroyed it at once (one past the user's bound as the
    hooks count, and churn). It gives up instead, and gives the member back."""
    made: list[str] = []

    def make_group(m: object) -> list[object]:
        made.append("g")
        return ["g", m]

    pool = MockPool(supervise=False, default_timeout=None)
    pool.register(ServiceSpec(name="m", factory=dict, max_size=3))
    pool.register(ServiceSpec(name="g", factory=make_group, depends_on=("m",), max_size=2))
    async with pool:
        first = pool.acquire("g")
        await first.__aenter__()
        held = [pool.acquire("m"), pool.acquire("m")]
        for lease in held:
            await lease.__aenter__()  # m is at its max_size: one lent to g, two held
        waiting = pool.acquire("g")
        second = asyncio.create_task(waiting.__aenter__())
        with anyio.fail_after(5):
            while pool.stats("m").waiting == 0:  # g's creation waits for m
                await asyncio.sleep(0)
        await pool.resize("g", max_size=1)
        await held[0].__aexit__(None, None, None)
        await anyio.wait_all_tasks_blocked()
        assert made == ["g"]
        stats = pool.stats()
        assert (stats["g"].size, stats["g"].creating, stats["g"].destroyed) == (1, 0, 0)
        assert (stats["m"].idle, stats["m"].lent) == (1, 1)
        pool.check_invariants()
        await first.__aexit__(None, None, None)  # the waiter gets it
        with anyio.fail_after(5):
            lease = await second
        assert lease[0] == "g" and made == ["g"]
        await waiting.__aexit__(None, None, None)
        await held[1].__aexit__(None, None, None)
