"""Health: periodic checks of idle instances, and the check on acquire after a long idle."""

from __future__ import annotations

import asyncio
import gc

import anyio
import pytest

from mockpool import MockPool, ServiceConfigError, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.supervisors.health import HealthSupervisor


class Double:
    def __init__(self) -> None:
        self.broken = False
        self.checks = 0


def _health(d: Double) -> bool:
    d.checks += 1
    return not d.broken


async def _settle() -> None:
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()


@pytest.mark.asyncio
async def test_periodic_check_sends_an_unhealthy_idle_instance_to_recovery() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(
        ServiceSpec(name="svc", factory=Double, health_check=_health, min_size=1, health_interval=2.0)
    )
    async with pool:
        async with pool.acquire("svc") as d:
            d.broken = True  # breaks in a way reset does not see
        clock.advance(2.5)  # past the interval, jitter included (+-10 %)
        await _settle()
        stats = pool.stats("svc")
        assert stats.health_checks >= 1
        assert stats.health_failures == 1
        assert stats.recoveries["factory"] == 1  # no snapshot: rebuilt from the factory
        async with pool.acquire("svc") as again:
            assert again is not d
            assert not again.broken
        pool.check_invariants()


@pytest.mark.parametrize("error", [pytest.fail.Exception, pytest.skip.Exception])
@pytest.mark.asyncio
async def test_a_periodic_check_raising_pytest_fail_is_a_failed_check(error: type[BaseException]) -> None:
    """``pytest.fail`` (or ``skip``) called in the hook is no Exception: the checked instance
    stayed "checking" for good, out of the pool (at ``max_size=1``, nothing was served again)."""
    clock = FakeClock()

    def health(d: Double) -> bool:
        d.checks += 1
        if d.broken:
            raise error("raised by the hook")
        return True

    pool = MockPool(clock=clock)
    pool.register(
        ServiceSpec(
            name="svc", factory=Double, health_check=health, min_size=1, max_size=1, health_interval=2.0
        )
    )
    async with pool:
        async with pool.acquire("svc") as d:
            d.broken = True  # breaks in a way reset does not see
        clock.advance(2.5)  # past the interval, jitter included (+-10 %)
        await _settle()
        stats = pool.stats("svc")
        assert (stats.health_failures, stats.recoveries["factory"]) == (1, 1)
        async with pool.acquire("svc", timeout=5) as again:  # was AcquireTimeout: checking=1
            assert again is not d
        pool.check_invariants()


@pytest.mark.asyncio
async def test_healthy_idle_instances_are_checked_and_kept() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(
        ServiceSpec(name="svc", factory=Double, health_check=_health, min_size=2, health_interval=1.0)
    )
    async with pool:
        await _settle()
        for _ in range(3):
            clock.advance(1.2)
            await _settle()
        stats = pool.stats("svc")
        assert stats.health_checks >= 4  # two instances, several rounds
        assert stats.health_failures == 0
        assert stats.created == 2
        assert stats.idle == 2


@pytest.mark.asyncio
async def test_check_on_acquire_after_a_long_idle_replaces_a_broken_instance() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False)
    pool.register(ServiceSpec(name="svc", factory=Double, health_check=_health, check_idle_after=5.0))
    async with pool:
        async with pool.acquire("svc") as first:
            first.broken = True
        async with pool.acquire("svc") as same:  # idle 0 s: no check, the same instance
            assert same is first
            assert first.checks == 0
        clock.advance(6.0)
        async with pool.acquire("svc") as d:
            assert d is not first  # checked, found broken, recovered; the lease got another
            assert not d.broken
        assert first.checks == 1
        stats = pool.stats("svc")
        assert stats.health_failures == 1
        pool.check_invariants()


def test_check_idle_after_is_validated() -> None:
    with pytest.raises(ServiceConfigError, match="check_idle_after"):
        ServiceSpec(name="svc", factory=Double, check_idle_after=-1.0)


