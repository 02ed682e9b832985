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
