"""Scaling supervisor: keep ``min_size``; shrink slowly and never churn.

Growth on demand is the sizing controller's (:mod:`mockpool.sizing`, driven by the sizing
supervisor and by each waiter's arrival). Every ``interval_s`` (0.5 s) per service:

* **floor**: grow when ``size + creating < min_size``;
* **watermark shrink** (psycopg's ``ShrinkPool``): at the end of each ``shrink_window_s``
  (30 s), if the idle count never reached 0 during the window (``core.idle_low > 0``), one
  instance was never needed: destroy one idle instance, least recently used first, never
  below ``min_size`` nor below what tests of this run needed (the most in use at once, or
  the start-up warm): a test that comes back after a quiet spell needs them again;
* **memory budget**: while the process RSS (one psutil call per tick) exceeds
  ``memory_budget_mb``, the services create only for liveness (``memory_tight``) and one
  idle instance is destroyed per window.

No churn: nothing is destroyed while tests wait, nor within ``cooldown_s`` (30 s) of the
service's last creation: an instance made because it was needed is not thrown away while it
may be needed again. Under memory pressure the pool prefers not creating to evicting.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ._base import run_supervised

if TYPE_CHECKING:
    from ..service import ServicePool
    from .view import PoolView

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
    shrink_window_s: float = 30.0
    #: Nothing is evicted within this many seconds of the service's last creation.
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.shrink_window_s > 0:
            raise ValueError("interval_s and shrink_window_s must be > 0")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")


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
    over_memory_budget: bool = False
    #: Seconds since the service's last creation ended (None: none yet).
    since_creation_s: float | None = None
    cooldown_s: float = 30.0
    #: The most instances the service had in use at once in this run, or what the start-up
    #: warm made for it, whichever is more: tests needed that many, and may come back for them.
    needed: int = 0


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """Creations to start and idle instances (LRU first) to destroy, and why."""

    grow: int = 0
    shrink: int = 0
    reason: str = ""


def plan_scaling(s: ScaleInput) -> ScalePlan:
    """Decide one tick's growth (the ``min_size`` floor) or shrinkage for one service."""
    room = max(s.max_size - s.size - s.creating, 0)
    floor = s.min_size - s.size - s.creating
    if floor > 0:
        return ScalePlan(grow=min(floor, room), reason=f"below min_size={s.min_size}")
    if s.waiting or s.creating:
        return ScalePlan()  # never evict while tests wait, or while the pool grows
    if s.since_creation_s is not None and s.since_creation_s < s.cooldown_s:
        return ScalePlan()  # made because it was needed: not thrown away soon after
    # Over the memory budget, down to min_size. Otherwise the watermark takes only what no
    # test of this run needed: an instance idle through a window is needed again when its
    # tests come back (one test at a time over eight services, each leased every 40 s, had
    # 27 of its 48 instances destroyed and made again; bursts five minutes apart, as many).
    keep = s.min_size if s.over_memory_budget else max(s.min_size, s.needed)
    evictable = min(s.idle, s.size - keep)
    if evictable <= 0 or s.window_idle_low is None or s.window_idle_low <= 0:
        return ScalePlan()
    if s.over_memory_budget:
        return ScalePlan(shrink=1, reason="process RSS over the memory budget")
    return ScalePlan(shrink=1, reason=f"idle never below {s.window_idle_low} in the window")


def read_rss_mb() -> float:
    """The process's resident set size in MB (one psutil call)."""
    return float(_this_process(os.getpid()).memory_info().rss) / _MB


@functools.cache
def _this_process(pid: int | None = None) -> Any:
    """psutil's view of this process, made once per pid (a new one reads ``/proc`` again)."""
    import psutil  # type: ignore[import-untyped]  # no stubs installed; one call, typed above

    return psutil.Process(pid)


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

    def __init__(self, pool: PoolView) -> None:
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
            svc.memory_tight = over or svc.memory_tight_by_growth
            started = self.window_start.get(name)
            if started is None:
                self._new_window(svc, now)
                started = now
            window_done = now - started >= cfg.shrink_window_s
            created_at = svc.last_created_at
            plan = plan_scaling(
                ScaleInput(
                    size=core.size,
                    idle=len(core.idle),
                    creating=core.creating,
                    waiting=core.waiting,
                    min_size=core.min_size,
                    max_size=core.max_size,
                    window_idle_low=core.idle_low if window_done else None,
                    over_memory_budget=over,
                    since_creation_s=None if created_at is None else now - created_at,
                    cooldown_s=cfg.cooldown_s,
                    needed=max(svc.peak_total, core.peak_in_use, pool.warmed.get(name, 0)),
                )
            )
            if plan.grow:
                svc.grow(plan.grow)
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


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The scaling supervisor: runs until cancelled."""
    await run_supervised(pool, "scaling", ScalingSupervisor, task_status=task_status)
