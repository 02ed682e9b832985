"""Each known cancellation race, forced deterministically: nothing is lost and the original
cancellation propagates."""

from __future__ import annotations

import asyncio

import pytest

from mockpool import AcquireTimeout, MockPool, ServiceSpec


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
