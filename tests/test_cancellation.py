"""Each known cancellation race, forced deterministically: nothing is lost and the original
cancellation propagates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import looptime
import pytest

from mockpool import AcquireTimeout, FakeClock, MockPool, PoolClosedError, RecoveryFailedError, ServiceSpec


def _pool(**spec: object) -> MockPool:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=object, max_size=1, **spec))  # type: ignore[arg-type]
    return pool


async def _waiting(pool: MockPool, count: int = 1) -> None:
    """Let tasks run until ``count`` acquirers wait on ``svc``."""
    for _ in range(100):
        if pool.stats("svc").waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {count} waiters, have {pool.stats('svc').waiting}")


@pytest.mark.asyncio
async def test_cancel_after_handover_before_the_waiter_ran() -> None:
    """An instance handed to a waiter that is cancelled before it runs goes to the next waiter."""
    pool = _pool()
    async with pool:
        holder = pool.acquire("svc")
        await holder.__aenter__()
        order: list[str] = []

        async def wait(name: str) -> None:
            async with pool.acquire("svc"):
                order.append(name)

        first = asyncio.create_task(wait("first"))
        await _waiting(pool, 1)
        second = asyncio.create_task(wait("second"))
        await _waiting(pool, 2)

        await holder.__aexit__(None, None, None)  # hands the instance to `first`, synchronously
        first.cancel()  # ... which is cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert order == ["second"]
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)
        assert stats.cancellations == 1
        pool.check_invariants()


@pytest.mark.asyncio
async def test_cancel_during_async_reset_finishes_the_reset_and_propagates() -> None:
    """The releasing task is cancelled while an async reset runs: the reset completes in the
    background, the instance goes back to idle, and the task sees its CancelledError."""
    gate = asyncio.Event()
    resets: list[object] = []

    async def reset(instance: object) -> None:
        await gate.wait()
        resets.append(instance)

    pool = _pool(reset=reset)
    async with pool:
        entered = asyncio.Event()

        async def user() -> None:
            async with pool.acquire("svc"):
                entered.set()

        task = asyncio.create_task(user())
        await entered.wait()
        await asyncio.sleep(0)  # the task is now awaiting the background reset
        assert pool.stats("svc").in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        for _ in range(10):
            await asyncio.sleep(0)
        stats = pool.stats("svc")
        assert len(resets) == 1
        assert (stats.idle, stats.in_use, stats.resets) == (1, 0, 1)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_cancel_while_holding_resets_and_propagates() -> None:
    """Cancelled inside the ``async with`` body: the instance is reset and idle again."""
    resets: list[object] = []
    pool = _pool(reset=resets.append)
    async with pool:
        inside = asyncio.Event()

        async def user() -> None:
            async with pool.acquire("svc"):
                inside.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(user())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(resets) == 1
        assert pool.stats("svc").idle == 1
        pool.check_invariants()


@pytest.mark.asyncio
@pytest.mark.parametrize("first", ["release", "timeout"])
async def test_timeout_racing_a_release(first: str) -> None:
    """Whichever of a release and the waiter's deadline comes first wins; nothing is lost."""
    pool = _pool()
    async with pool:
        holder = pool.acquire("svc")
        await holder.__aenter__()
        result: list[str] = []

        async def wait() -> None:
            try:
                async with pool.acquire("svc", timeout=60):
                    result.append("served")
            except AcquireTimeout:
                result.append("timeout")

        task = asyncio.create_task(wait())
        await _waiting(pool)
        svc = pool.service_pools["svc"]
        waiter = next(iter(svc.core.waiters))
        if first == "release":
            await holder.__aexit__(None, None, None)
            svc._expire(waiter)  # the deadline fires right after the hand-over
        else:
            svc._expire(waiter)
            await holder.__aexit__(None, None, None)
        await task
        assert result == (["served"] if first == "release" else ["timeout"])
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)
        assert stats.timeouts == (0 if first == "release" else 1)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_timed_out_acquire_leaves_no_trace() -> None:
    pool = _pool()
    async with pool:
        async with pool.acquire("svc"):
            with pytest.raises(AcquireTimeout):
                async with pool.acquire("svc", timeout=0.001):
                    pass  # pragma: no cover
            stats = pool.stats("svc")
            assert (stats.waiting, stats.timeouts, stats.in_use) == (0, 1, 1)
        pool.check_invariants()
        assert pool.stats("svc").idle == 1


