"""Work in flight in an event loop that stopped running, but was not closed, covers no waiter
elsewhere: it goes on only when that loop runs again, which may be never (pytest-asyncio keeps
a session- or module-scoped loop open, not running, while a function-scoped test runs; a test
that drives a loop of its own with ``run_until_complete`` leaves it so between calls).

A creation (warming ahead with ``expect``, or one a waiter that gave up asked for) or a
recovery left so counted as covering the next waiter, in any other loop: the waiter started
nothing and waited until its timeout (30 s by default)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mockpool import MockPool, ServiceSpec

WAIT_S = 5.0  # a bound for the harness, not an expected duration


class _Gated:
    """A factory whose first call waits in its loop until ``gate`` is opened there: a slow
    creation, frozen when that loop stops running."""

    def __init__(self, *, block_call: int = 1) -> None:
        self.calls = 0
        self.block_call = block_call
        self.started: asyncio.Event | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> dict[str, int]:
        self.calls += 1
        if self.calls == self.block_call:
            assert self.started is not None and self.gate is not None
            self.started.set()
            await self.gate.wait()
        return {}

    def arm(self) -> None:
        """Made in the loop the blocking call will run in."""
        self.started, self.gate = asyncio.Event(), asyncio.Event()


def _paused_loop(factory: _Gated, leave: Callable[[], Awaitable[None]]) -> asyncio.AbstractEventLoop:
    """A loop in which ``leave()`` left work in flight inside ``factory``, then stopped."""
    loop = asyncio.new_event_loop()

    async def main() -> None:
        factory.arm()
        await leave()
        assert factory.started is not None
        await asyncio.wait_for(factory.started.wait(), WAIT_S)

    loop.run_until_complete(main())
    return loop


def _finish(pool: MockPool, factory: _Gated, loop: asyncio.AbstractEventLoop) -> None:
    """Let the frozen work end in its own loop, then close that loop."""

    async def main() -> None:
        assert factory.gate is not None
        factory.gate.set()
        for _ in range(1000):  # bounded: the creation or recovery ends in a few loop turns
            stats = pool.stats("slow")
            if stats.creating == 0 and stats.recovering == 0:
                break
            await asyncio.sleep(0)

    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _served_in_a_new_loop(pool: MockPool) -> dict[str, int]:
    async def main() -> dict[str, int]:
        async with pool.acquire("slow", timeout=WAIT_S) as instance:
            return instance  # type: ignore[no-any-return]

    return asyncio.run(main())


def test_a_creation_frozen_in_a_paused_loop_does_not_keep_a_waiter_waiting() -> None:
    factory = _Gated()
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear))

    async def give_up() -> None:
        # A waiter that gives up once its creation is under way: the creation goes on.
        task = asyncio.ensure_future(pool.acquire("slow").__aenter__())
        assert factory.started is not None
        await factory.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    paused = _paused_loop(factory, give_up)
    try:
        assert pool.stats("slow").creating == 1  # frozen in the paused loop
        assert _served_in_a_new_loop(pool) == {}  # before: AcquireTimeout after WAIT_S
        pool.check_invariants()
    finally:
        _finish(pool, factory, paused)
    stats = pool.stats("slow")
    assert (stats.size, stats.idle, stats.creating) == (2, 2, 0)  # the frozen one joined too
    pool.check_invariants()
    pool.close()


def test_warming_ahead_in_a_paused_loop_does_not_keep_a_waiter_waiting() -> None:
    """What the pytest plugin does in a session-scoped loop: ``expect`` what the next test
    needs; the next test runs in its own loop while the session loop waits."""
    factory = _Gated()
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear))

    async def expect() -> None:
        pool.expect(["slow"])

    paused = _paused_loop(factory, expect)
    try:
        assert _served_in_a_new_loop(pool) == {}
    finally:
        _finish(pool, factory, paused)
    pool.check_invariants()
    pool.close()


def test_a_recovery_frozen_in_a_paused_loop_does_not_keep_a_waiter_waiting() -> None:
    factory = _Gated(block_call=2)  # the first builds the instance, the second rebuilds it
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear))

    async def discard() -> None:
        lease = pool.acquire("slow")
        async with lease:
            lease.discard()  # recovered in the background, from the factory

    paused = _paused_loop(factory, discard)
    try:
        assert pool.stats("slow").recovering == 1
        assert _served_in_a_new_loop(pool) == {}
        pool.check_invariants()
    finally:
        _finish(pool, factory, paused)
    stats = pool.stats("slow")
    assert (stats.size, stats.idle, stats.recovering) == (2, 2, 0)
    pool.check_invariants()
    pool.close()


def test_at_max_size_the_timeout_names_the_paused_loop() -> None:
    """No room for another instance: the waiter still waits, and its timeout says why."""
    factory = _Gated()
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear, max_size=1))

    async def expect() -> None:
        pool.expect(["slow"])

    paused = _paused_loop(factory, expect)
    try:

        async def main() -> str:
            with pytest.raises(TimeoutError) as caught:
                async with pool.acquire("slow", timeout=0.01):
                    pass
            return str(caught.value)

        message = asyncio.run(main())
        assert "event loop that is not running" in message, message
    finally:
        _finish(pool, factory, paused)
    pool.check_invariants()
    pool.close()


def test_at_max_size_a_recovery_frozen_in_a_paused_loop_is_named_by_the_timeout() -> None:
    """The only instance is being recovered in a loop that stopped running: a waiter in
    another loop cannot be served until that loop runs again (a second recovery of the same
    instance could race the frozen one when it resumes), and its timeout says so."""
    factory = _Gated(block_call=2)  # the first builds the instance, the second rebuilds it
    pool = MockPool()
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear, max_size=1))

    async def discard() -> None:
        lease = pool.acquire("slow")
        async with lease:
            lease.discard()

    paused = _paused_loop(factory, discard)
    try:
        assert pool.stats("slow").recovering == 1

        async def main() -> str:
            with pytest.raises(TimeoutError) as caught:
                async with pool.acquire("slow", timeout=0.01):
                    pass
            return str(caught.value)

        message = asyncio.run(main())
        assert "recovered in an event loop that is not running" in message, message
        pool.check_invariants()
    finally:
        _finish(pool, factory, paused)
    stats = pool.stats("slow")
    assert (stats.size, stats.idle, stats.recovering) == (1, 1, 0)  # served once it ran again
    pool.check_invariants()
    pool.close()


@pytest.mark.parametrize("call", ["warm", "start"])
def test_a_creation_frozen_in_a_paused_loop_does_not_keep_warming_waiting(call: str) -> None:
    """``warm()`` (and ``start()``, which warms) waits for the creations in flight when it is
    called, those it did not start included, so that a group finds its members idle. One
    frozen in a paused loop ends only when that loop runs again: the warm in another loop
    waited that long, for ever if it never does."""
    factory = _Gated()
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="slow", factory=factory, reset=dict.clear, min_size=2))

    async def expect() -> None:
        pool.expect(["slow"])

    paused = _paused_loop(factory, expect)
    try:
        assert pool.stats("slow").creating == 1  # frozen in the paused loop

        async def main() -> None:
            async with asyncio.timeout(WAIT_S):  # was TimeoutError: waited for the frozen one
                if call == "warm":
                    await pool.warm()
                else:
                    await pool.start()

        asyncio.run(main())
        pool.check_invariants()
    finally:
        _finish(pool, factory, paused)
    stats = pool.stats("slow")
    assert (stats.size, stats.creating) == (2, 0)
    pool.check_invariants()
    pool.close()
