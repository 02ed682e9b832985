"""The recovery ladder under faults: a group's failing member costs that member, not the group;
a service whose factory never worked can still be stubbed; a stub imitates what tests receive;
a degraded (minimal) instance is restored from its own snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import looptime
import pytest

from mockpool import AcquireTimeout, MockPool, ServiceSpec

from .conftest import LoopClock, settle


class Store:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def get(self, key: str) -> int | None:
        return self.data.get(key)


class Session:
    def __init__(self, store: Store, tag: str) -> None:
        self.store = store
        self.tag = tag


def _snapshot(s: Store) -> dict[str, int]:
    return dict(s.data)


def _restore(s: Store, state: dict[str, int]) -> None:
    s.data = dict(state)


@pytest.mark.asyncio
async def test_a_members_failing_reset_costs_a_reset_of_that_member_not_a_rebuild() -> None:
    fail_next = [False]

    def reset_store(s: Store) -> None:  # fails once, when asked
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("store reset failed")
        s.data.clear()

    sessions: list[Session] = []

    def make_session(store: Store, tag: str) -> Session:
        sessions.append(Session(store, tag))
        return sessions[-1]

    pool = MockPool(supervise=False)
    pool.register(
        ServiceSpec(name="store", factory=Store, reset=reset_store, snapshot=_snapshot, restore=_restore)
    )
    pool.register(ServiceSpec(name="tag", factory=lambda: "t"))
    pool.register(ServiceSpec(name="session", factory=make_session, depends_on=("store", "tag")))
    async with pool:
        async with pool.acquire("session") as session:
            session.store.data["k"] = 1
            fail_next[0] = True
        async with pool.acquire("session") as again:
            # The member's second reset worked: the same store, clean; only the cheap group
            # object (which has no snapshot) was rebuilt over it.
            assert again.store is session.store and again.store.data == {}
        assert pool.stats("store").recoveries.total() == 0
        assert pool.stats("session").recoveries["factory"] == 1
        assert len(sessions) == 2
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_member_that_must_be_rebuilt_rebuilds_the_group_over_it() -> None:
    def reset_store(s: Store) -> None:
        raise RuntimeError("store reset always fails")

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="store", factory=Store, reset=reset_store))
    pool.register(ServiceSpec(name="tag", factory=lambda: "t"))
    pool.register(ServiceSpec(name="session", factory=Session, depends_on=("store", "tag")))
    async with pool:
        async with pool.acquire("session") as first:
            first.store.data["k"] = 1
        async with pool.acquire("session") as second:
            assert second is not first and second.store is not first.store
            assert second.store.data == {}
        await settle()  # the second release's recovery runs in the background
        # Each release failed the member's reset: the member was rebuilt, and the group over it.
        store, session = pool.stats("store"), pool.stats("session")
        assert store.recoveries["factory"] == 2 and session.recoveries["factory"] == 2
        assert (store.size, store.created - store.destroyed) == (1, 1)
        assert (session.size, session.created - session.destroyed) == (1, 1)
        pool.check_invariants()


class App:
    def __init__(self, session: Session) -> None:
        self.session = session


def _app_over_a_session(reset_store: Any, **store: Any) -> MockPool:
    """``store``, the group ``session`` over it (and ``tag``), and ``app`` over ``session``."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="store", factory=Store, reset=reset_store, **store))
    pool.register(ServiceSpec(name="tag", factory=lambda: "t"))
    pool.register(ServiceSpec(name="session", factory=Session, depends_on=("store", "tag")))
    pool.register(ServiceSpec(name="app", factory=App, depends_on=("session",)))
    return pool


@pytest.mark.asyncio
async def test_an_innermost_members_failing_reset_is_mended_in_place_by_its_snapshot() -> None:
    """``store`` is a member of ``session``, itself a member of ``app``: its reset fails at
    the release of ``app`` and again in ``app``'s recovery, which reaches it and restores its
    snapshot; ``session`` keeps its instance (it still holds the same store)."""
    failures = [0]

    def reset_store(s: Store) -> None:  # fails while failures are asked for
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("store reset failed")
        s.data.clear()

    pool = _app_over_a_session(reset_store, snapshot=_snapshot, restore=_restore)
    async with pool:
        async with pool.acquire("app") as app:
            app.session.store.data["k"] = 1
            failures[0] = 2
        async with pool.acquire("app") as again:
            assert again.session is app.session and again.session.store is app.session.store
            assert again.session.store.data == {}
        # The release's failure is app's; the recovery's, which sent store to its ladder, store's.
        assert (pool.stats("app").reset_failures, pool.stats("store").reset_failures) == (1, 1)
        assert pool.stats("store").recoveries["snapshot"] == 1
        assert pool.stats("session").recoveries.total() == 0
        # app has no snapshot: rebuilt over the same members.
        assert pool.stats("app").recoveries["factory"] == 1
        pool.check_invariants()


