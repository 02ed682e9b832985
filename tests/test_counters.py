"""Counters agree with what callers saw: one outcome per acquisition (hit, reuse after a wait,
miss, timeout, cancellation, error), ``size == created - destroyed``, and ``timeouts`` equal to
the ``AcquireTimeout``s raised, also when a deadline and a cancellation land in one loop step.

Time is virtual (``looptime``): deadlines pass at once and exactly when the test says.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import looptime
import pytest

from mockpool import AcquireTimeout, FakeClock, MockPool, PoolClosedError, PoolStats, ServiceSpec

T = TypeVar("T")


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = looptime.new_event_loop(start=0.0)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def settle(rounds: int = 3) -> None:
    """Let every task run until all are blocked (explicit synchronisation, no sleeps)."""
    for _ in range(rounds):
        await anyio.wait_all_tasks_blocked()
        await asyncio.sleep(0)


def ended(stats: PoolStats) -> int:
    """Acquisitions that ended, by the counters: each has exactly one of these outcomes."""
    return stats.served + stats.timeouts + stats.cancellations + stats.acquire_errors


class Made:
    """A factory that numbers its instances."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> dict[str, int]:
        self.count += 1
        return {"id": self.count}


def test_hit_reuse_after_a_wait_and_miss_are_told_apart() -> None:
    """A creation serves the first (a miss); a release serves the one that waited (a reuse,
    not a hit); an idle instance serves the last at once (a hit)."""

    async def main() -> PoolStats:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=Made(), max_size=1))
        async with pool:
            holder = pool.acquire("svc")
            await holder.__aenter__()
            second = pool.acquire("svc")
            waiter = asyncio.create_task(second.__aenter__())
            await settle()
            await holder.__aexit__(None, None, None)
            await waiter
            await second.__aexit__(None, None, None)
            async with pool.acquire("svc"):
                pass
            return pool.stats("svc")

    stats = run_virtual(main)
    assert (stats.acquisitions, stats.hits, stats.reuses, stats.misses) == (3, 1, 2, 1)
    assert stats.hit_rate == pytest.approx(1 / 3)
    assert stats.reuse_rate == pytest.approx(2 / 3)
    assert ended(stats) == stats.acquisitions


def test_wait_percentiles_weigh_in_the_hits() -> None:
    """Four hits and one wait of 2 s: the median wait is 0, the 99th percentile the 2 s wait
    (nearest rank; interpolated, it read 1.92 s, a wait nobody had)."""

    async def main() -> PoolStats:
        pool = MockPool(supervise=False, clock=_LoopClock())
        pool.register(ServiceSpec(name="svc", factory=Made(), min_size=1, max_size=1))
        async with pool:
            for _ in range(3):
                async with pool.acquire("svc"):
                    pass
            holder = pool.acquire("svc")
            await holder.__aenter__()
            waiter = asyncio.create_task(_acquire_and_release(pool))
            await settle()
            await asyncio.sleep(2.0)  # virtual: the holder keeps it 2 s
            await holder.__aexit__(None, None, None)
            await waiter
            return pool.stats("svc")

    stats = run_virtual(main)
    assert (stats.hits, stats.reuses, stats.acquisitions) == (4, 5, 5)
    assert stats.wait_p50_s == 0.0
    assert stats.wait_p99_s == pytest.approx(2.0)


