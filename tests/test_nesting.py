"""Nested leases (mockpool.nesting): a service whose waiters hold a lease they queued for sees
the queue behind them as ``upstream`` in its sizing input, and the record of who holds what
ends with each lease, however it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mockpool import AcquireTimeout, MockPool, ServiceSpec
from mockpool.nesting import Holds


def test_holds_keeps_each_tasks_services_until_each_is_removed() -> None:
    holds: Holds[str] = Holds()
    task, other = object(), object()
    holds.add(task, "a")  # type: ignore[arg-type]
    holds.add(task, "b")  # type: ignore[arg-type]
    holds.add(task, "a")  # type: ignore[arg-type]  # two leases of one service
    holds.add(other, "b")  # type: ignore[arg-type]
    assert holds.of(task) == ("a", "b", "a")  # type: ignore[arg-type]
    assert len(holds) == 4
    holds.remove(task, "a")  # type: ignore[arg-type]
    holds.remove(task, "c")  # type: ignore[arg-type]  # never held: nothing happens
    assert holds.of(task) == ("b", "a")  # type: ignore[arg-type]
    holds.remove(task, "b")  # type: ignore[arg-type]
    holds.remove(task, "a")  # type: ignore[arg-type]
    assert holds.of(task) == ()  # type: ignore[arg-type]
    assert holds.of(other) == ("b",)  # type: ignore[arg-type]
    holds.clear()
    assert len(holds) == 0


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def _two_services() -> MockPool:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="a", factory=list, reset=list.clear, max_size=1))
    pool.register(ServiceSpec(name="b", factory=dict, reset=dict.clear, max_size=1))
    return pool


@pytest.mark.asyncio
async def test_waiters_at_a_service_who_hold_another_bring_its_queue_into_the_sizing() -> None:
    """One test holds ``a`` (it queued for it) and waits at ``b``; two more queue at ``a``
    behind it. ``b`` counts those two as upstream: each will lease ``b`` next."""
    pool = _two_services()
    async with pool:
        a, b = pool.service_pools["a"], pool.service_pools["b"]
        b_held = pool.acquire("b")
        await b_held.__aenter__()  # b's only instance, held from outside the nest
        inner = asyncio.Event()

        async def nested() -> None:
            async with pool.acquire("a"), pool.acquire("b"):
                inner.set()

        async def outer_only() -> None:
            async with pool.acquire("a"):
                pass

        first = asyncio.create_task(nested())
        await _until(lambda: b.core.waiting == 1)
        behind = [asyncio.create_task(outer_only()) for _ in range(2)]
        await _until(lambda: a.core.waiting == 2)
        assert b.nested == {a: 1}
        assert b.sizing_input().upstream == 2
        assert a.sizing_input().upstream == 0  # nobody waits at a holding b
        await b_held.__aexit__(None, None, None)
        await asyncio.gather(first, *behind)
        assert inner.is_set()
        assert b.nested == {} and b.sizing_input().upstream == 0
        assert len(pool.holds) == 0
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_lease_served_at_once_records_no_hold() -> None:
    """Only the slow path records: a test that got ``a`` from idle tells nothing of a queue."""
    pool = _two_services()
    async with pool:
        async with pool.acquire("a"):
            pass  # made on demand: this one queued for its creation
        assert len(pool.holds) == 0
        async with pool.acquire("a"):
            assert len(pool.holds) == 0  # idle: served at once
        async with pool.acquire("b"):
            assert len(pool.holds) == 1  # queued for the creation of b's first instance
            assert pool.holds.of(asyncio.current_task()) == (pool.service_pools["b"],)  # type: ignore[arg-type]
        assert len(pool.holds) == 0


@pytest.mark.asyncio
async def test_a_nested_waiter_that_times_out_or_is_cancelled_leaves_no_count() -> None:
    pool = _two_services()
    async with pool:
        b = pool.service_pools["b"]
        b_held = pool.acquire("b")
        await b_held.__aenter__()
        mine = pool.holds.of(asyncio.current_task())  # type: ignore[arg-type]
        assert mine == (b,)  # it queued for b's creation

        async def nested(timeout: float | None) -> None:
            async with pool.acquire("a"), pool.acquire("b", timeout=timeout):
                pass

        timed_out = asyncio.create_task(nested(0.0))
        with pytest.raises(AcquireTimeout):
            await timed_out
        assert b.nested == {} and len(pool.holds) == 1  # this task's lease of b

        # a is idle now, and a test served from idle queued for nothing: hold it, so the next
        # test queues for it again
        a_held = pool.acquire("a")
        await a_held.__aenter__()
        cancelled = asyncio.create_task(nested(None))
        await _until(lambda: pool.service_pools["a"].core.waiting == 1)
        await a_held.__aexit__(None, None, None)
        await _until(lambda: b.core.waiting == 1)
        assert len(b.nested) == 1
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert b.nested == {} and len(pool.holds) == 1
        await b_held.__aexit__(None, None, None)
        assert len(pool.holds) == 0
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_bind_that_raises_after_a_wait_forgets_the_hold() -> None:
    """A lease whose bind raised never began: its task does not hold it."""
    calls = 0

    def bind(instance: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        raise RuntimeError("bind failed")

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="a", factory=list, reset=list.clear, bind=bind, max_size=1))
    async with pool:
        with pytest.raises(RuntimeError, match="bind failed"):
            async with pool.acquire("a"):
                pass
        assert calls == 1
        assert len(pool.holds) == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("second_waits", [True, False], ids=["deadlock", "a-holder-not-waiting"])
async def test_a_timeout_names_the_deadlock_of_tests_nesting_leases_of_one_service(
    second_waits: bool,
) -> None:
    """max_size=2, and two tests each hold one instance and wait for a second: no release can
    ever come, and the timeout says so (under lease tracking, where the pool knows which test
    holds what). If one holder is not waiting here, its release may come: the usual advice."""
    from mockpool.lease import lease_owner

    pool = MockPool(supervise=False, track_leases=True)
    pool.register(ServiceSpec(name="db", factory=list, reset=list.clear, max_size=2))
    both_hold = asyncio.Barrier(2)
    release = asyncio.Event()

    async def test(owner: str, nest: bool) -> str | None:
        lease_owner.set(owner)  # what the pytest plugin sets for each test
        async with pool.acquire("db"):
            await both_hold.wait()
            if not nest:
                await release.wait()
                return None
            try:
                async with pool.acquire("db", timeout=0.05):
                    pass
            except AcquireTimeout as exc:
                release.set()
                return str(exc)
        return None

    async with pool:
        messages = [
            m for m in await asyncio.gather(test("test_one", True), test("test_two", second_waits)) if m
        ]
    if second_waits:
        # The first to time out names the deadlock; its test's release then ends it, so the
        # other's timeout (in the same step) has a release it could have had.
        deadlock = [m for m in messages if "a deadlock" in m]
        assert len(deadlock) == 1, messages
        assert "each of the 2 instances is held by a test that is itself waiting" in deadlock[0]
        assert "(2 tests, this one among them, the first acquired at" in deadlock[0]
    else:
        assert len(messages) == 1 and "deadlock" not in messages[0], messages
        assert "raise max_size" in messages[0]
    await asyncio.sleep(0)  # a timeout's count ends a loop step later (see Lease.__aenter__)
    assert pool.service_pools["db"].waiting_owners == {}
    pool.check_invariants()