@pytest.mark.asyncio
async def test_an_innermost_member_that_must_be_rebuilt_rebuilds_each_group_over_it() -> None:
    """``store``'s reset always fails: ``app``'s recovery rebuilds it, then ``session`` over
    the new store (its instance, and its snapshot, held the old one), then ``app``."""

    def reset_store(s: Store) -> None:
        raise RuntimeError("store reset always fails")

    pool = _app_over_a_session(reset_store)
    async with pool:
        async with pool.acquire("app") as first:
            first.session.store.data["k"] = 1
        async with pool.acquire("app") as second:
            assert second is not first and second.session is not first.session
            assert second.session.store is not first.session.store
            assert second.session.store.data == {}
            assert second.session.tag == "t"
        await settle()  # the second release's recovery runs in the background
        for name in ("store", "session", "app"):
            stats = pool.stats(name)
            assert stats.recoveries["factory"] == 2, name
            assert (stats.size, stats.created - stats.destroyed) == (1, 1), name
        assert pool.stats("tag").recoveries.total() == 0  # reset (it has no hook) and kept
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_service_whose_factory_never_worked_is_stubbed_from_its_declared_type() -> None:
    def make_store() -> Store:
        raise ConnectionError("never works")

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="store", factory=make_store, allow_degraded=True))
    async with pool:
        lease = pool.acquire("store")
        async with lease as store:
            assert lease.tier == "stub" and lease.degraded
            store.get("k")  # the stub keeps Store's interface and signatures
            with pytest.raises(TypeError):
                store.get()


@pytest.mark.asyncio
async def test_a_stub_of_a_bound_service_imitates_what_tests_receive() -> None:
    class Handle:
        def ping(self) -> str:
            return "pong"

    class Holder:
        def __init__(self) -> None:
            self.handle = Handle()

    calls = [0]

    def factory() -> Holder:
        calls[0] += 1
        if calls[0] > 1:
            raise ConnectionError("the factory broke after the first instance")
        return Holder()

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=factory, bind=lambda h: h.handle, allow_degraded=True))
    async with pool:
        lease = pool.acquire("svc")
        async with lease as handle:
            assert handle.ping() == "pong"
            lease.discard()
        # No snapshot, the factory fails: tier 4 stubs the Handle tests received, not the Holder.
        stubbed = pool.acquire("svc")
        async with stubbed as stub:
            assert stubbed.tier == "stub"
            assert hasattr(stub, "ping") and not hasattr(stub, "handle")


@pytest.mark.asyncio
async def test_a_degraded_instance_is_restored_from_its_own_snapshot() -> None:
    def broken() -> Store:
        raise ConnectionError("the real factory is down")

    pool = MockPool(supervise=False)
    pool.register(
        ServiceSpec(
            name="store",
            factory=broken,
            minimal=Store,
            snapshot=_snapshot,
            restore=_restore,
            allow_degraded=True,
        )
    )
    async with pool:
        lease: Any = pool.acquire("store")
        async with lease as store:
            assert lease.tier == "minimal"
            store.data["k"] = 1
            lease.discard()
        async with pool.acquire("store") as again:
            assert again is store and again.data == {}
        stats = pool.stats("store")
        assert stats.recoveries["snapshot"] == 1  # not a rebuild from the broken factory