@pytest.mark.asyncio
async def test_creation_outlives_the_acquirer_that_asked_for_it() -> None:
    """A creation is not cancelled because its requester gave up: the instance joins the pool."""
    gate = asyncio.Event()

    async def factory() -> object:
        await gate.wait()
        return object()

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=factory, max_size=1))
    async with pool:
        task = asyncio.create_task(pool.acquire("svc").__aenter__())
        await _waiting(pool)
        assert pool.stats("svc").creating == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        for _ in range(10):
            await asyncio.sleep(0)
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.creating, stats.created) == (1, 1, 0, 1)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_exception_in_body_propagates_unchanged() -> None:
    pool = _pool()
    error = KeyError("mine")
    async with pool:
        with pytest.raises(KeyError) as caught:
            async with pool.acquire("svc"):
                raise error
        assert caught.value is error
        stats = pool.stats("svc")
        assert (stats.lease_errors, stats.idle) == (1, 1)


@pytest.mark.asyncio
async def test_wait_for_around_acquire_cancels_cleanly() -> None:
    """``asyncio.wait_for`` delivers a native cancel; the waiter slot is freed."""
    pool = _pool()
    async with pool:
        async with pool.acquire("svc"):

            async def acquire_and_hold() -> None:
                async with pool.acquire("svc"):
                    pass  # pragma: no cover

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(acquire_and_hold(), timeout=0.001)
            assert pool.stats("svc").waiting == 0
        pool.check_invariants()
        assert pool.stats("svc").idle == 1


class SlowDestroy:
    """Instances whose async destroy takes ``delay`` seconds of loop time."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.destroyed: list[int] = []
        self.made = 0

    def factory(self) -> dict[str, int]:
        self.made += 1
        return {"id": self.made}

    async def destroy(self, instance: dict[str, int]) -> None:
        await asyncio.sleep(self.delay)
        self.destroyed.append(instance["id"])


def test_a_cancelled_close_finishes_in_the_background() -> None:
    slow = SlowDestroy(delay=1.0)

    async def main() -> None:
        pool = MockPool(supervise=True)
        pool.register(ServiceSpec(name="slow", factory=slow.factory, destroy=slow.destroy, min_size=3))
        await pool.start()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.aclose()
        assert pool.closed  # closing, not open: no new acquires
        await pool.aclose()  # waits for the close under way to finish
        assert sorted(slow.destroyed) == [1, 2, 3]
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # supervisors ended
        assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")

    _in_virtual_time(main())  # virtual time: the destroy's second passes at once


def _in_virtual_time(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a looptime loop: timers fire at once, in virtual time."""
    loop = looptime.new_event_loop(start=0.0)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


def _run_then_end_the_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """What ``asyncio.run`` does (run, cancel what is left, close), on a virtual-time loop."""
    loop = looptime.new_event_loop(start=0.0)
    try:
        loop.run_until_complete(main())
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:

            async def settle() -> None:
                await asyncio.gather(*left, return_exceptions=True)

            loop.run_until_complete(settle())
    finally:
        loop.close()


def test_a_close_cut_short_by_the_end_of_its_loop_is_finished_by_the_next_aclose() -> None:
    slow = SlowDestroy(delay=1.0)
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=slow.factory, destroy=slow.destroy, min_size=3))

    async def start_then_give_up_closing() -> None:
        await pool.start()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.aclose()
        # The loop now ends, cancelling the close task in the first instance's destroy.

    _run_then_end_the_loop(start_then_give_up_closing)
    assert pool.closed and slow.destroyed == []

    async def close_again() -> None:
        await pool.aclose()

    _run_then_end_the_loop(close_again)
    # The instance whose destroy was cut short is destroyed again: destroy hooks must be
    # idempotent, as close() methods are. It is counted once (was twice: destroyed=4 of 3
    # created, and ``size == created - destroyed`` broken).
    assert sorted(slow.destroyed) == [1, 2, 3]
    stats = pool.stats("slow")
    assert (stats.size, stats.created, stats.destroyed) == (0, 3, 3)
    assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")


