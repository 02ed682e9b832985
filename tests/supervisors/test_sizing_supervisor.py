"""What the sizing controller reads: the leases held, their own work, a creation's cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from mockpool import FakeClock, Lease, MockPool, ServiceSpec
from mockpool.sizing import LimitState, Window, next_limit
from mockpool.supervisors import sizing as sizing_supervisor
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


def _timed_member_and_group() -> MockPool:
    """A service ``m`` whose factory takes 1 s and a group ``g`` over it whose own takes 0.5 s
    (on the pool's fake clock)."""
    clock = FakeClock()

    def factory(seconds: float) -> Any:
        def make(*members: object) -> dict[str, object]:
            clock.advance(seconds)
            return {"members": members}

        return make

    pool = MockPool(supervise=False, clock=clock)
    pool.register(ServiceSpec(name="m", factory=factory(1.0)))
    pool.register(ServiceSpec(name="g", factory=factory(0.5), depends_on=("m",)))
    return pool


@pytest.mark.asyncio
async def test_a_group_creation_costs_its_members_too() -> None:
    """Built from idle members, a group instance takes no time, but it keeps one of each for
    good, and their own waiters then need new ones: the controller prices a group creation
    with its members'. Priced alone, groups were made by the dozen and starved their members
    (the learning benchmark's second run took 1.0 s against 0.7 s for the first)."""
    pool = _timed_member_and_group()
    async with pool:
        async with pool.acquire("m"):
            pass
        async with pool.acquire("g"):  # built on m's idle instance
            pass
        assert pool.service_pools["m"].sizing_input().create_s == pytest.approx(1.0)
        assert pool.service_pools["g"].metrics.create_ewma == pytest.approx(0.5)
        assert pool.service_pools["g"].sizing_input().create_s == pytest.approx(1.5)


@pytest.mark.asyncio
async def test_a_group_creation_is_timed_from_its_members_arrival() -> None:
    """A group built on members that had to be made first waited for their creations: those
    are the members' cost, already in the group's price. Timed from the start, the group was
    priced at its members twice over (a dashboard of three members at 110 ms instead of 36),
    and the controller made half the instances an I/O-bound suite needed."""
    pool = _timed_member_and_group()
    async with pool:
        async with pool.acquire("g"):  # m has no instance yet: made first, then g on it
            pass
        assert pool.service_pools["m"].metrics.create_ewma == pytest.approx(1.0)
        assert pool.service_pools["g"].metrics.create_ewma == pytest.approx(0.5)
        assert pool.service_pools["g"].sizing_input().create_s == pytest.approx(1.5)


class _Windows:
    """Captures the windows the supervisor hands the throughput search."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[Window] = []
        real = next_limit

        def spy(state: LimitState, window: Window, max_size: int) -> LimitState:
            self.seen.append(window)
            return real(state, window, max_size)

        monkeypatch.setattr(sizing_supervisor, "next_limit", spy)

    @staticmethod
    def close(supervisor: SizingSupervisor, name: str) -> None:
        """Make the open window of ``name`` old enough to close at the next tick."""
        supervisor.windows[name].started -= sizing_supervisor.WINDOW_S


@pytest.mark.asyncio
async def test_a_window_whose_queue_emptied_is_not_read_as_what_the_size_can_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Completed leases per second measure what a size can serve only while tests queue the
    whole time; once the queue emptied they measured how many tests came. Read as the size's,
    a suite moving on to other services looked like a size that bought nothing, and the search
    capped a service that was short of instances."""
    windows = _Windows(monkeypatch)
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="s", factory=list, reset=list.clear, max_size=1))
    async with pool:
        supervisor = SizingSupervisor(pool)
        held = pool.acquire("s")
        await held.__aenter__()
        first, second = pool.acquire("s"), pool.acquire("s")
        entering = asyncio.ensure_future(first.__aenter__())
        await _until(lambda: pool.stats("s").waiting == 1)
        await supervisor.tick()  # opens the window: a test queues
        await held.__aexit__(None, None, None)
        await entering  # the queue empties...
        await supervisor.tick()
        entering = asyncio.ensure_future(second.__aenter__())
        await _until(lambda: pool.stats("s").waiting == 1)  # ...and fills again
        _Windows.close(supervisor, "s")
        await supervisor.tick()
        assert [w.waited for w in windows.seen] == [False]
        await first.__aexit__(None, None, None)
        await entering
        await second.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_loop_saturated_by_creations_is_not_read_as_saturated_by_leases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The search caps a service at its size when the leases saturate the loop. Sync
    factories saturate it too while they build, which says nothing of the size: read as the
    leases' load, a service was capped at the one instance it had while its group's members
    were being made, and its own tests waited for seconds."""
    windows = _Windows(monkeypatch)
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="s", factory=list, reset=list.clear))
    async with pool:
        async with pool.acquire("s"):
            supervisor = SizingSupervisor(pool)
            await supervisor.tick()
            runtime = pool.current_runtime()
            assert runtime is not None
            _Windows.close(supervisor, "s")
            # The loop busy for what follows, all of it a factory's (as _build counts it).
            began = time.thread_time()
            while time.thread_time() - began < 0.02:
                pass
            factory_s = time.thread_time() - began
            runtime.creation_cpu += factory_s
            runtime.creation_blocked += factory_s
            await supervisor.tick()
        assert runtime.busy is not None and runtime.busy > 0.5
        [window] = windows.seen
        # The factory's CPU is taken out of the leases' share. (Not a fixed bound: on a loaded
        # machine the loop's thread waits for a CPU too, and that wall time reads as busy.)
        assert window.busy is not None and window.busy < runtime.busy
        # ...and the search counts its rate over the time the factory left the leases
        assert window.blocked_s == pytest.approx(factory_s)


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.mark.asyncio
async def test_a_window_in_which_groups_took_members_is_not_read_as_the_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group that takes a member's instance lowers the size that serves the member's own
    tests in the middle of the window: its rate belongs to no one size."""
    windows = _Windows(monkeypatch)
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="m", factory=list, reset=list.clear, max_size=1))
    pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))

    async def use_group() -> None:
        async with pool.acquire("g"):
            pass

    async with pool:
        supervisor = SizingSupervisor(pool)
        held, direct = await _hold_one_and_queue_one(pool, "m")
        await supervisor.tick()  # opens the window: a test queues for m
        group = asyncio.ensure_future(use_group())
        await _until(lambda: pool.stats("m").waiting == 2)  # g's creation queues first
        await held.__aexit__(None, None, None)  # ...and takes the instance: lent to g
        await group
        assert pool.service_pools["m"].core.lent == 1 and pool.stats("m").waiting == 1
        _Windows.close(supervisor, "m")
        await supervisor.tick()
        assert [(w.size, w.waited) for w in windows.seen] == [(0, False)]  # none serves m's tests
        direct.cancel()
        with pytest.raises(asyncio.CancelledError):
            await direct