def test_checks_on_acquire_that_keep_failing_end_at_the_acquire_timeout() -> None:
    """A restored instance keeps its idle time, so it is checked again on the next try: with a
    health check that always hangs, each retry used to get a fresh timeout, for ever."""

    async def hangs(store: Store) -> bool:
        await asyncio.Event().wait()
        return True

    async def main() -> None:
        pool = MockPool(supervise=False, clock=LoopClock())
        pool.register(
            ServiceSpec(
                name="store",
                factory=Store,
                snapshot=_snapshot,
                restore=_restore,
                health_check=hangs,
                health_timeout=1.0,
                check_idle_after=0.01,
            )
        )
        async with pool:
            async with pool.acquire("store"):
                pass
            await asyncio.sleep(1.0)  # idle long enough to be checked
            started = asyncio.get_running_loop().time()
            with anyio.fail_after(60), pytest.raises(AcquireTimeout) as caught:  # 60 s: a hang
                async with pool.acquire("store", timeout=3.0):
                    pass  # pragma: no cover
            assert asyncio.get_running_loop().time() - started <= 4.0  # the timeout plus one check
        message = str(caught.value)
        assert message.startswith("no 'store' instance became available within 3 s")
        assert "the health_check hook did not finish within 1 s" in message
        assert pool.stats("store").timeouts == 1

    loop = looptime.new_event_loop(start=0.0)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class _Alive:
    """Counts the instances alive as the hooks see them (made by the factory, not yet
    destroyed), and the most at once: the pool's size seen from outside."""

    def __init__(self) -> None:
        self.alive = 0
        self.peak = 0
        self.fail = False

    def make(self) -> dict[str, int]:
        if self.fail:
            raise OSError("factory down")
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        return {}

    def make_group(self, member: dict[str, int]) -> list[dict[str, int]]:
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        return [member]

    def destroy(self, instance: object) -> None:
        self.alive -= 1


@pytest.mark.asyncio
async def test_a_rebuild_never_has_more_instances_alive_than_max_size() -> None:
    """Both instances of a service at its ``max_size`` (2) are discarded while tests wait:
    each recovery made its new instance from the factory and destroyed the broken one only
    after, so three or four were alive at once, past the user's hard bound. The broken one
    is destroyed first (nothing will use it again)."""
    alive = _Alive()
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=alive.make, destroy=alive.destroy, max_size=2))

    async def discard() -> None:
        lease = pool.acquire("svc")
        async with lease:
            await asyncio.sleep(0.001)
            lease.discard()

    async def use() -> None:
        async with pool.acquire("svc"):
            await asyncio.sleep(0.001)

    async with pool:
        async with pool.acquire("svc"), pool.acquire("svc"):
            pass
        assert pool.stats("svc").idle == 2
        await asyncio.gather(discard(), discard(), *(use() for _ in range(6)))
        assert pool.stats("svc").recoveries["factory"] == 2
        pool.check_invariants()
    assert alive.peak == 2 and alive.alive == 0


@pytest.mark.asyncio
async def test_a_member_rebuilt_in_place_never_passes_its_max_size() -> None:
    """A group's member whose reset fails is rebuilt in place, inside the group's recovery:
    the broken member instance goes before the new one is made."""
    member = _Alive()
    pool = MockPool(supervise=False)
    broken = [0]

    def reset(instance: dict[str, int]) -> None:
        if broken[0]:
            broken[0] -= 1
            raise RuntimeError("member reset failed")

    pool.register(ServiceSpec(name="m", factory=member.make, destroy=member.destroy, reset=reset, max_size=1))
    pool.register(ServiceSpec(name="g", factory=lambda m: [m], depends_on=("m",)))
    async with pool:
        async with pool.acquire("g"):
            broken[0] = 2  # at the release, and again in the group's recovery
        async with pool.acquire("g"):
            pass
        assert pool.stats("m").recoveries["factory"] == 1
        pool.check_invariants()
    assert member.peak == 1 and member.alive == 0


@pytest.mark.asyncio
async def test_a_recovery_that_fails_every_tier_destroys_the_broken_instance_once() -> None:
    """Destroyed before the rebuild, the broken instance is not destroyed again when every tier
    fails, nor by a close: each instance the factory made is destroyed exactly once."""
    alive = _Alive()
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=alive.make, destroy=alive.destroy))
    async with pool:
        lease = pool.acquire("svc")
        async with lease:
            alive.fail = True
            lease.discard()
        await settle()
        stats = pool.stats("svc")
        assert (stats.size, stats.recovery_failures, stats.created, stats.destroyed) == (0, 1, 1, 1)
        pool.check_invariants()
    assert alive.alive == 0