def test_a_close_taken_over_from_a_paused_loop_does_not_fail_when_that_loop_resumes() -> None:
    """A close starts in a loop that then stops running, open (a module-scoped loop between
    its tests; its caller gave up waiting), mid-way through destroying the instances; the next
    ``aclose`` comes from another loop and finishes the close there. When the first loop ran
    again, its close went on with the instances the second had destroyed and taken off the
    list: it failed with ``IndexError: pop from empty list`` (an error for whoever awaited it,
    or "Task exception was never retrieved")."""
    made: list[int] = []
    destroyed: list[int] = []
    gate: list[asyncio.Event] = []

    def factory() -> dict[str, int]:
        made.append(len(made) + 1)
        return {"id": made[-1]}

    async def destroy(instance: dict[str, int]) -> None:
        destroyed.append(instance["id"])
        if len(destroyed) == 1:
            await gate[0].wait()  # the first destroy, in the first loop, waits there

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=factory, destroy=destroy, min_size=3))
    first = asyncio.new_event_loop()

    async def start_closing() -> asyncio.Task[None]:
        gate.append(asyncio.Event())
        await pool.start()
        closing = asyncio.ensure_future(pool.aclose())
        while not destroyed:
            await asyncio.sleep(0)
        return closing

    try:
        closing = first.run_until_complete(start_closing())  # then the loop stops, open

        async def close_again() -> None:
            async with asyncio.timeout(5):
                await pool.aclose()

        asyncio.run(close_again())
        assert pool.stats("svc").destroyed == 3
        first.call_soon(gate[0].set)

        async def resume() -> None:
            async with asyncio.timeout(5):
                await closing  # was IndexError

        first.run_until_complete(resume())
    finally:
        first.close()
    # The destroy cut short is run again by the close that took over (destroy hooks are
    # idempotent), and counted once.
    assert sorted(set(destroyed)) == [1, 2, 3]
    assert len(destroyed) == 4 and destroyed[0] == destroyed[1]
    stats = pool.stats("svc")
    assert (stats.size, stats.created, stats.destroyed) == (0, 3, 3)
    assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")


def test_a_cancelled_start_undoes_itself() -> None:
    made: list[int] = []
    destroyed: list[int] = []
    gate = asyncio.Event()

    async def factory() -> int:
        made.append(len(made) + 1)
        if len(made) > 4:
            await gate.wait()  # the fifth creation never finishes: the start is cancelled there
        return made[-1]

    async def main() -> None:
        pool = MockPool()
        pool.register(ServiceSpec(name="svc", factory=factory, destroy=destroyed.append, min_size=5))
        with anyio.move_on_after(0.5) as scope:
            async with pool:
                raise AssertionError("the start should not have finished")
        assert scope.cancelled_caught
        assert pool.closed
        assert sorted(destroyed) == [1, 2, 3, 4]
        assert pool.stats("svc").size == 0
        with pytest.raises(PoolClosedError):
            pool.acquire("svc")
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    _in_virtual_time(main())


# == a hook that raises a BaseException (pytest.fail or pytest.skip in it, Ctrl-C) ==============

#: What such hooks raise: not Exceptions, so an ``except Exception`` let them through with the
#: instance still marked leased, for good.
_BASE_EXCEPTIONS = [KeyboardInterrupt, pytest.fail.Exception, pytest.skip.Exception]


def _first_call_raises(error: type[BaseException], *, is_async: bool) -> Callable[..., Any]:
    """A hook whose first call raises ``error`` (sync, or after a step of the loop)."""
    calls: list[object] = []

    def hook(instance: object) -> bool:
        calls.append(instance)
        if len(calls) == 1:
            raise error("raised by the hook")
        return True

    async def async_hook(instance: object) -> bool:
        await asyncio.sleep(0)
        return hook(instance)

    return async_hook if is_async else hook


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("group", [False, True], ids=["plain", "group"])
@pytest.mark.parametrize("error", _BASE_EXCEPTIONS)
@pytest.mark.asyncio
async def test_a_reset_raising_a_base_exception_loses_nothing(
    error: type[BaseException], group: bool, is_async: bool
) -> None:
    """The instance goes to recovery, the exception reaches the releasing test, and the pool's
    background work goes on (an async reset's exception ended the runtime's task group)."""
    pool = MockPool(supervise=False)
    reset = _first_call_raises(error, is_async=is_async)
    if group:
        pool.register(ServiceSpec(name="member", factory=dict, reset=reset, max_size=1))
        pool.register(ServiceSpec(name="svc", factory=lambda member: {}, depends_on=("member",), max_size=1))
    else:
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))
    async with pool:
        with pytest.raises(error):
            async with pool.acquire("svc"):
                pass
        async with pool.acquire("svc", timeout=5):  # was AcquireTimeout: in_use=1 for good
            pass
        pool.check_invariants()
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.in_use, stats.reset_failures) == (1, 1, 0, 1)
        assert sum(stats.recoveries.values()) == 1