class _LoopClock:
    """The loop's (virtual) time as the pool's clock, so that recorded waits are virtual too."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _acquire_and_release(pool: MockPool, timeout: float | None = None) -> None:
    async with pool.acquire("svc", timeout=timeout):
        pass


@pytest.mark.parametrize("first", ["deadline", "cancel"])
def test_a_deadline_and_a_cancellation_in_one_loop_step_count_once(first: str) -> None:
    """The waiter's deadline and its task's cancellation run in the same loop step, in either
    order: the caller sees CancelledError, and that is the one outcome counted."""

    async def main() -> tuple[PoolStats, BaseException | None]:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=Made(), max_size=1))
        async with pool:
            async with pool.acquire("svc"):
                loop = asyncio.get_running_loop()
                task = asyncio.create_task(_acquire_and_release(pool, timeout=1.0))
                await settle()
                svc = pool.service_pools["svc"]
                (waiter,) = svc.core.waiters
                timer, at = svc._timers[loop]
                assert timer.when() == at == waiter.deadline
                if first == "deadline":
                    # Both callbacks fall due at the same instant; the pool's timer was
                    # scheduled first, so it runs first in that step.
                    loop.call_at(waiter.deadline, task.cancel)
                else:
                    timer.cancel()
                    loop.call_at(waiter.deadline, task.cancel)
                    svc._timers[loop] = (loop.call_at(waiter.deadline, svc._on_timer, loop), at)
                try:
                    await task
                except BaseException as exc:  # what the caller saw is the point
                    seen: BaseException | None = exc
                else:
                    seen = None
            return pool.stats("svc"), seen

    stats, seen = run_virtual(main)
    assert isinstance(seen, asyncio.CancelledError)
    assert (stats.timeouts, stats.cancellations) == (0, 1)
    assert ended(stats) == stats.acquisitions == 2


def test_timeouts_equal_the_acquire_timeouts_callers_received_in_a_storm() -> None:
    """3,000 acquirers on 4 instances, with timeouts, cancellations at random moments and
    cancellations scheduled at the very instant of their own deadline: every counter equals
    what the tasks saw."""
    rng = random.Random(15)

    async def main() -> tuple[PoolStats, Counter[str]]:
        pool = MockPool(supervise=False, default_timeout=None)
        pool.register(ServiceSpec(name="svc", factory=Made(), max_size=4))
        seen: Counter[str] = Counter()
        loop = asyncio.get_running_loop()

        async def user(timeout: float | None, race: bool) -> None:
            task = asyncio.current_task()
            assert task is not None
            if race and timeout is not None:
                # The same float the pool computes for this waiter's deadline: both fire in
                # one loop step.
                loop.call_at(loop.time() + timeout, task.cancel)
            served = False
            try:
                async with pool.acquire("svc", timeout=timeout):
                    served = True
                    seen["served"] += 1
                    await asyncio.sleep(rng.choice((0.0, 0.01, 0.05)))  # virtual: the test's work
            except AcquireTimeout:
                seen["timeout"] += 1
            except asyncio.CancelledError:
                seen["cancelled while holding" if served else "cancelled"] += 1
                raise

        async with pool:
            tasks = []
            for _ in range(3000):
                timeout = rng.choice((None, 0.05, 0.1, 0.5, 1.0, 5.0))
                tasks.append(asyncio.create_task(user(timeout, race=rng.random() < 0.2)))
            await settle(1)
            for task in rng.sample(tasks, 600):
                loop.call_later(rng.choice((0.0, 0.05, 0.1, 0.3)), task.cancel)
            await asyncio.gather(*tasks, return_exceptions=True)
            pool.check_invariants()
            return pool.stats("svc"), seen

    stats, seen = run_virtual(main)
    assert stats.timeouts == seen["timeout"] > 100
    assert stats.cancellations == seen["cancelled"] > 100
    assert stats.served == seen["served"]
    assert stats.acquire_errors == 0
    assert ended(stats) == stats.acquisitions == 3000


def test_check_on_acquire_counts_one_acquisition_once() -> None:
    """An idle instance fails its check on acquire; the lease gets another one. One
    acquisition, one outcome (the served one it ended with), not a hit and a miss."""
    clock = FakeClock()
    healthy = {"ok": False}

    def check(instance: dict[str, int]) -> bool:
        return healthy["ok"] or instance["id"] != 1

    async def main() -> PoolStats:
        pool = MockPool(supervise=False, clock=clock)
        pool.register(
            ServiceSpec(name="svc", factory=Made(), health_check=check, check_idle_after=1.0, max_size=2)
        )
        async with pool:
            async with pool.acquire("svc") as first:
                assert first["id"] == 1
            clock.advance(5.0)  # idle longer than check_idle_after: checked when acquired
            async with pool.acquire("svc") as second:
                assert second["id"] != 1
            return pool.stats("svc")

    stats = run_virtual(main)
    assert stats.health_failures == 1
    # The hit that failed its check was taken back: the second lease waited for another.
    assert (stats.acquisitions, stats.served, stats.hits) == (2, 2, 0)
    assert ended(stats) == 2


def test_a_bind_that_raises_is_an_error_outcome() -> None:
    def bind(instance: dict[str, int]) -> dict[str, int]:
        raise RuntimeError("bind broke")

    async def main() -> PoolStats:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=Made(), bind=bind, min_size=1, max_size=1))
        async with pool:
            with pytest.raises(RuntimeError, match="bind broke"):
                async with pool.acquire("svc"):
                    pass  # pragma: no cover
            return pool.stats("svc")

    stats = run_virtual(main)
    assert (stats.acquisitions, stats.hits, stats.reuses, stats.acquire_errors) == (1, 0, 0, 1)


def test_an_acquire_failed_by_an_unregister_is_an_error_outcome() -> None:
    async def main() -> PoolStats:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=Made(), max_size=1))
        async with pool:
            async with pool.acquire("svc"):
                waiter = asyncio.create_task(_acquire_and_release(pool))
                await settle()
                stats_before = pool.stats("svc")
                pool.unregister("svc")
                with pytest.raises(PoolClosedError):
                    await waiter
            assert stats_before.waiting == 1
            (retired,) = pool._retired
            return retired.stats()

    stats = run_virtual(main)
    assert (stats.acquisitions, stats.misses, stats.acquire_errors) == (2, 1, 1)
    assert ended(stats) == 2


def test_group_builds_are_no_acquisitions_of_their_members() -> None:
    async def main() -> dict[str, PoolStats]:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="member", factory=Made(), max_size=2))
        pool.register(ServiceSpec(name="group", factory=lambda m: {"member": m}, depends_on=("member",)))
        async with pool:
            async with pool.acquire("group"):
                pass
            return pool.stats()

    stats = run_virtual(main)
    assert (stats["group"].acquisitions, stats["group"].misses) == (1, 1)
    member = stats["member"]
    assert (member.acquisitions, member.served, member.timeouts, member.in_use) == (0, 0, 0, 1)


class TestCreatedMinusDestroyed:
    def test_instances_that_recovery_replaced_are_destroyed(self) -> None:
        """Every reset fails, so recovery rebuilds the instance after each lease: each old one
        counts destroyed, and ``size == created - destroyed`` (it was 1 == 4 - 0)."""

        def reset(instance: dict[str, int]) -> None:
            raise ValueError("reset broke")

        async def main() -> PoolStats:
            pool = MockPool(supervise=False)
            pool.register(ServiceSpec(name="svc", factory=Made(), reset=reset, max_size=1))
            async with pool:
                for _ in range(3):
                    async with pool.acquire("svc"):
                        pass
                    await settle()
                stats = pool.stats("svc")
                assert (stats.creating, stats.recovering) == (0, 0)
                return stats

        stats = run_virtual(main)
        assert stats.recoveries["factory"] == 3
        assert (stats.size, stats.created, stats.destroyed) == (1, 4, 3)

    def test_stubs_count_as_created(self) -> None:
        """The factory works once, then fails; the reset fails: recovery ends at a stub, an
        instance made like any other."""

        class Client:
            def ping(self) -> bool:
                return True

        made: list[Client] = []

        def factory() -> Client:
            if made:
                raise OSError("factory broke")
            made.append(Client())
            return made[-1]

        def reset(instance: Client) -> None:
            raise ValueError("reset broke")

        async def main() -> PoolStats:
            pool = MockPool(supervise=False)
            pool.register(
                ServiceSpec(name="svc", factory=factory, reset=reset, allow_degraded=True, max_size=1)
            )
            async with pool:
                async with pool.acquire("svc"):
                    pass
                await settle()
                return pool.stats("svc")

        stats = run_virtual(main)
        assert stats.recoveries["stub"] == 1
        assert (stats.size, stats.created, stats.destroyed) == (1, 2, 1)

    def test_closing_destroys_what_is_left(self) -> None:
        async def main() -> MockPool:
            pool = MockPool(supervise=False)
            pool.register(ServiceSpec(name="svc", factory=Made(), min_size=3, max_size=3))
            async with pool:
                pass
            return pool

        stats = run_virtual(main).stats("svc")
        assert (stats.size, stats.created, stats.destroyed) == (0, 3, 3)


def test_a_wait_whose_bind_or_on_acquire_raises_stays_out_of_the_wait_percentiles() -> None:
    """The waits cover the acquisitions served or timed out: one that waited and then failed
    (its bind or its on_acquire raised) got nothing, and its wait is no time to get one."""
    clock = FakeClock()
    made = Made()
    permits = asyncio.Semaphore(0)  # one per creation the test lets through
    broken = {"bind": True, "on_acquire": False}

    async def factory() -> dict[str, int]:
        await permits.acquire()
        return made()

    def bind(instance: dict[str, int]) -> dict[str, int]:
        if broken["bind"]:
            raise RuntimeError("bind broke")
        return instance

    def on_acquire(instance: dict[str, int]) -> None:
        if broken["on_acquire"]:
            raise RuntimeError("on_acquire broke")

    async def waits_then_fails(pool: MockPool, match: str) -> None:
        waiter = asyncio.create_task(pool.acquire("svc").__aenter__())
        await settle()
        clock.advance(2.0)  # it waits 2 s for the creation (or the recovery)
        permits.release()
        with pytest.raises(RuntimeError, match=match):
            await waiter

    async def main() -> tuple[PoolStats, list[float]]:
        pool = MockPool(supervise=False, clock=clock)
        pool.register(ServiceSpec(name="svc", factory=factory, bind=bind, on_acquire=on_acquire, max_size=1))
        async with pool:
            await waits_then_fails(pool, "bind broke")  # the new instance's bind
            broken["bind"], broken["on_acquire"] = False, True
            await waits_then_fails(pool, "on_acquire broke")  # the recovery's rebuilt instance
            return pool.stats("svc"), pool.service_pools["svc"].metrics.waits.values()

    stats, waits = run_virtual(main)
    assert (stats.acquisitions, stats.served, stats.acquire_errors) == (2, 0, 2)
    assert waits == []
    assert stats.wait_ewma_s == 0.0


def test_an_acquisition_whose_check_fails_after_a_wait_records_one_wait() -> None:
    """An instance handed to a waiter fails its check on acquire; the waiter waits again.
    One acquisition, one wait: from when it began to wait to the instance it kept."""
    clock = FakeClock()
    failing = {"id": 1}

    def check(instance: dict[str, int]) -> bool:
        return instance["id"] != failing["id"]

    async def main() -> tuple[PoolStats, list[float]]:
        pool = MockPool(supervise=False, clock=clock)
        pool.register(
            ServiceSpec(
                name="svc", factory=Made(), health_check=check, check_idle_after=0.5, min_size=1, max_size=1
            )
        )
        async with pool:
            async with pool.acquire("svc") as first:
                assert first["id"] == 1
                waiter = asyncio.create_task(pool.acquire("svc").__aenter__())
                await settle()
                clock.advance(2.0)  # it waits 2 s for the release
            clock.advance(1.0)  # and the instance sits 1 s before the waiter runs: checked, fails
            second = await waiter
            assert second["id"] == 2  # recovery rebuilt it from the factory
            return pool.stats("svc"), pool.service_pools["svc"].metrics.waits.values()

    stats, waits = run_virtual(main)
    assert stats.health_failures == 1
    assert (stats.acquisitions, stats.hits, stats.served) == (2, 1, 2)
    assert waits == [3.0]


def test_error_rate_is_a_share_of_the_operations_that_failed() -> None:
    """One acquisition whose check on acquire failed on three idle instances before a rebuilt
    one served it: three failures, but not three errors per acquisition (it read 300 %). The
    rate is failures over the operations that could fail: the lease, the checks."""
    clock = FakeClock()

    def check(instance: dict[str, int]) -> bool:
        return instance["id"] > 3  # the three made first are all broken

    async def main() -> PoolStats:
        pool = MockPool(supervise=False, clock=clock)
        pool.register(
            ServiceSpec(
                name="svc", factory=Made(), health_check=check, check_idle_after=1.0, min_size=3, max_size=3
            )
        )
        async with pool:
            await settle()
            clock.advance(5.0)
            async with pool.acquire("svc") as served:
                assert served["id"] > 3
            return pool.stats("svc")

    stats = run_virtual(main)
    assert (stats.acquisitions, stats.served, stats.health_checks, stats.health_failures) == (1, 1, 3, 3)
    assert (stats.resets, stats.reset_failures, stats.lease_errors) == (1, 0, 0)
    assert stats.error_rate == 3 / (1 + 3)  # failures / (lease + checks)


def test_error_rate_of_a_lease_whose_body_and_reset_failed_is_one() -> None:
    def reset(instance: dict[str, int]) -> None:
        raise RuntimeError("reset broke")

    async def main() -> PoolStats:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=Made(), reset=reset, max_size=1))
        async with pool:
            with pytest.raises(KeyError):
                async with pool.acquire("svc"):
                    raise KeyError("the test's own error")
            return pool.stats("svc")

    stats = run_virtual(main)
    assert (stats.acquisitions, stats.lease_errors, stats.reset_failures) == (1, 1, 1)
    assert stats.error_rate == 1.0  # every operation failed; per acquisition it read 200 %
