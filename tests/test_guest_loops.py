"""Loops other than the pool's first (each test's, under pytest-asyncio's default) start the
supervisors only once they have lived ``GUEST_SUPERVISE_AFTER_S``: six supervisors started
and ticked in each took as long as the rest of a pooled lease. The pool's own loop starts
them at once."""

from __future__ import annotations

import asyncio

import anyio

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.pool import GUEST_SUPERVISE_AFTER_S


def _supervisors() -> set[str]:
    return {
        name.rsplit(" ", 1)[-1]
        for task in asyncio.all_tasks()
        for name in (task.get_name(),)
        if name.startswith("mockpool[")
    }


def test_the_pools_own_loop_starts_its_supervisors_at_once() -> None:
    async def main() -> set[str]:
        pool = MockPool()
        pool.register(ServiceSpec(name="s", factory=list))
        async with pool:
            await anyio.wait_all_tasks_blocked()
            return _supervisors()

    assert {"warming", "sizing", "health", "scaling", "adaptation"} <= asyncio.run(main())


def test_another_loop_starts_them_once_it_has_lived_a_while() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(ServiceSpec(name="s", factory=list))

    async def first() -> None:
        async with pool.acquire("s"):
            pass

    async def guest() -> tuple[set[str], set[str]]:
        pool.spawn(anyio.lowlevel.checkpoint)  # this loop's runtime, as the plugin starts it
        await pool._runtime().wait_ready()
        async with pool.acquire("s"):
            await anyio.wait_all_tasks_blocked()
            early = _supervisors()
        clock.advance(GUEST_SUPERVISE_AFTER_S)
        await anyio.wait_all_tasks_blocked()
        return early, _supervisors()

    asyncio.run(first())  # the pool's first loop
    early, later = asyncio.run(guest())
    assert early == {"runtime", "supervisors"}  # the host, and one task waiting to start them
    assert {"warming", "sizing", "health", "scaling", "adaptation"} <= later


def test_usage_is_sampled_window_by_window_as_short_loops_end() -> None:
    """The usage sampler is a supervisor: in loops too short to start it, the run's demand
    went into one window. It is now sampled as such a loop ends, once a window has passed."""
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(ServiceSpec(name="a", factory=list))
    pool.register(ServiceSpec(name="b", factory=list))
    window = pool.recorder.window_s

    async def a_test(name: str) -> None:
        pool.spawn(anyio.lowlevel.checkpoint)  # this loop's runtime, as the plugin starts it
        async with pool.acquire(name):
            pass

    async def first() -> None:
        pool.spawn(anyio.lowlevel.checkpoint)

    asyncio.run(first())  # the pool's first loop
    for name in ("a", "a", "b", "b"):
        asyncio.run(a_test(name))
        clock.advance(window)
    demand = pool.run_record().to_dict()["services"]
    a, b = demand["a"]["demand"], demand["b"]["demand"]
    assert sum(a) == sum(b) == 2
    first_b = next(i for i, count in enumerate(b) if count)
    last_a = max(i for i, count in enumerate(a) if count)
    assert first_b > last_a  # "b" came after "a", window by window


def test_leak_detection_runs_at_once_in_a_tests_own_loop() -> None:
    """A ``leak_threshold`` may be shorter than the delay: the supervisors start at once."""
    pool = MockPool(leak_threshold=0.01)
    pool.register(ServiceSpec(name="s", factory=list))

    async def first() -> None:
        async with pool.acquire("s"):
            pass

    async def guest() -> set[str]:
        pool.spawn(anyio.lowlevel.checkpoint)
        await pool._runtime().wait_ready()
        await anyio.wait_all_tasks_blocked()
        return _supervisors()

    asyncio.run(first())
    assert "leaks" in asyncio.run(guest())
