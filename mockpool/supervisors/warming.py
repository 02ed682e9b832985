"""Warming: the start-up warm, ``expect()`` hints and the usage sampler.

* **At start** (:func:`warm_targets`, :func:`warm`): per service, ``max(min_size, the size
  history says the sizing controller settled at in earlier runs)``, capped by ``max_size``; a
  group member also gets at least what the groups built on it will hold. The creations run in
  parallel, at most ``limit`` at once, members before the groups built on them (so a group
  finds its members idle). With no history, ``min_size`` only. The time it took is
  ``pool.warmup_s`` (and in the report).
* **Hints** (:func:`expect`, :func:`expected_services`): ``pool.expect(...)`` takes the order of upcoming
  work as service names or test ids; a test id stands for the services history says it used.
* **While running** (:class:`WarmingSupervisor`): once per ``pool.recorder.window_s`` it folds
  the pool's counters into this run's usage record (``pool.sample_usage()``; the hot path only
  bumps counters). It creates nothing ahead of a forecast any more: that made no measurable
  difference, and on one event loop it made instances no test needed (issue 14); creations
  are the sizing controller's (:mod:`mockpool.sizing`).
* **Afterwards** (:func:`learning_report`): predicted against actual per service.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ._base import run_supervised

if TYPE_CHECKING:
    from ..service import ServicePool
    from .view import PoolView

__all__ = (
    "WARM_LIMIT",
    "WarmingSupervisor",
    "expect",
    "expected_services",
    "learning_report",
    "leased_directly",
    "run",
    "warm",
    "warm_targets",
    "with_group_members",
)

logger = logging.getLogger("mockpool.warming")

#: Creations the start-up warm runs at once (``pool.warm(limit=...)``).
WARM_LIMIT = 16


# --------------------------------------------------------------------------- at start


def warm_targets(pool: PoolView) -> dict[str, int]:
    """Instances to pre-create per service: ``max(min_size, ceil(history.size))``, the size the
    sizing controller settled at in earlier runs (not their peak concurrency: on one loop most
    of it waited for instances it never needed), capped by ``max_size``, then raised for group
    members by :func:`with_group_members`. Without history: ``min_size``."""
    targets: dict[str, int] = {}
    history = pool.history
    for name, svc in pool.service_pools.items():
        targets[name] = min(svc.core.max_size, max(svc.core.min_size, history.settled(name)))
    return with_group_members(pool.service_pools, targets, leased_directly=leased_directly(pool))


def leased_directly(pool: PoolView) -> set[str]:
    """The services tests lease themselves, not only through groups: in this run, or in the
    runs history remembers (its ``acquisitions`` count a service's own leases only)."""
    history = pool.history.services
    return {
        name
        for name, svc in pool.service_pools.items()
        if svc.metrics.acquisitions or ((h := history.get(name)) is not None and h.acquisitions > 0)
    }


def with_group_members(
    services: Mapping[str, ServicePool],
    targets: Mapping[str, int],
    *,
    leased_directly: AbstractSet[str] = frozenset(),
) -> dict[str, int]:
    """``targets`` where each group member has at least what the groups built on it hold, and
    each group no more than its members can lend.

    A group instance holds one instance of each member for its whole life (the member counts
    as in use), so warming ``n`` groups takes ``n`` instances of each member. A member's
    target is ``max(its own, the sum of its groups' targets)`` (its recorded peak
    already counts the instances its groups held), capped by its ``max_size``. So the groups
    on a member together get no more than it can lend: its ``max_size``, less the half kept
    for its own tests when they lease it directly (``leased_directly``; see
    :func:`mockpool.sizing.members_room`). Warmed past that (a history written when the member
    had a larger ``max_size``), each group creation beyond it waited for a member and took it
    back from an idle group instance: made and destroyed before the first test.
    """
    out = {name: n for name, n in targets.items() if name in services}
    # What each service can lend to all the groups built on it, members first (registration
    # order): a group can lend no more instances than its own members let it have.
    lendable: dict[str, int] = {}
    for name, svc in services.items():
        size = min([svc.core.max_size, *(lendable[m] for m in svc.spec.depends_on if m in lendable)])
        kept = svc.core.max_size // 2 if name in leased_directly else 0
        lendable[name] = max(0, min(size, svc.core.max_size - kept))
    # Groups come after their members in registration order: walk backwards, so a group's
    # target is final (raised by the groups built on it) before it raises its own members.
    held: dict[str, int] = {}
    for name in reversed(list(services)):
        svc = services[name]
        want = max(out.get(name, 0), held.get(name, 0))
        want = min(want, svc.core.max_size)
        for member in svc.spec.depends_on:
            want = min(want, max(0, lendable.get(member, 0) - held.get(member, 0)))
        if want > 0 or name in out:
            out[name] = want
        for member in svc.spec.depends_on:
            held[member] = held.get(member, 0) + want
    return {name: out[name] for name in services if name in out}


def _depth(svc: ServicePool) -> int:
    return 1 + max((_depth(m) for m in svc.members), default=-1)


async def warm(pool: PoolView, targets: Mapping[str, int] | None = None, *, limit: int = WARM_LIMIT) -> float:
    """Create instances until each service has its target, at most ``limit`` at once, and wait.

    ``targets`` defaults to ``min_size`` per service; group members are raised to what their
    groups hold (:func:`with_group_members`). Members are warmed before the groups built on
    them, so each group takes idle members instead of queueing for them. A failed creation is
    not retried here (the service's metrics and ``last_error`` have it). Sets and returns
    ``pool.warmup_s``, in seconds on the pool's clock.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    started = pool.clock.now()
    services = pool.service_pools
    wanted = dict(targets) if targets is not None else {n: s.core.min_size for n, s in services.items()}
    wanted = with_group_members(services, wanted, leased_directly=leased_directly(pool))
    levels: dict[int, list[ServicePool]] = {}
    for name in wanted:
        svc = services[name]
        levels.setdefault(_depth(svc), []).append(svc)
    for depth in sorted(levels):
        jobs: deque[ServicePool] = deque()
        # Round robin over the level's services, so each gets going at once.
        missing = {svc: wanted[svc.name] - svc.core.size - svc.core.creating for svc in levels[depth]}
        while any(n > 0 for n in missing.values()):
            for svc, n in missing.items():
                if n > 0:
                    jobs.append(svc)
                    missing[svc] = n - 1

        async def worker(jobs: deque[ServicePool] = jobs) -> None:
            while jobs:
                svc = jobs.popleft()
                if svc.core.reserve_creation():
                    await svc._create_one()

        if jobs:
            async with anyio.create_task_group() as tg:
                for _ in range(min(limit, len(jobs))):
                    tg.start_soon(worker)
        # Creations started elsewhere (the scaling supervisor's min_size floor) were counted as
        # on their way: wait for them too, so the next level's groups find idle members and
        # warmup_s is the whole warm-up.
        for svc in levels[depth]:
            await svc.creations_settled()
    pool.warmed = {name: services[name].core.size for name in wanted if name in services}
    pool.warmup_s = pool.clock.now() - started
    return pool.warmup_s


# --------------------------------------------------------------------------- hints


def expected_services(pool: PoolView, items: Iterable[str]) -> list[str]:
    """Service names for ``items``, in order, each once: a registered service name stands for
    itself, anything else is taken as a test id and stands for the services history says
    that test used. Unknown names are dropped."""
    services = pool.service_pools
    history = pool.history
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        names = (item,) if item in services else history.services_for_test(item)
        for name in names:
            if name in services and name not in seen:
                seen.add(name)
                out.append(name)
    return out


def expect(pool: PoolView, items: Iterable[str], *, count: int = 1) -> int:
    """What ``pool.expect`` does: make sure each service in ``items`` (see
    :func:`expected_services`) has ``count`` instances, alive or on their way, and that every
    group instance to be built has its members coming too. Creations start in background,
    members first, then in the order given. Returns how many were started.

    Instances in use count. Whether one more would serve the next acquire sooner than a
    release is the sizing controller's call, from measurements; a hint that created whenever
    none was idle made the learning benchmark's second run (32 tests at once) create about 120
    instances more, for no gain in wall time. What a hint buys is the first instances of a
    service, made while the test before runs."""
    services = pool.service_pools
    wanted = expected_services(pool, items)
    to_make = {name: count - _present(services[name]) for name in wanted}
    # Groups before their members (a group is registered after them): each group instance to
    # build takes an idle instance of each member, so a member gets what its idle ones and
    # those on their way do not cover.
    member_need: dict[str, int] = {}
    for name in reversed(list(services)):
        svc = services[name]
        if name in member_need:
            to_make[name] = max(to_make.get(name, 0), member_need[name] - _available(svc))
        build = to_make.get(name, 0)
        if build > 0:
            for member in svc.spec.depends_on:
                member_need[member] = member_need.get(member, 0) + build
    order = [n for n in services if n in to_make and n not in wanted] + wanted
    started = 0
    for name in order:
        if to_make[name] > 0:
            started += services[name].grow(to_make[name])
    return started


def _present(svc: ServicePool) -> int:
    """Instances of ``svc`` alive or on their way. Not less those its waiters count on: a
    service with waiters has an instance or a creation for them already (liveness), and more
    is the controller's call; counting the waiters off made every hint for a busy group build
    one more instance of it and of its members (the learning benchmark's second run created
    60 instances more than the controller decided)."""
    core = svc.core
    return core.size + core.creating


def _available(svc: ServicePool) -> int:
    """Instances of ``svc`` idle or on their way that no waiter is counting on yet."""
    core = svc.core
    return len(core.idle) + core.creating - core.shortfall()


# --------------------------------------------------------------------------- afterwards


def learning_report(pool: PoolView) -> dict[str, dict[str, Any]]:
    """Per service, what history predicted against what this run did.

    ``predicted_size`` (the size history says the service settled at: what was warmed, up to
    ``max_size``), ``warmed`` (instances present after the start-up warm), ``actual_size``
    (this run's most instances alive at once), ``predicted_peak`` (history's decayed peak
    concurrency), ``actual_peak`` (this run's peak in use), ``predicted_acquisitions``
    (history's decayed mean per run; None without history), ``actual_acquisitions``,
    ``hit_rate`` (served at once) and ``reuse_rate`` (served without a creation), None when
    nothing was served (as in ``PoolStats.to_dict``: 0.0 would read as every acquisition missing).
    """
    history = pool.history
    out: dict[str, dict[str, Any]] = {}
    for name, svc in pool.service_pools.items():
        stats = svc.stats()
        hist = history.services.get(name)
        out[name] = {
            "predicted_size": round(hist.size, 3) if hist is not None else None,
            "warmed": pool.warmed.get(name, 0),
            "actual_size": svc.peak_size,
            "predicted_peak": round(hist.peak, 3) if hist is not None else None,
            "actual_peak": stats.peak_in_use,
            "predicted_acquisitions": round(hist.acquisitions, 3) if hist is not None else None,
            "actual_acquisitions": stats.acquisitions,
            "hit_rate": stats.hit_rate if stats.served else None,
            "reuse_rate": stats.reuse_rate if stats.served else None,
        }
    return out


class WarmingSupervisor:
    """Samples usage once per window (creating is the sizing controller's)."""

    def __init__(self, pool: PoolView) -> None:
        self.pool = pool

    async def tick(self) -> float:
        pool = self.pool
        window = pool.recorder.window_s
        if pool.closed:
            return window
        pool.sample_usage()
        # The recorder may have doubled its window meanwhile (long runs): follow it.
        return pool.recorder.window_s


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The warming supervisor (usage sampler + predictive warming): runs until cancelled."""
    await run_supervised(pool, "warming", WarmingSupervisor, task_status=task_status)
