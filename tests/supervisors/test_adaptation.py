"""Adaptation in a running pool: signals in, responses applied, each one an event in the report."""

from __future__ import annotations

import asyncio

import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.supervisors import AdaptationConfig
from mockpool.supervisors.adaptation import AdaptationSupervisor

from .conftest import settle


class Double:
    made_by = "default"

    def __init__(self, made_by: str = "default") -> None:
        self.made_by = made_by


def _stable() -> Double:
    return Double("stable")


def _lean() -> Double:
    return Double("lean")


class Boom(Exception):
    pass


def _pool(clock: FakeClock, **spec: object) -> MockPool:
    pool = MockPool(clock=clock, supervise=False, adaptation=AdaptationConfig(min_samples=4, cooldown_s=10.0))
    pool.register(
        ServiceSpec(
            name="svc",
            factory=Double,
            health_check=lambda d: True,
            variants={"stable": _stable, "lean": _lean},
            **spec,  # type: ignore[arg-type]
        )
    )
    return pool


@pytest.mark.asyncio
async def test_errors_switch_to_the_stable_variant_and_turn_on_check_on_acquire() -> None:
    clock = FakeClock()
    pool = _pool(clock)
    async with pool:
        for _ in range(4):
            with pytest.raises(Boom):
                async with pool.acquire("svc"):
                    raise Boom  # 100 % of the leases fail
        supervisor = AdaptationSupervisor(pool, rss=lambda: 100.0)
        await supervisor.tick()
        svc = pool.service_pools["svc"]
        assert svc.variant == "stable"
        assert svc.check_on_acquire
        events = pool.report().events
        assert [(e.service, e.response) for e in events] == [
            ("svc", "switched to variant 'stable'"),
            ("svc", "turned on check-on-acquire"),
        ]
        assert all(e.trigger.startswith("error rate 100.0%") for e in events)
        # New instances come from the variant.
        async with pool.acquire("svc") as a, pool.acquire("svc") as b:
            assert "stable" in (a.made_by, b.made_by)
        # Within the cooldown the same responses are not repeated.
        await supervisor.tick()
        assert len(pool.report().events) == 2
        text = str(pool.report())
        assert "adaptations:" in text
        assert "switched to variant 'stable'" in text


@pytest.mark.asyncio
async def test_memory_growth_switches_to_lean_and_stops_creating_without_evicting() -> None:
    """Under memory pressure the pool prefers not creating to evicting: what is idle stays (a
    test may need it next), and only a waiter nothing else can serve gets a creation."""
    clock = FakeClock()
    pool = _pool(clock, min_size=1)
    rss = [100.0]
    async with pool:
        leases = [pool.acquire("svc") for _ in range(4)]
        for lease in leases:
            await lease.__aenter__()
        for lease in leases:
            await lease.__aexit__(None, None, None)
        supervisor = AdaptationSupervisor(pool, rss=lambda: rss[0])
        await supervisor.tick()  # baseline
        assert pool.report().events == ()
        rss[0] = 200.0  # +100 MB > 50 MB
        await supervisor.tick()
        assert [e.response for e in pool.report().events] == [
            "switched to variant 'lean'",
            "creating only when nothing else can serve",
        ]
        svc = pool.service_pools["svc"]
        assert svc.memory_tight
        assert pool.stats("svc").size == 4 and pool.stats("svc").destroyed == 0  # nothing evicted
        # Five at once on four instances: the fifth waits for a release instead of a creation.
        leases = [pool.acquire("svc", timeout=None) for _ in range(5)]
        for lease in leases[:4]:
            await lease.__aenter__()
        fifth = asyncio.ensure_future(leases[4].__aenter__())
        await settle()
        assert not fifth.done() and pool.stats("svc").creating == 0
        await leases[0].__aexit__(None, None, None)
        await fifth
        for lease in leases[1:]:
            await lease.__aexit__(None, None, None)
        assert pool.stats("svc").created == 4
        pool.check_invariants()


@pytest.mark.asyncio
async def test_saturation_keeps_the_users_max_size_and_says_so() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False, adaptation=AdaptationConfig(concurrency=2, cooldown_s=10.0))
    pool.register(ServiceSpec(name="svc", factory=Double, max_size=3))
    async with pool:
        leases = [pool.acquire("svc") for _ in range(3)]
        for lease in leases:
            await lease.__aenter__()
        supervisor = AdaptationSupervisor(pool, rss=lambda: 0.0)
        await supervisor.tick()
        assert pool.stats("svc").max_size == 3
        (event,) = pool.report().events
        assert event.trigger == "concurrency 3 > 2 at max_size=3"
        assert event.response.startswith("kept max_size=3, the user's bound")
        for lease in leases:
            await lease.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_saturation_raises_max_size_up_to_the_ceiling_when_asked_to() -> None:
    clock = FakeClock()
    pool = MockPool(
        clock=clock,
        supervise=False,
        adaptation=AdaptationConfig(
            concurrency=2, max_size_ceiling=6, cooldown_s=0.0, grow_beyond_max_size=True
        ),
    )
    pool.register(ServiceSpec(name="svc", factory=Double, max_size=3))
    async with pool:
        leases = [pool.acquire("svc") for _ in range(3)]
        for lease in leases:
            await lease.__aenter__()
        supervisor = AdaptationSupervisor(pool, rss=lambda: 0.0)
        await supervisor.tick()
        assert pool.stats("svc").max_size == 6
        await supervisor.tick()
        assert pool.stats("svc").max_size == 6  # the ceiling holds
        assert [e.response for e in pool.report().events] == ["raised max_size 3 -> 6"]
        for lease in leases:
            await lease.__aexit__(None, None, None)
