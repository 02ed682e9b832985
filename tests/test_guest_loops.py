"""Loops other than the pool's first (each test's, under pytest-asyncio's default) start the
supervisors only once they have lived ``GUEST_SUPERVISE_AFTER_S``: six supervisors started
and ticked in each took as long as the rest of a pooled lease. The pool's own loop starts
them at once. ``MockPool.enter_loop`` (what the plugin calls as each test starts) gives such
a loop a timer, not a runtime: a runtime made and cancelled in every test's loop cost as
much again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.pool import GUEST_SUPERVISE_AFTER_S

T = TypeVar("T")


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
        pool.spawn(anyio.lowlevel.checkpoint)  # background work starts this loop's runtime
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
        pool.enter_loop()  # as the plugin does when a test starts
        async with pool.acquire(name):
            pass

    async def first() -> None:
        pool.enter_loop()

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
        pool.enter_loop()
        await anyio.wait_all_tasks_blocked()
        return _supervisors()

    asyncio.run(first())
    assert "leaks" in asyncio.run(guest())


class _LoopWithAClock(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves forward (``skip``): a timer falls due when the
    test says so, not when the machine gets to it."""

    skipped = 0.0

    def time(self) -> float:
        return super().time() + self.skipped


def _in_loop_with_a_clock(main: Callable[[_LoopWithAClock], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=_LoopWithAClock) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, _LoopWithAClock)
        return runner.run(main(loop))


def test_a_tests_short_loop_gets_no_runtime() -> None:
    """A test that ends before its loop lived ``GUEST_SUPERVISE_AFTER_S`` runs no task of the
    pool's: no runtime to make and cancel; the lease, its reset and the loop's close work."""
    pool = MockPool(clock=FakeClock())
    pool.register(ServiceSpec(name="s", factory=list))

    async def first() -> None:
        pool.enter_loop()  # the pool's first loop: its runtime at once
        async with pool.acquire("s"):  # made here: the test below is served from idle
            pass

    async def short_test(loop: _LoopWithAClock) -> set[str]:
        pool.enter_loop()
        async with pool.acquire("s") as held:
            held.append(1)
        await anyio.wait_all_tasks_blocked()
        return _supervisors()

    asyncio.run(first())
    assert _in_loop_with_a_clock(short_test) == set()
    assert _in_loop_with_a_clock(short_test) == set()  # the instance, reset, served again
    assert pool.stats("s").in_use == 0
    pool.check_invariants()


def test_a_tests_loop_that_lives_on_starts_the_supervisors_at_once_when_due() -> None:
    pool = MockPool(clock=FakeClock())
    pool.register(ServiceSpec(name="s", factory=list))

    async def first() -> None:
        pool.enter_loop()

    async def long_test(loop: _LoopWithAClock) -> tuple[set[str], set[str]]:
        pool.enter_loop()
        pool.enter_loop()  # twice: still one timer, one runtime
        await anyio.wait_all_tasks_blocked()
        early = _supervisors()
        loop.skipped += GUEST_SUPERVISE_AFTER_S
        await asyncio.sleep(0)  # the timer runs in the loop's next step, after this task
        await anyio.wait_all_tasks_blocked()
        return early, _supervisors()

    asyncio.run(first())
    early, later = _in_loop_with_a_clock(long_test)
    assert early == set()
    assert {"runtime", "warming", "sizing", "health", "scaling", "adaptation"} <= later
    assert "supervisors" not in later  # started at once, not after another delay


def test_a_runtime_background_work_started_keeps_its_own_delay() -> None:
    """The timer does not start the supervisors early in a loop whose runtime background
    work started: that runtime waits ``GUEST_SUPERVISE_AFTER_S`` on the pool's clock."""
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(ServiceSpec(name="s", factory=list))

    async def first() -> None:
        pool.enter_loop()

    async def busy_test(loop: _LoopWithAClock) -> set[str]:
        pool.enter_loop()
        pool.spawn(anyio.lowlevel.checkpoint)
        await pool._runtime().wait_ready()
        loop.skipped += GUEST_SUPERVISE_AFTER_S
        await asyncio.sleep(0)  # the timer runs in the loop's next step, after this task
        await anyio.wait_all_tasks_blocked()
        return _supervisors()

    asyncio.run(first())
    assert _in_loop_with_a_clock(busy_test) == {"runtime", "supervisors"}


def test_enter_loop_does_nothing_on_a_closed_pool_or_without_supervisors() -> None:
    quiet = MockPool(supervise=False)
    quiet.register(ServiceSpec(name="s", factory=list))

    async def a_test() -> set[str]:
        quiet.enter_loop()
        await anyio.wait_all_tasks_blocked()
        return _supervisors()

    assert asyncio.run(a_test()) == set()