@pytest.mark.parametrize("error", _BASE_EXCEPTIONS)
def test_a_check_on_acquire_raising_a_base_exception_passes_the_instance_on(
    error: type[BaseException],
) -> None:
    clock = FakeClock()
    check = _first_call_raises(error, is_async=True)

    async def main() -> None:
        pool = MockPool(supervise=False, clock=clock)
        pool.register(
            ServiceSpec(name="svc", factory=dict, health_check=check, check_idle_after=1.0, max_size=1)
        )
        async with pool:
            async with pool.acquire("svc"):
                pass
            clock.advance(5.0)  # idle longer than check_idle_after: checked when acquired
            with pytest.raises(error):
                async with pool.acquire("svc"):
                    raise AssertionError("the check raised: the lease never began")
            async with pool.acquire("svc", timeout=5):  # was AcquireTimeout: in_use=1 for good
                pass
            pool.check_invariants()
            stats = pool.stats("svc")
            assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0)

    _in_virtual_time(main())


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("error", [pytest.fail.Exception, pytest.skip.Exception])
def test_a_destroy_raising_a_base_exception_does_not_stop_the_close(
    error: type[BaseException], is_async: bool
) -> None:
    """The close stopped at that instance: the pool stayed "closing", its other instances
    were never destroyed, its supervisors ran on. (Ctrl-C still stops it; the next
    ``aclose()`` goes on from there, as after any close cut short.)"""
    destroyed: list[int] = []
    made: list[int] = []

    def factory() -> dict[str, int]:
        made.append(len(made) + 1)
        return {"id": made[-1]}

    def destroy(instance: dict[str, int]) -> None:
        destroyed.append(instance["id"])
        if instance["id"] == 1:
            raise error("raised by the hook")

    async def async_destroy(instance: dict[str, int]) -> None:
        await asyncio.sleep(0)
        destroy(instance)

    async def main() -> None:
        pool = MockPool()
        pool.register(
            ServiceSpec(
                name="svc", factory=factory, destroy=async_destroy if is_async else destroy, min_size=3
            )
        )
        await pool.start()
        await pool.aclose()
        assert sorted(destroyed) == [1, 2, 3]
        assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    _in_virtual_time(main())


@pytest.mark.parametrize("hook", ["factory", "restore"])
@pytest.mark.parametrize("error", [pytest.fail.Exception, pytest.skip.Exception])
@pytest.mark.asyncio
async def test_a_recovery_hook_raising_a_base_exception_fails_that_tier_only(
    error: type[BaseException], hook: str
) -> None:
    """Recovering a discarded instance, the hook raised: the entry stayed "recovering" for
    good (and the runtime's task group ended), so at ``max_size=1`` nothing was served again.
    Now that tier fails as it does on an Exception, and the ladder goes on."""
    made: list[int] = []

    def factory() -> dict[str, int]:
        made.append(1)
        if hook == "factory" and len(made) == 2:  # the rebuild of tier 2
            raise error("raised by the hook")
        return {}

    def restore(instance: dict[str, int], state: object) -> None:
        raise error("raised by the hook")

    pool = MockPool(supervise=False)
    extra: dict[str, Any] = {"snapshot": dict, "restore": restore} if hook == "restore" else {}
    pool.register(ServiceSpec(name="svc", factory=factory, max_size=1, **extra))
    async with pool:
        lease = pool.acquire("svc")
        async with lease:
            lease.discard()
        if hook == "factory":  # the last tier failed: as on an Exception, the waiter is told
            with pytest.raises(RecoveryFailedError) as caught:
                async with pool.acquire("svc", timeout=5):  # was AcquireTimeout: recovering=1
                    pass  # pragma: no cover
            assert isinstance(caught.value.__cause__, error)
        async with pool.acquire("svc", timeout=5):
            pass
        pool.check_invariants()
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.recovering) == (1, 1, 0)


