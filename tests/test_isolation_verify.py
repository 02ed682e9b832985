"""Isolation-verify mode: a reset that leaves state behind is caught, counted, reported by
service, and the instance goes to recovery instead of idle."""

from __future__ import annotations

import pytest

from mockpool import MockPool, ServiceSpec


class Store:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.audit: list[str] = []  # state the sloppy reset forgets


def _restore(s: Store, state: tuple[dict[str, int], list[str]]) -> None:
    s.data, s.audit = dict(state[0]), list(state[1])


def _spec(reset: object) -> ServiceSpec:
    return ServiceSpec(
        name="store",
        factory=Store,
        reset=reset,  # type: ignore[arg-type]
        snapshot=lambda s: (dict(s.data), list(s.audit)),
        restore=_restore,
    )


def _sloppy(s: Store) -> None:
    s.data.clear()


def _thorough(s: Store) -> None:
    s.data.clear()
    s.audit.clear()


@pytest.mark.asyncio
async def test_a_reset_that_misses_state_is_caught_and_the_instance_recovered() -> None:
    pool = MockPool(isolation_verify=True)
    pool.register(_spec(_sloppy))
    async with pool:
        async with pool.acquire("store") as s:
            s.data["k"] = 1
            s.audit.append("wrote k")
        stats = pool.stats("store")
        assert stats.isolation_failures == 1
        assert stats.recoveries["snapshot"] == 1  # restored to pristine, not put back dirty
        async with pool.acquire("store") as again:
            assert again.audit == []  # the next test never sees the leftover
        report = pool.report()
        assert report.to_dict()["isolation_failures"] == {"store": 1}
        assert "isolation failures (reset left state behind; fix the reset hook): store=1" in str(report)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_thorough_reset_passes_the_check() -> None:
    pool = MockPool(isolation_verify=True)
    pool.register(_spec(_thorough))
    async with pool:
        for _ in range(3):
            async with pool.acquire("store") as s:
                s.data["k"] = 1
                s.audit.append("wrote k")
        stats = pool.stats("store")
        assert stats.isolation_failures == 0
        assert stats.resets == 3
        assert stats.recoveries["snapshot"] == 0


@pytest.mark.asyncio
async def test_without_the_mode_the_sloppy_reset_goes_unnoticed() -> None:
    pool = MockPool()
    pool.register(_spec(_sloppy))
    async with pool:
        async with pool.acquire("store") as s:
            s.audit.append("wrote")
        async with pool.acquire("store") as again:
            assert again.audit == ["wrote"]  # what the mode exists to catch
        assert pool.stats("store").isolation_failures == 0


class Sticky:
    """A double whose reset and restore both miss ``flags``: restoring it is resetting it."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.flags: set[str] = set()


def _sticky_spec(name: str = "sticky") -> ServiceSpec:
    return ServiceSpec(
        name=name,
        factory=Sticky,
        reset=lambda s: s.data.clear(),
        snapshot=lambda s: dict(s.data),
        restore=lambda s, state: s.data.update(state),
        fingerprint=lambda s: (dict(s.data), frozenset(s.flags)),
    )


@pytest.mark.asyncio
async def test_a_restore_that_leaves_the_same_state_is_not_served_again() -> None:
    """The ladder's first step restores the snapshot; for a double whose restore is its reset
    (most built-in ones), that leaves what the reset left. Verification now checks the
    restored instance too, and a factory builds a clean one instead."""
    pool = MockPool(isolation_verify=True)
    pool.register(_sticky_spec())
    async with pool:
        async with pool.acquire("sticky") as s:
            first = s
            s.flags.add("debug")
        async with pool.acquire("sticky") as again:
            assert again.flags == set()
            assert again is not first
        stats = pool.stats("sticky")
        assert stats.isolation_failures == 1
        assert (stats.recoveries["snapshot"], stats.recoveries["factory"]) == (0, 1)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_group_member_the_reset_leaves_dirty_is_rebuilt() -> None:
    """The group's verification fails on a member; recovery resets the member again, which
    leaves it as dirty: it is now checked, restored, checked, and rebuilt."""
    pool = MockPool(isolation_verify=True)
    pool.register(_sticky_spec("member"))
    pool.register(
        ServiceSpec(name="group", factory=lambda member: {"member": member}, depends_on=("member",))
    )
    async with pool:
        async with pool.acquire("group") as g:
            g["member"].flags.add("debug")
        async with pool.acquire("group") as again:
            assert again["member"].flags == set()
        assert pool.stats("group").isolation_failures == 1
        assert pool.stats("member").recoveries["factory"] == 1
        pool.check_invariants()
