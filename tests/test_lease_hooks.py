"""``on_acquire`` / ``on_release``: sync per-lease hooks run in the task that holds the lease."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from typing import Any

import pytest

from mockpool import MockPool, ServiceConfigError, ServiceSpec

HELD: ContextVar[tuple[Any, ...]] = ContextVar("held", default=())


def _enter(handle: Any) -> Token[tuple[Any, ...]]:
    return HELD.set((*HELD.get(), handle))


def _leave(handle: Any, token: Token[tuple[Any, ...]]) -> None:
    del handle
    HELD.reset(token)


def _pool(**hooks: Any) -> MockPool:
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="svc", factory=lambda: {"n": 0}, max_size=1, **hooks))
    return pool


@pytest.mark.asyncio
async def test_the_hooks_run_in_the_holding_task_and_the_token_comes_back() -> None:
    """What on_acquire sets in the context is seen by the body and the tasks it starts, and
    on_release gets the token back before the reset runs."""
    order: list[str] = []

    def reset(instance: dict[str, int]) -> None:
        order.append(f"reset, held={len(HELD.get())}")

    def leave(handle: Any, token: Token[tuple[Any, ...]]) -> None:
        order.append("on_release")
        _leave(handle, token)

    pool = _pool(on_acquire=_enter, on_release=leave, reset=reset)
    async with pool:
        async with pool.acquire("svc") as instance:
            assert HELD.get() == (instance,)

            async def child() -> tuple[Any, ...]:
                return HELD.get()

            assert await asyncio.create_task(child()) == (instance,)
        assert HELD.get() == ()
        assert order == ["on_release", "reset, held=0"]


@pytest.mark.asyncio
async def test_concurrent_leases_each_see_only_their_own() -> None:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=object, max_size=4, on_acquire=_enter, on_release=_leave))
    all_held = asyncio.Barrier(4)
    seen: list[bool] = []

    async def one() -> None:
        async with pool.acquire("svc") as instance:
            await all_held.wait()  # the four leases overlap
            seen.append(HELD.get() == (instance,))

    async with pool:
        await asyncio.gather(*(one() for _ in range(4)))
    assert seen == [True] * 4


@pytest.mark.asyncio
async def test_a_failing_on_acquire_sends_the_instance_to_recovery() -> None:
    calls = 0

    def on_acquire(handle: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")

    pool = _pool(on_acquire=on_acquire)
    async with pool:
        with pytest.raises(RuntimeError, match="boom"):
            async with pool.acquire("svc"):
                pytest.fail("the body must not run")
        async with pool.acquire("svc") as instance:
            assert instance == {"n": 0}
        stats = pool.stats("svc")
        assert stats.recoveries and stats.in_use == 0
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_failing_on_release_recovers_the_instance_and_reaches_the_test() -> None:
    failures = [RuntimeError("cannot undo")]

    def on_release(handle: Any, token: Any) -> None:
        if failures:
            raise failures.pop()

    pool = _pool(on_release=on_release)
    async with pool:
        with pytest.raises(RuntimeError, match="cannot undo"):
            async with pool.acquire("svc"):
                pass
        assert pool.stats("svc").discards == 1
        async with pool.acquire("svc", timeout=5):
            pass
        pool.check_invariants()


@pytest.mark.asyncio
async def test_without_on_acquire_on_release_gets_none() -> None:
    got: list[Any] = []
    pool = _pool(on_release=lambda handle, token: got.append(token))
    async with pool, pool.acquire("svc"):
        pass
    assert got == [None]


@pytest.mark.parametrize("hook", ["on_acquire", "on_release"])
def test_lease_hooks_must_be_sync(hook: str) -> None:
    async def coroutine_function(*args: Any) -> None:
        del args

    with pytest.raises(ServiceConfigError, match=rf"^service 'svc': {hook}=.* must be a sync function"):
        ServiceSpec(name="svc", factory=object, **{hook: coroutine_function})  # type: ignore[arg-type]
    with pytest.raises(ServiceConfigError, match=rf"{hook}=3 must be a callable"):
        ServiceSpec(name="svc", factory=object, **{hook: 3})  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_cancellation_in_on_acquire_gives_the_instance_back() -> None:
    cancelled = [asyncio.CancelledError()]

    def on_acquire(handle: Any) -> None:
        if cancelled:
            raise cancelled.pop()

    pool = _pool(on_acquire=on_acquire)
    async with pool:
        with pytest.raises(asyncio.CancelledError):
            async with pool.acquire("svc"):
                pytest.fail("the body must not run")
        stats = pool.stats("svc")
        assert (stats.idle, stats.in_use, stats.recoveries.total(), stats.cancellations) == (1, 0, 0, 1)
        async with pool.acquire("svc", timeout=5):
            pass
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_cancellation_in_on_release_still_releases_the_instance() -> None:
    """What on_acquire set may still be in place: the instance goes to recovery, as when
    on_release raises, and the cancellation propagates from the ``async with``."""
    cancelled = [asyncio.CancelledError()]

    def on_release(handle: Any, token: Any) -> None:
        if cancelled:
            raise cancelled.pop()

    pool = _pool(on_release=on_release)
    async with pool:
        with pytest.raises(asyncio.CancelledError):
            async with pool.acquire("svc"):
                pass
        assert pool.stats("svc").discards == 1
        async with pool.acquire("svc", timeout=5):
            pass
        pool.check_invariants()
