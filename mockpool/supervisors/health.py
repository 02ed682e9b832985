"""Health supervisor: checks idle instances, resumes orphans, replaces degraded doubles.

Every ``spec.health_interval`` seconds (jittered by +-10 % so services and loops drift apart),
each idle instance of a service with a ``health_check`` is taken out of the idle stack, checked
(bounded by ``spec.health_timeout``) and put back, or sent to recovery when the check returns
False, raises or times out. An idle group's members at every depth are checked with it, by
their own checks: they sit in the group, out of their own services' idle stacks. The same tick resumes recoveries orphaned by a dead event loop and
tries to swap one degraded (tier 3/4) idle instance per service for a factory-made one, so a
service heals by itself once its factory works again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ..core import Entry, EntryState
from ..hooks import call_hook, given, must_propagate
from ..recovery import swap_instance
from ._base import run_supervised

if TYPE_CHECKING:
    from ..service import ServicePool
    from .view import PoolView

__all__ = (
    "HealthInput",
    "HealthPlan",
    "HealthSupervisor",
    "IdleView",
    "check_entry",
    "health_steps",
    "jittered",
    "plan_health",
    "replace_degraded",
    "run",
)

logger = logging.getLogger("mockpool.health")

#: Relative jitter of the check interval.
JITTER = 0.1
#: The supervisor wakes at least this often to resume orphans and notice new services.
MAX_TICK_S = 1.0


@dataclass(frozen=True, slots=True)
class IdleView:
    """What the planner needs to know of one idle entry."""

    id: int
    idle_s: float
    degraded: bool


@dataclass(frozen=True, slots=True)
class HealthInput:
    """One service at one tick."""

    due: bool
    has_check: bool
    idle: tuple[IdleView, ...]


@dataclass(frozen=True, slots=True)
class HealthPlan:
    """Entries to check (longest idle first) and the degraded entry to try to replace."""

    check: tuple[int, ...] = ()
    replace: int | None = None


def plan_health(inp: HealthInput) -> HealthPlan:
    """Decide which idle entries to check and which degraded one to replace this round."""
    if not inp.due or not inp.idle:
        return HealthPlan()
    # Degraded entries are replaced rather than checked: a stub passes any check it is given.
    healthy = sorted((e for e in inp.idle if not e.degraded), key=lambda e: -e.idle_s)
    check = tuple(e.id for e in healthy) if inp.has_check else ()
    degraded = [e for e in inp.idle if e.degraded]
    # One replacement per round: a factory that still fails is not hammered.
    replace = max(degraded, key=lambda e: e.idle_s).id if degraded else None
    return HealthPlan(check=check, replace=replace)


def jittered(interval: float, u: float, jitter: float = JITTER) -> float:
    """``interval`` moved by up to +-``jitter`` of itself; ``u`` is uniform in [0, 1)."""
    return interval * (1.0 + jitter * (2.0 * u - 1.0))


def health_steps(svc: ServicePool) -> tuple[tuple[tuple[str, ...], ServicePool], ...]:
    """The checks an idle entry of ``svc`` gets: a group's members' at every depth (an idle
    group holds them, out of their own services' idle stacks), innermost first, then its own;
    each with the path to its entry."""
    return tuple((path, owner) for path, owner in (*svc.member_paths, ((), svc)) if owner.spec.health_check)


async def check_entry(svc: ServicePool, entry: Entry) -> bool:
    """Health-check one idle entry (a group's: its members' too); False (and recovery) when
    unhealthy. Skips non-idle ones. A member's failed check is the group's: the group goes to
    recovery, which checks and mends its members."""
    core = svc.core
    steps = health_steps(svc)
    if not steps or not core.take_for_check(entry):
        return True
    failure: str | None = None
    try:
        for path, owner in steps:
            svc.metrics.health_checks += 1
            failure = await _check(owner, entry.member_at(path).instance)
            if failure is not None:
                if path:
                    failure = f"member {owner.name!r}'s {failure}"
                break
    except asyncio.CancelledError:
        # The loop or the pool is ending mid-check: the instance's health is unknown, so it
        # goes to recovery in the next runtime; the cancellation propagates.
        if entry.state is EntryState.CHECKING:
            core.begin_recovery(entry)
            svc.orphans.append(entry)
        raise
    if entry.state is not EntryState.CHECKING:
        return failure is None  # removed meanwhile (the pool closed)
    if failure is None:
        _put_back(svc, entry)
        return True
    svc.metrics.health_failures += 1
    logger.warning("service %r: entry #%d unhealthy (%s); recovering", svc.name, entry.id, failure)
    svc.to_recovery(entry, failure)
    return False


async def _check(owner: ServicePool, instance: Any) -> str | None:
    """Run ``owner``'s health check on ``instance``: None if healthy, else what failed."""
    spec = owner.spec
    assert spec.health_check is not None
    try:
        ok = await call_hook(
            spec.health_check, instance, timeout=spec.health_timeout, service=owner.name, name="health_check"
        )
    except TimeoutError:
        return f"health check timed out after {spec.health_timeout:g} s"
    except BaseException as exc:  # pytest.fail in the hook too: the instance must not stay out
        if must_propagate(exc):
            raise
        return f"health check raised {exc!r}"
    return "health check returned False" if ok is False else None


async def replace_degraded(svc: ServicePool, entry: Entry) -> bool:
    """Swap a degraded idle entry's instance for a factory-made one; True if it worked."""
    core = svc.core
    if not entry.degraded or not core.take_for_check(entry):
        return False
    try:
        args = [m.handle for m in entry.members.values()] if entry.members else []
        fresh = await svc._build(svc.factory, args, tier=None)
    except asyncio.CancelledError:
        if entry.state is EntryState.CHECKING:
            core.begin_recovery(entry)
            svc.orphans.append(entry)
        raise
    except BaseException as exc:  # pytest.fail in the factory too (see must_propagate)
        if must_propagate(exc):
            raise
        logger.debug("service %r: factory still failing (%r); keeping degraded #%d", svc.name, exc, entry.id)
        if entry.state is EntryState.CHECKING:
            _put_back(svc, entry)
        return False
    if entry.state is not EntryState.CHECKING:
        await svc._destroy_instance(fresh.instance)
        return False
    old = entry.instance
    swap_instance(entry, fresh)
    _put_back(svc, entry)
    logger.info("service %r: replaced degraded entry #%d with a factory-made instance", svc.name, entry.id)
    await svc._destroy_instance(old)
    return True


def _put_back(svc: ServicePool, entry: Entry) -> None:
    core = svc.core
    if core.closed:  # unregistered meanwhile: nobody will lease it again
        core.remove(entry)
        svc.destroy_soon(entry)
    else:
        core.finish_check(entry)


class HealthSupervisor:
    """Checks each service's idle instances every ``spec.health_interval`` (jittered)."""

    def __init__(self, pool: PoolView, *, rng: random.Random | None = None) -> None:
        self.pool = pool
        # Seeded from the pool: a run (and a hang, if there is one) reproduces.
        self.rng = rng if rng is not None else random.Random(pool.seed)
        self.due: dict[str, float] = {}

    async def tick(self) -> float:
        pool = self.pool
        now = pool.clock.now()
        if pool.closed:
            return MAX_TICK_S
        checks: list[tuple[ServicePool, Entry]] = []
        replacements: list[tuple[ServicePool, Entry]] = []
        next_tick = MAX_TICK_S
        for name, svc in list(pool.service_pools.items()):
            if svc.orphans:
                svc.resume_orphans()
            core = svc.core
            due_at = self.due.get(name)
            if due_at is None:
                # First sight of a service: its instances were just made; check after a period.
                due_at = self.due[name] = now + jittered(svc.spec.health_interval, self.rng.random())
            due = now >= due_at
            if due:
                due_at = self.due[name] = now + jittered(svc.spec.health_interval, self.rng.random())
            next_tick = min(next_tick, due_at - now)
            if not due or core.closed:
                continue
            by_id = {e.id: e for e in core.idle}
            plan = plan_health(
                HealthInput(
                    due=True,
                    has_check=bool(health_steps(svc)),
                    idle=tuple(IdleView(e.id, now - e.last_used, e.degraded) for e in core.idle),
                )
            )
            checks.extend((svc, by_id[i]) for i in plan.check)
            if plan.replace is not None:
                replacements.append((svc, by_id[plan.replace]))
        for gone in set(self.due) - set(pool.service_pools):
            del self.due[gone]
        if checks or replacements:
            coros: list[Coroutine[Any, Any, object]] = [check_entry(svc, entry) for svc, entry in checks]
            coros += [replace_degraded(svc, entry) for svc, entry in replacements]
            try:
                # Checks run concurrently: a hanging check costs one health_timeout, not one each.
                async with anyio.create_task_group() as tg:
                    for coro in coros:
                        tg.start_soon(given, coro, name=f"mockpool[{pool.name}] health check")
            finally:
                # A loop closing mid-round cancels the tasks before their first step, and
                # anyio 4.16 then never starts the coroutine it was given: close those, or they
                # warn "never awaited" (fatal under filterwarnings = error).
                for coro in coros:
                    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                        coro.close()
        return max(next_tick - (pool.clock.now() - now), 0.0)


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The health supervisor: runs until cancelled."""
    await run_supervised(pool, "health", HealthSupervisor, task_status=task_status)