async def _use(pool: MockPool, name: str) -> None:
    async with pool.acquire(name):
        pass


async def _hold_one_and_queue_one(pool: MockPool, name: str) -> tuple[Lease[Any], asyncio.Future[None]]:
    """A lease of ``name`` entered, and a test queued behind it (its task)."""
    held = pool.acquire(name)
    await held.__aenter__()
    waiter = asyncio.ensure_future(_use(pool, name))
    await _until(lambda: pool.stats(name).waiting == 1)
    return held, waiter


@pytest.mark.asyncio
async def test_a_cap_for_a_saturated_loop_is_reported_as_that() -> None:
    """The report's event says why the search capped: a loop the leases saturated is not a
    size that failed to raise throughput."""
    second = asyncio.Event()
    made = 0

    async def factory() -> list[int]:
        nonlocal made
        made += 1
        if made > 1:
            await second.wait()  # the second instance is on its way for as long as the test runs
        return []

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="s", factory=factory, reset=list.clear, max_size=4))
    async with pool:
        supervisor = SizingSupervisor(pool)
        held, waiter = await _hold_one_and_queue_one(pool, "s")
        await supervisor.tick()  # opens the window: a test queues throughout
        _Windows.close(supervisor, "s")
        began = time.thread_time()
        while time.thread_time() - began < 0.02:  # the leases' work keeps the loop busy
            pass
        await supervisor.tick()
        [event] = [e for e in pool.report().events if e.service == "s"]
        assert event.trigger == "the leases saturated the loop (size 1)"
        assert event.response == "limit 4 -> 1"
        second.set()
        await waiter
        await held.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_load_reading_from_before_the_queue_formed_is_not_the_queues() -> None:
    """The reading's window began before the waiters came: it measured another demand (a warm
    pool's burst read the idle moments before it, and grew 11 -> 26 on a loop the burst then
    saturated). The next reading, over a window the waiters waited through, counts."""
    clock = FakeClock()
    pool = MockPool(supervise=False, clock=clock)
    pool.register(ServiceSpec(name="db", factory=list, reset=list.clear, max_size=1))
    async with pool:
        supervisor = SizingSupervisor(pool)
        async with pool.acquire("db"):
            clock.advance(1.0)
            second = pool.acquire("db")
            waiter = asyncio.ensure_future(second.__aenter__())
            await asyncio.sleep(0)  # queued at t=1
            svc = pool.service_pools["db"]
            assert svc.core.queued_since == 1.0
            await supervisor.tick()  # the window [0, 1]: began before the queue
            assert svc.sizing_input().load_predates_queue
            clock.advance(0.05)
            await supervisor.tick()  # the window [1, 1.05]: the queue waited through it
            assert not svc.sizing_input().load_predates_queue
        await waiter
        await second.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_factory_that_blocks_without_cpu_counts_as_holding_the_loop() -> None:
    """A sync factory that sleeps or waits on I/O holds the loop as long as one that computes,
    with almost none of the CPU: the windows count the time it held the loop on the clock."""
    clock = FakeClock()

    def blocking_factory() -> list[int]:
        clock.advance(0.2)  # as time.sleep(0.2) would, on the pool's clock
        return []

    pool = MockPool(supervise=False, clock=clock)
    pool.register(ServiceSpec(name="s", factory=blocking_factory))
    async with pool:
        async with pool.acquire("s"):
            pass
        runtime = pool.current_runtime()
        assert runtime is not None
        assert runtime.creation_blocked == pytest.approx(0.2)
        assert runtime.creation_cpu < 0.2