def test_ctrl_c_in_a_factory_stops_the_run_and_loses_nothing() -> None:
    """A KeyboardInterrupt in a factory (Ctrl-C while a sync factory ran) became a
    RecoveryFailedError for the waiting test, and the run went on: the user's Ctrl-C was
    lost. It now stops the loop, as asyncio lets a task's KeyboardInterrupt do, with the
    creation's slot given back."""
    made: list[int] = []

    def factory() -> dict[str, int]:
        made.append(1)
        if len(made) == 1:
            raise KeyboardInterrupt
        return {}

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=factory, max_size=1))

    async def use() -> None:
        async with pool.acquire("svc", timeout=5):
            pass

    loop = looptime.new_event_loop(start=0.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(use())
        for task in asyncio.all_tasks(loop):  # what asyncio.run does after a Ctrl-C
            task.cancel()
        loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
        stats = pool.stats("svc")
        assert (stats.size, stats.creating, stats.waiting) == (0, 0, 0)
        loop.run_until_complete(use())
        pool.check_invariants()
        assert pool.stats("svc").idle == 1
    finally:
        loop.close()
        pool.close()


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_a_close_that_gives_up_on_a_reset_destroys_the_instance_once_and_logs_no_error(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease ended with an async reset that outlives ``close_timeout``: the close destroys
    the instance under the reset, then ends the runtime. The reset then ended (cancelled with
    the runtime, or failing on the instance its destroy closed) and sent the destroyed entry
    to recovery: "begin_recovery expected entry #1 to be leased, but it is destroyed; this is
    a mockpool bug", logged as the runtime's error (and a failure ended the runtime's task
    group, with all the pool's background work, before the close did)."""
    closed = asyncio.Event()
    resetting = asyncio.Event()

    async def reset(instance: dict[str, int]) -> None:
        resetting.set()
        await closed.wait()  # "cancelled": never set, the reset hangs past close_timeout
        raise ConnectionError("the client was closed under the reset")

    def destroy(instance: dict[str, int]) -> None:
        if how == "failed":
            closed.set()

    async def main() -> None:
        pool = MockPool(supervise=False, close_timeout=1.0)
        pool.register(
            ServiceSpec(name="svc", factory=dict, reset=reset, reset_timeout=60, destroy=destroy, max_size=1)
        )
        await pool.start()

        async def use() -> None:
            async with pool.acquire("svc"):
                pass

        user = asyncio.create_task(use())
        await resetting.wait()
        async with asyncio.timeout(10):
            await pool.aclose()
            await user  # the releasing task is let go, not left waiting for the reset
        stats = pool.stats("svc")
        assert (stats.size, stats.created, stats.destroyed, stats.leaks) == (0, 1, 1, 1)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    caplog.set_level(logging.ERROR, logger="mockpool")
    _in_virtual_time(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("tier", ["snapshot", "factory"])
def test_a_recovery_the_close_overtakes_destroys_each_instance_once(tier: str) -> None:
    """A discarded instance is being recovered (restored, or rebuilt by the factory) when the
    pool closes: the close does not wait for recoveries, takes the entry off the books and
    destroys its instance. The recovery then ended, found the pool closed and destroyed the
    entry's instance again: the destroy hook ran twice on one instance, and ``destroyed``
    counted 2 for 1 created (``size == created - destroyed`` broken)."""
    destroyed: list[int] = []
    made: list[int] = []
    recovering = asyncio.Event()
    closing = asyncio.Event()

    async def factory() -> dict[str, int]:
        made.append(len(made) + 1)
        if tier == "factory" and len(made) == 2:  # the rebuild of tier 2
            recovering.set()
            await closing.wait()
        return {"id": made[-1]}

    async def restore(instance: dict[str, int], state: object) -> None:
        recovering.set()
        await closing.wait()

    async def destroy(instance: dict[str, int]) -> None:
        destroyed.append(instance["id"])
        closing.set()  # the recovery ends while the close still awaits this destroy
        await asyncio.sleep(0)

    async def main() -> None:
        pool = MockPool(supervise=False)
        extra: dict[str, Any] = {"snapshot": dict, "restore": restore} if tier == "snapshot" else {}
        pool.register(ServiceSpec(name="svc", factory=factory, destroy=destroy, max_size=1, **extra))
        await pool.start()
        lease = pool.acquire("svc")
        async with lease:
            lease.discard()
        await recovering.wait()
        async with asyncio.timeout(10):
            await pool.aclose()
        assert sorted(destroyed) == made  # each instance made, destroyed once
        stats = pool.stats("svc")
        assert (stats.size, stats.recovering, stats.created, stats.destroyed) == (0, 0, len(made), len(made))
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    _in_virtual_time(main())


def test_a_close_waiting_for_a_reset_under_way_goes_on_when_it_ends() -> None:
    """A task group is cancelled while its task awaits its lease's async reset (the reset goes
    on in the background), then the pool's block ends: the close waits for that lease. Nothing
    told it when the reset ended, only a release does: it waited its whole ``close_timeout``
    (30 s here) for a lease that had ended long before."""
    gate = asyncio.Event()
    resetting = asyncio.Event()

    async def reset(instance: dict[str, int]) -> None:
        resetting.set()
        await gate.wait()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = MockPool(supervise=False, close_timeout=30.0)
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))
        async with pool:

            async def use() -> None:
                async with pool.acquire("svc"):
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(use)
                await resetting.wait()
                tg.cancel_scope.cancel()  # use() stops awaiting its reset; the reset goes on
            assert pool.stats("svc").in_use == 1
            loop.call_later(1.0, gate.set)  # the reset ends 1 s into the close
        assert loop.time() < 2.0  # was 30.0: close_timeout
        stats = pool.stats("svc")
        assert (stats.resets, stats.leaks, stats.size, stats.destroyed) == (1, 0, 0, 1)

    _in_virtual_time(main())


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_factory_raising_a_cancelled_error_nobody_asked_for_fails_that_creation_only(
    is_async: bool,
) -> None:
    """A factory raises ``CancelledError`` while nothing cancels its task (it called
    ``result()`` on, or awaited, a future that something else cancelled). The creation took it
    for the end of its loop: the waiter was neither served nor told, and waited its whole
    timeout (30 s), with no creation tried again; and the error ended the runtime's task
    group, cancelling every other background job of the loop (another service's creation
    under way, made again later). It is now the factory's failure, as an exception is."""
    made: list[str] = []
    other_gate = asyncio.Event()
    other_creating = asyncio.Event()

    def cancelled_result() -> object:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return future.result()  # raises CancelledError

    def factory() -> dict[str, int]:
        made.append("svc")
        if made.count("svc") == 1:
            cancelled_result()
        return {}

    async def async_factory() -> dict[str, int]:
        await asyncio.sleep(0)
        return factory()

    async def other_factory() -> dict[str, int]:
        made.append("other")
        other_creating.set()
        await other_gate.wait()
        return {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=async_factory if is_async else factory, max_size=1))
        pool.register(ServiceSpec(name="other", factory=other_factory, max_size=1))
        async with pool:

            async def use_other() -> None:
                async with pool.acquire("other", timeout=30):
                    pass

            other = asyncio.create_task(use_other())
            await other_creating.wait()
            with pytest.raises(RecoveryFailedError) as caught:
                async with pool.acquire("svc", timeout=30):
                    pass  # pragma: no cover
            assert loop.time() < 1.0  # told at once, not at its timeout
            assert isinstance(caught.value.__cause__.__cause__, asyncio.CancelledError)  # type: ignore[union-attr]
            async with pool.acquire("svc", timeout=5):
                pass
            other_gate.set()
            await other
            assert made.count("other") == 1  # its creation went on
            pool.check_invariants()
            assert pool.stats("svc").idle == pool.stats("other").idle == 1

    _in_virtual_time(main())


