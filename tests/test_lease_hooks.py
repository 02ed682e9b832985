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


@pytest.mark.parametrize("hook", ["on_acquire", "on_release", "bind"])
def test_lease_hooks_must_be_sync(hook: str) -> None:
    """The lease calls them inline, unawaited: an async one handed the test a coroutine object
    (bind) or never ran (a warning "never awaited", an error under ``-W error``)."""

    async def coroutine_function(*args: Any) -> None:
        del args

    with pytest.raises(ServiceConfigError, match=rf"^service 'svc': {hook}=.* must be a sync function"):
        ServiceSpec(name="svc", factory=object, **{hook: coroutine_function})  # type: ignore[arg-type]
    with pytest.raises(ServiceConfigError, match=rf"{hook}=3 must be a callable"):
        ServiceSpec(name="svc", factory=object, **{hook: 3})  # type: ignore[arg-type]


# == groups: a group lease runs its members' hooks, as leases of the members would =============


def _group_pool(log: list[str], **failing: BaseException) -> MockPool:
    """Members ``a`` and ``b`` and the group ``g`` over them, each with hooks that log, keep
    the handle in :data:`HELD`, and check that on_release gets its own on_acquire's token.
    ``failing``: ``"b.on_acquire"`` (say) raises that error once."""

    def hooks(name: str) -> dict[str, Any]:
        def on_acquire(handle: Any) -> Any:
            log.append(f"{name}.on_acquire")
            error = failing.pop(f"{name}.on_acquire", None)
            if error is not None:
                raise error
            return (name, _enter(handle))

        def on_release(handle: Any, token: Any) -> None:
            log.append(f"{name}.on_release")
            owner, held = token
            assert owner == name  # its own token, not another service's
            _leave(handle, held)
            error = failing.pop(f"{name}.on_release", None)
            if error is not None:
                raise error

        def reset(instance: Any) -> None:
            log.append(f"{name}.reset")

        return {"on_acquire": on_acquire, "on_release": on_release, "reset": reset}

    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="a", factory=lambda: ["a"], max_size=2, **hooks("a")))
    pool.register(ServiceSpec(name="b", factory=lambda: ["b"], max_size=2, **hooks("b")))
    pool.register(
        ServiceSpec(
            name="g", factory=lambda a, b: {"a": a, "b": b}, depends_on=("a", "b"), max_size=1, **hooks("g")
        )
    )
    return pool


@pytest.mark.asyncio
async def test_a_group_lease_runs_its_members_hooks_then_its_own() -> None:
    """Members' on_acquire in ``depends_on`` order, then the group's; on_release in the
    reverse order, each with its own token, all before the resets (members' first)."""
    log: list[str] = []
    pool = _group_pool(log)
    async with pool:
        lease = pool.acquire("g")
        async with lease as group:
            assert HELD.get() == (lease.members["a"], lease.members["b"], group)
            assert log == ["a.on_acquire", "b.on_acquire", "g.on_acquire"]
            log.clear()
        assert HELD.get() == ()
        assert log == ["g.on_release", "b.on_release", "a.on_release", "a.reset", "b.reset", "g.reset"]
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_failing_member_on_acquire_undoes_the_hooks_before_it_and_recovers_the_group() -> None:
    """As for a plain lease: the instance goes to recovery and the error reaches the test
    before the body runs. The hooks that ran before it are undone (their on_release gets
    their token), so the task keeps nothing they set."""
    log: list[str] = []
    pool = _group_pool(log, **{"b.on_acquire": RuntimeError("boom")})
    async with pool:
        with pytest.raises(RuntimeError, match="boom"):
            async with pool.acquire("g"):
                pytest.fail("the body must not run")
        assert HELD.get() == ()
        assert log[:3] == ["a.on_acquire", "b.on_acquire", "a.on_release"]
        assert "g.on_acquire" not in log
        stats = pool.stats("g")
        assert (stats.in_use, stats.acquire_errors) == (0, 1)
        async with pool.acquire("g", timeout=5) as group:  # served once recovered
            assert group == {"a": ["a"], "b": ["b"]}
        assert pool.stats("g").recoveries.total() == 1
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_failing_member_on_release_still_releases_the_others_and_recovers_the_group() -> None:
    log: list[str] = []
    pool = _group_pool(log, **{"b.on_release": RuntimeError("cannot undo")})
    async with pool:
        with pytest.raises(RuntimeError, match="cannot undo"):
            async with pool.acquire("g"):
                log.clear()
        assert log[:3] == ["g.on_release", "b.on_release", "a.on_release"]
        assert HELD.get() == ()
        assert pool.stats("g").discards == 1
        async with pool.acquire("g", timeout=5):
            pass
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_cancellation_in_a_member_on_acquire_gives_the_group_back() -> None:
    """A sync hook that meets a cancellation (``future.result()`` of a cancelled future): the
    test never got the instance, so it goes back unchanged, as for a cancellation during a
    check on acquire, and the cancellation propagates."""
    log: list[str] = []
    pool = _group_pool(log, **{"b.on_acquire": asyncio.CancelledError()})
    async with pool:
        with pytest.raises(asyncio.CancelledError):
            async with pool.acquire("g"):
                pytest.fail("the body must not run")
        assert HELD.get() == ()
        assert log == ["a.on_acquire", "b.on_acquire", "a.on_release"]
        stats = pool.stats("g")
        assert (stats.idle, stats.in_use, stats.recoveries.total()) == (1, 0, 0)
        assert stats.cancellations == 1
        async with pool.acquire("g", timeout=5):
            pass
        pool.check_invariants()


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
async def test_a_cancellation_in_bind_does_not_strand_the_instance() -> None:
    """What a bind that was cut short left on the instance is not known: it goes to recovery
    (as when bind raises), and the cancellation propagates."""
    cancelled = [asyncio.CancelledError()]

    def bind(instance: dict[str, int]) -> dict[str, int]:
        if cancelled:
            raise cancelled.pop()
        return instance

    pool = _pool(bind=bind)
    async with pool:
        with pytest.raises(asyncio.CancelledError):
            async with pool.acquire("svc"):
                pytest.fail("the body must not run")
        stats = pool.stats("svc")
        assert (stats.in_use, stats.cancellations) == (0, 1)
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


@pytest.mark.asyncio
async def test_a_group_lease_released_after_the_pool_closed_still_undoes_its_members_hooks() -> None:
    """A leaked group lease whose instance the close destroyed: its late release still runs
    every on_release, as a plain lease's late release does, so the task keeps nothing."""
    log: list[str] = []
    pool = _group_pool(log)
    pool.close_timeout = 0
    await pool.start()
    lease = pool.acquire("g")
    await lease.__aenter__()
    await pool.aclose()
    log.clear()
    await lease.__aexit__(None, None, None)
    assert log == ["g.on_release", "b.on_release", "a.on_release"]
    assert HELD.get() == ()