def test_checks_a_closing_loop_never_started_are_closed_unrun() -> None:
    """``asyncio.run`` ends right after a health round spawned its checks: the checks are
    cancelled before their first step. Their coroutines must be closed, not left to warn
    "never awaited" (fatal under ``filterwarnings = error``), and the entries stay usable."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=Double, health_check=_health, min_size=2, max_size=2))
    supervisor = HealthSupervisor(pool)

    async def round_then_leave() -> None:
        await pool.start()
        supervisor.due["svc"] = pool.clock.now()  # due now
        # The tick's first step comes in the loop's last iteration, beside this coroutine's
        # end: it spawns the checks, and the loop stops before they take a step.
        asyncio.get_running_loop().create_task(supervisor.tick())

    asyncio.run(round_then_leave())
    gc.collect()  # an unrun coroutine would warn here
    assert pool.stats("svc").idle == 2  # nothing was taken for a check that never ran
    assert [e.instance.checks for e in pool.service_pools["svc"].core.entries] == [0, 0]
    pool.close()


class Session:
    def __init__(self, member: Double) -> None:
        self.member = member


@pytest.mark.asyncio
async def test_a_group_lease_runs_its_members_check_on_acquire() -> None:
    """A member that fails its check on acquire inside an idle group is never handed out: the
    group goes to recovery as a plain instance that fails its check does, its recovery
    rebuilds the member, and the lease gets the recovered group."""
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False)
    pool.register(ServiceSpec(name="member", factory=Double, health_check=_health, check_idle_after=5.0))
    pool.register(ServiceSpec(name="group", factory=Session, depends_on=("member",)))
    async with pool:
        async with pool.acquire("group") as session:
            broken = session.member
            broken.broken = True  # breaks in a way no reset sees
        clock.advance(6.0)
        async with pool.acquire("group") as again:
            assert again.member is not broken
            assert not again.member.broken
        assert broken.checks >= 1
        member, group = pool.stats("member"), pool.stats("group")
        # One trigger, one recovery each: the group's check on acquire (its member's health)
        # failed, and its recovery's check of the member, which rebuilt the member in place.
        assert (group.health_failures, group.recoveries.total()) == (1, 1)
        assert (member.health_failures, member.recoveries["factory"]) == (1, 1)
        assert (group.acquisitions, group.served) == (2, 2)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_periodic_check_of_an_idle_group_checks_its_members() -> None:
    """An idle group holds its member's instance, out of the member's idle stack: the member's
    periodic check never saw it, and a broken member waited for the next lease. The group's
    tick checks its members by their own checks; a failure sends the group to recovery."""
    clock = FakeClock()
    pool = MockPool(clock=clock)
    pool.register(ServiceSpec(name="member", factory=Double, health_check=_health))
    pool.register(ServiceSpec(name="group", factory=Session, depends_on=("member",), health_interval=2.0))
    async with pool:
        async with pool.acquire("group") as session:
            broken = session.member
            broken.broken = True  # breaks in a way no reset sees
        clock.advance(2.5)  # past the group's interval, jitter included (+-10 %)
        await _settle()
        assert broken.checks == 2  # the group's tick, then its recovery's check of the member
        group, member = pool.stats("group"), pool.stats("member")
        assert (group.health_checks, group.health_failures, group.recoveries.total()) == (1, 1, 1)
        assert (member.health_failures, member.recoveries["factory"]) == (1, 1)
        async with pool.acquire("group") as again:
            assert again.member is not broken and not again.member.broken
        pool.check_invariants()


class App:
    def __init__(self, session: Session) -> None:
        self.session = session


@pytest.mark.asyncio
async def test_a_group_of_groups_lease_runs_its_innermost_members_check_on_acquire() -> None:
    """``member`` is a member of ``group``, itself a member of ``app``: a broken ``member``
    inside an idle ``app`` fails its check on acquire, and ``app``'s recovery reaches it,
    rebuilds it in place, then ``group`` over it, then ``app``."""
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False)
    pool.register(ServiceSpec(name="member", factory=Double, health_check=_health, check_idle_after=5.0))
    pool.register(ServiceSpec(name="group", factory=Session, depends_on=("member",)))
    pool.register(ServiceSpec(name="app", factory=App, depends_on=("group",)))
    assert pool.service_pools["app"].acquire_check
    async with pool:
        async with pool.acquire("app") as app:
            broken = app.session.member
            broken.broken = True  # breaks in a way no reset sees
        clock.advance(6.0)
        async with pool.acquire("app") as again:
            assert again.session.member is not broken
            assert not again.session.member.broken
        member, group, outer = pool.stats("member"), pool.stats("group"), pool.stats("app")
        # app's check on acquire (of member) failed; its recovery's check of member failed
        # too and rebuilt it, and each group over it.
        assert (outer.health_failures, member.health_failures) == (1, 1)
        assert [s.recoveries["factory"] for s in (member, group, outer)] == [1, 1, 1]
        assert (outer.acquisitions, outer.served) == (2, 2)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_check_on_acquire_turned_on_for_a_member_applies_to_its_groups() -> None:
    """The adaptation supervisor turns check-on-acquire on at run time: a group built on the
    member checks it from then on, and stops when it is turned off."""
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False)
    pool.register(ServiceSpec(name="member", factory=Double, health_check=_health))
    pool.register(ServiceSpec(name="group", factory=Session, depends_on=("member",)))
    async with pool:
        async with pool.acquire("group") as session:
            session.member.broken = True
        member = pool.service_pools["member"]
        member.check_on_acquire = True
        clock.advance(6.0)
        async with pool.acquire("group") as again:
            assert not again.member.broken
        assert pool.stats("group").health_failures == 1
        member.check_on_acquire = False
        assert not pool.service_pools["group"].acquire_check
        async with pool.acquire("group") as session:
            session.member.broken = True
        clock.advance(6.0)
        async with pool.acquire("group") as unchecked:
            assert unchecked.member.broken  # off again: handed out unchecked, as before
