"""Adaptation in a running pool: signals in, responses applied, each one an event in the report."""

from __future__ import annotations

import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.supervisors import AdaptationConfig
from mockpool.supervisors.adaptation import AdaptationSupervisor


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
async def test_memory_growth_switches_to_lean_and_evicts_idle_lru_first() -> None:
    clock = FakeClock()
    pool = _pool(clock, min_size=1)
    rss = [100.0]
    async with pool:
        # Four idle instances, used in order: #0 least recently.
        leases = [pool.acquire("svc") for _ in range(4)]
        held = [await lease.__aenter__() for lease in leases]
        for lease in leases:
            clock.advance(1.0)
            await lease.__aexit__(None, None, None)
        supervisor = AdaptationSupervisor(pool, rss=lambda: rss[0])
        await supervisor.tick()  # baseline
        assert pool.report().events == ()
        rss[0] = 200.0  # +100 MB > 50 MB
        await supervisor.tick()
        responses = [e.response for e in pool.report().events]
        assert responses[0] == "switched to variant 'lean'"
        assert responses[1].startswith("evicted 1 idle")  # half of the 3 beyond min_size
        svc = pool.service_pools["svc"]
        kept = {entry.instance for entry in svc.core.idle}
        assert held[0] not in kept  # the least recently used went first
        assert held[3] in kept
        assert pool.stats("svc").size >= 1
        pool.check_invariants()


@pytest.mark.asyncio
async def test_saturation_with_high_concurrency_raises_max_size_up_to_the_ceiling() -> None:
    clock = FakeClock()
    pool = MockPool(
        clock=clock,
        supervise=False,
        adaptation=AdaptationConfig(concurrency=2, max_size_ceiling=6, cooldown_s=0.0),
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