@pytest.mark.parametrize("hook", ["reset", "destroy"])
def test_an_async_hook_raising_a_cancelled_error_nobody_asked_for_fails_that_hook_only(hook: str) -> None:
    """As above, for the hooks awaited in background jobs of their own: an async reset (the
    instance waited in recovery for the next runtime) or destroy that raises a
    ``CancelledError`` of its own ended the runtime's task group, cancelling the loop's other
    background work (here a creation under way, which had to be made again)."""
    made: list[str] = []
    destroyed: list[str] = []
    other_gate = asyncio.Event()
    other_creating = asyncio.Event()

    calls: list[object] = []

    async def awaits_a_cancelled_future(instance: dict[str, int]) -> None:
        calls.append(instance)
        if len(calls) == 1:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future

    async def other_factory() -> dict[str, int]:
        made.append("other")
        other_creating.set()
        await other_gate.wait()
        return {}

    async def main() -> None:
        pool = MockPool(supervise=False)
        hooks: dict[str, Any] = {hook: awaits_a_cancelled_future}
        pool.register(ServiceSpec(name="svc", factory=dict, max_size=1, **hooks))
        pool.register(ServiceSpec(name="other", factory=other_factory, max_size=1, destroy=destroyed.append))
        async with pool:
            async with pool.acquire("svc"):
                pass

            async def use_other() -> None:
                async with pool.acquire("other", timeout=30):
                    pass

            other = asyncio.create_task(use_other())
            await other_creating.wait()
            if hook == "reset":
                async with pool.acquire("svc", timeout=5):  # its reset failed: recovered
                    pass
                assert pool.stats("svc").reset_failures == 1
            else:
                pool.unregister("svc")  # destroys the idle instance, in a background job
                for _ in range(10):  # that job runs (and its end ended the runtime)
                    await asyncio.sleep(0)
            other_gate.set()
            await other
            assert made == ["other"]  # its creation went on
            pool.check_invariants()
            assert pool.stats("other").idle == 1

    _in_virtual_time(main())


