"""Scaling supervisor: keep ``min_size``, back up demand creation, shrink by watermark.

Every ``interval_s`` (0.5 s) per service:

* **floor**: grow when ``size + creating < min_size``;
* **demand**: while waiters outnumber idle plus creating instances, create in background, one
  at a time per service unless the shortfall reaches ``spike`` (then all of it at once); the
  core already creates on demand, this backs it up (after a failed creation, say);
* **watermark shrink** (psycopg's ``ShrinkPool``): at the end of each ``shrink_window_s``, if the
  idle count never reached 0 during the window (``core.idle_low > 0``), one instance was never
  needed: destroy one idle instance, least recently used first, never below ``min_size``;
* **predictive eviction**: at the same window end, idle instances beyond what the forecast of
  this run predicts are evicted least recently used first, at most ``idle_low`` of them (only
  instances nobody used in the window);
* **memory budget**: when the process RSS (read once per tick through psutil) exceeds
  ``memory_budget_mb``, evict half of the evictable idle instances (at least one) per tick.

Idle instances are evicted from the bottom of the idle stack (least recently used first; an
acquire takes the top) and never below ``min_size``. Creating *ahead* of predicted demand is
the warming supervisor's half of prediction (it runs once per usage window, see ``warming``);
both use :func:`~mockpool.supervisors.warming.predict`, so predictive eviction never takes the
pool below what warming creates for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ._base import run_supervised
from .warming import predict

if TYPE_CHECKING:
    from ..pool import MockPool
    from ..service import ServicePool

__all__ = (
    "ScaleInput",
    "ScalePlan",
    "ScalingConfig",
    "ScalingSupervisor",
    "plan_scaling",
    "read_rss_mb",
    "run",
)

logger = logging.getLogger("mockpool.scaling")

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """Knobs of the scaling supervisor (``MockPool(scaling=ScalingConfig(...))``)."""

    interval_s: float = 0.5
    #: Shrink by at most one instance per window (watermark).
    shrink_window_s: float = 10.0
    #: A shortfall of this many waiters is a spike: create for all of them at once.
    spike: int = 4
    #: Evict idle instances beyond the run forecast's need.
    predictive: bool = True

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.shrink_window_s > 0:
            raise ValueError("interval_s and shrink_window_s must be > 0")
        if self.spike < 1:
            raise ValueError("spike must be >= 1")


@dataclass(frozen=True, slots=True)
class ScaleInput:
    """One service at one tick."""

    size: int
    idle: int
    creating: int
    waiting: int
    min_size: int
    max_size: int
    #: Lowest idle count during the window that just ended (None: the window goes on).
    window_idle_low: int | None = None
    #: Instances the forecast says are needed (None: no trusted forecast).
    predicted_need: int | None = None
    over_memory_budget: bool = False


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """Creations to start and idle instances (LRU first) to destroy, and why."""

    grow: int = 0
    shrink: int = 0
    reason: str = ""


def plan_scaling(s: ScaleInput, spike: int = 4) -> ScalePlan:
    """Decide one tick's growth or shrinkage for one service."""
    room = max(s.max_size - s.size - s.creating, 0)
    floor = s.min_size - s.size - s.creating
    if floor > 0:
        return ScalePlan(grow=min(floor, room), reason=f"below min_size={s.min_size}")
    shortfall = s.waiting - s.idle - s.creating
    if shortfall > 0:
        # HikariCP's rule: one grower per key unless the queue says otherwise.
        if shortfall >= spike:
            return ScalePlan(grow=min(shortfall, room), reason=f"demand spike: {shortfall} waiters uncovered")
        if s.creating == 0:
            return ScalePlan(grow=min(1, room), reason=f"{s.waiting} waiting, {s.idle} idle")
        return ScalePlan()
    if s.waiting:
        return ScalePlan()
    evictable = min(s.idle, s.size - s.min_size)
    if evictable <= 0:
        return ScalePlan()
    if s.over_memory_budget:
        return ScalePlan(shrink=max(1, evictable // 2), reason="process RSS over the memory budget")
    if s.window_idle_low is None or s.window_idle_low <= 0:
        return ScalePlan()
    if s.predicted_need is not None:
        # A trusted forecast replaces the one-per-window rule, both ways.
        excess = min(s.size - max(s.predicted_need, s.min_size), s.window_idle_low, evictable)
        if excess <= 0:
            return ScalePlan()
        return ScalePlan(shrink=excess, reason=f"{excess} idle beyond predicted need {s.predicted_need}")
    return ScalePlan(shrink=1, reason=f"idle never below {s.window_idle_low} in the window")


def read_rss_mb() -> float:
    """The process's resident set size in MB (one psutil call)."""
    import psutil  # type: ignore[import-untyped]  # no stubs installed; one call, typed below

    return float(psutil.Process().memory_info().rss) / _MB


def evict_idle(svc: ServicePool, count: int) -> int:
    """Destroy up to ``count`` idle instances, least recently used first, keeping min_size."""
    core = svc.core
    evicted = 0
    while evicted < count and core.size > core.min_size:
        entry = core.take_idle_for_removal()
        if entry is None:
            break
        svc.destroy_soon(entry)
        evicted += 1
    return evicted


class ScalingSupervisor:
    """Grows and shrinks every service of a pool; see the module docstring."""

    def __init__(self, pool: MockPool) -> None:
        self.pool = pool
        cfg = pool.scaling
        self.cfg: ScalingConfig = cfg if isinstance(cfg, ScalingConfig) else ScalingConfig()
        self.window_start: dict[str, float] = {}

    async def tick(self) -> float:
        pool, cfg = self.pool, self.cfg
        if pool.closed:
            return cfg.interval_s
        now = pool.clock.now()
        budget = pool.memory_budget_mb
        over = budget is not None and read_rss_mb() > budget
        for name, svc in list(pool.service_pools.items()):
            core = svc.core
            if core.closed:
                continue
            started = self.window_start.get(name)
            if started is None:
                self._new_window(svc, now)
                started = now
            window_done = now - started >= cfg.shrink_window_s
            need = None
            if window_done and cfg.predictive:
                prediction = predict(pool, name, svc)
                need = prediction.need if prediction.from_run else None
            plan = plan_scaling(
                ScaleInput(
                    size=core.size,
                    idle=len(core.idle),
                    creating=core.creating,
                    waiting=core.waiting,
                    min_size=core.min_size,
                    max_size=core.max_size,
                    window_idle_low=core.idle_low if window_done else None,
                    predicted_need=need,
                    over_memory_budget=over,
                ),
                cfg.spike,
            )
            if plan.grow:
                if svc.grow(plan.grow) == 0 and core.waiting:
                    # At the pool-wide cap: the core's path can evict another service's idle.
                    svc.ensure_creations()
            elif plan.shrink:
                evicted = evict_idle(svc, plan.shrink)
                if evicted:
                    logger.info("service %r: evicted %d idle (%s)", name, evicted, plan.reason)
                    if over:
                        pool.record_event(name, "RSS over memory budget", f"evicted {evicted} idle (LRU)")
            if window_done:
                self._new_window(svc, now)
        for gone in set(self.window_start) - set(pool.service_pools):
            del self.window_start[gone]
        return cfg.interval_s

    def _new_window(self, svc: ServicePool, now: float) -> None:
        self.window_start[svc.name] = now
        # The watermark is ours: start it at the current idle count.
        svc.core.idle_low = len(svc.core.idle)


async def run(pool: MockPool, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The scaling supervisor: runs until cancelled."""
    await run_supervised(pool, "scaling", ScalingSupervisor, task_status=task_status)