def test_a_close_does_not_wait_for_nor_count_as_leaks_the_members_of_a_group_being_built() -> None:
    """A group's creation is under way when the pool closes, its members leased to it (and
    counted lent). The close took them for leases of tests: it waited its whole
    ``close_timeout`` for them (5 s by default: a creation frozen in a paused loop, or a
    slow group factory, at the end of a session), then counted each as a leak."""
    building = asyncio.Event()

    async def session(cache: dict[str, int], database: dict[str, int]) -> dict[str, Any]:
        building.set()
        await asyncio.Event().wait()  # still building when the pool closes
        raise AssertionError("unreachable")  # pragma: no cover

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = MockPool(supervise=False, close_timeout=30.0)
        pool.register(ServiceSpec(name="cache", factory=dict, max_size=1))
        pool.register(ServiceSpec(name="database", factory=dict, max_size=1))
        pool.register(ServiceSpec(name="session", factory=session, depends_on=("cache", "database")))
        await pool.start()
        pool.expect(["session"])  # warming ahead: no test waits for it
        await building.wait()
        assert pool.stats("cache").lent == pool.stats("database").lent == 1
        await pool.aclose()
        assert loop.time() < 1.0  # was 30.0: close_timeout
        for name in ("cache", "database", "session"):
            stats = pool.stats(name)
            assert (stats.size, stats.leaks, stats.created - stats.destroyed) == (0, 0, 0), name
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    _in_virtual_time(main())


@pytest.mark.parametrize("hook", ["factory", "destroy"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_hook_raising_generator_exit_itself_fails_that_hook_only(hook: str, is_async: bool) -> None:
    """A hook raises ``GeneratorExit`` while nothing closes the pool's coroutine (it closed a
    generator by hand and let the exception out, say). Taken for the end of the coroutine, it
    went on like Ctrl-C, which asyncio does not stop the loop for: a factory's ended the
    runtime's task group, with all the loop's background work, and its waiter was never told
    (it waited its whole timeout, for ever with ``timeout=None``); a destroy's stopped the
    close half-way, the pool left "closing". It is the hook's failure, as an exception is."""
    made: list[int] = []
    destroyed: list[int] = []

    def sync_factory() -> dict[str, int]:
        made.append(len(made) + 1)
        if hook == "factory" and len(made) == 1:
            raise GeneratorExit
        return {"id": made[-1]}

    def sync_destroy(instance: dict[str, int]) -> None:
        destroyed.append(instance["id"])
        if hook == "destroy" and len(destroyed) == 1:
            raise GeneratorExit

    async def async_factory() -> dict[str, int]:
        await asyncio.sleep(0)
        return sync_factory()

    async def async_destroy(instance: dict[str, int]) -> None:
        await asyncio.sleep(0)
        sync_destroy(instance)

    async def main() -> None:
        pool = MockPool(supervise=False)
        pool.register(
            ServiceSpec(
                name="svc",
                factory=async_factory if is_async else sync_factory,
                destroy=async_destroy if is_async else sync_destroy,
                max_size=2,
                min_size=2 if hook == "destroy" else 0,
            )
        )
        async with asyncio.timeout(10):
            async with pool:
                if hook == "factory":
                    with pytest.raises(RecoveryFailedError, match="GeneratorExit"):
                        async with pool.acquire("svc", timeout=None):  # was a wait for ever
                            pass
                    async with pool.acquire("svc", timeout=None):
                        pass
                    assert pool.stats("svc").last_error is not None
                    pool.check_invariants()
        assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")  # was "closing"
        stats = pool.stats("svc")
        assert (stats.size, stats.destroyed) == (0, stats.created)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    _in_virtual_time(main())
