"""Adaptation supervisor: watch each service's behaviour and change how it is pooled.

Signals, read once per ``interval_s`` (1 s) from counters the hot path already keeps: the
hold and wait EWMAs, the error rate (exceptions in leases, failed resets, failed health
checks per acquisition), the run's peak concurrency, and the process RSS (one psutil call per
tick). Thresholds default to the seed's: hold > 100 ms, RSS growth > 50 MB, error rate > 5 %,
concurrency > 20. Responses:

=====================  =================================================================
trigger                response
=====================  =================================================================
saturated & (peak      an event: the user's ``max_size`` is a hard bound. Only with
> concurrency or       ``grow_beyond_max_size=True``: raise ``max_size`` (x ``growth``)
wait > wait_s)         up to ``max_size_ceiling``
error rate             switch to the ``"stable"`` variant; turn on check-on-acquire
RSS growth             switch to the ``"lean"`` variant; create only for liveness from
                       then on (no eviction: preferring not to create over evicting)
hold time              switch to the ``"fast"`` variant
=====================  =================================================================

How many instances to keep is the sizing controller's (:mod:`mockpool.sizing`): these
thresholds are signals and events, they raise no bound unless asked to.

Every adaptation is recorded with ``pool.record_event``. Hysteresis: a response that is
already in effect is not repeated (the variant is current, the check is on, max_size is at the
ceiling), each (service, response) has a cooldown, a variant once left is never switched back
to, and the RSS baseline moves to the current RSS after a memory response.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ..errors import ServiceConfigError
from ._base import run_supervised
from .scaling import read_rss_mb

if TYPE_CHECKING:
    from ..service import ServicePool
    from .view import PoolView

__all__ = (
    "Action",
    "AdaptInput",
    "AdaptationConfig",
    "AdaptationSupervisor",
    "plan_adaptation",
    "run",
)

logger = logging.getLogger("mockpool.adaptation")


@dataclass(frozen=True, slots=True)
class AdaptationConfig:
    """Thresholds and limits of the adaptation supervisor (``MockPool(adaptation=...)``)."""

    hold_s: float = 0.100
    rss_growth_mb: float = 50.0
    error_rate: float = 0.05
    concurrency: int = 20
    #: Waits longer than this (EWMA) at max_size also raise max_size.
    wait_s: float = 0.100
    #: Acquisitions needed before the error rate and hold EWMA are trusted.
    min_samples: int = 20
    #: Opt in to growth above the user's ``max_size`` (off: the bound is hard).
    grow_beyond_max_size: bool = False
    #: Bound of that growth: this, else ``ceiling_factor`` x the spec's max_size.
    max_size_ceiling: int | None = None
    ceiling_factor: int = 4
    growth: float = 2.0
    #: The same response is not repeated for a service within this many seconds.
    cooldown_s: float = 30.0
    interval_s: float = 1.0
    #: Check-on-acquire health-checks instances idle longer than this.
    check_window_s: float = 1.0
    stable_variant: str = "stable"
    lean_variant: str = "lean"
    fast_variant: str = "fast"

    def __post_init__(self) -> None:
        for name in ("hold_s", "rss_growth_mb", "error_rate", "wait_s", "interval_s", "check_window_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ServiceConfigError(f"AdaptationConfig.{name}", value, "must be a number > 0")
        for name, low in (("concurrency", 1), ("min_samples", 0), ("ceiling_factor", 1), ("cooldown_s", 0)):
            if getattr(self, name) < low:
                raise ServiceConfigError(f"AdaptationConfig.{name}", getattr(self, name), f"must be >= {low}")
        if self.growth <= 1:
            raise ServiceConfigError("AdaptationConfig.growth", self.growth, "must be > 1")


@dataclass(frozen=True, slots=True)
class AdaptInput:
    """One service's signals at one tick."""

    size: int
    creating: int
    idle: int
    waiting: int
    min_size: int
    max_size: int
    ceiling: int
    acquisitions: int
    peak_in_use: int
    hold_ewma_s: float
    wait_ewma_s: float
    error_rate: float
    rss_growth_mb: float
    variants: frozenset[str] = frozenset()
    variant: str | None = None
    #: Variants once switched away from (never switched back to).
    left_variants: frozenset[str] = frozenset()
    has_health_check: bool = False
    check_on_acquire: bool = False
    memory_tight: bool = False
    #: Response kinds still in their cooldown for this service.
    cooling: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Action:
    """One adaptation: its kind (the cooldown key), why, what, and the change to make."""

    kind: str
    trigger: str
    response: str
    max_size: int | None = None
    variant: str | None = None
    memory_tight: bool = False
    check_on_acquire: bool = False


def plan_adaptation(s: AdaptInput, cfg: AdaptationConfig) -> tuple[Action, ...]:
    """Decide the adaptations of one service at one tick (none when nothing is off)."""
    actions: list[Action] = []
    enough = s.acquisitions >= cfg.min_samples
    switched = False

    def can_switch(name: str) -> bool:
        return not switched and name in s.variants and s.variant != name and name not in s.left_variants

    # Errors first: a stable double matters more than a lean or fast one.
    if enough and s.error_rate > cfg.error_rate:
        trigger = f"error rate {s.error_rate:.1%} > {cfg.error_rate:.0%}"
        if "variant" not in s.cooling and can_switch(cfg.stable_variant):
            actions.append(
                Action(
                    "variant",
                    trigger,
                    f"switched to variant {cfg.stable_variant!r}",
                    variant=cfg.stable_variant,
                )
            )
            switched = True
        if s.has_health_check and not s.check_on_acquire and "check" not in s.cooling:
            actions.append(Action("check", trigger, "turned on check-on-acquire", check_on_acquire=True))
    if s.rss_growth_mb > cfg.rss_growth_mb:
        trigger = f"RSS grew {s.rss_growth_mb:.0f} MB > {cfg.rss_growth_mb:.0f} MB"
        if "variant" not in s.cooling and can_switch(cfg.lean_variant):
            actions.append(
                Action(
                    "variant", trigger, f"switched to variant {cfg.lean_variant!r}", variant=cfg.lean_variant
                )
            )
            switched = True
        if not s.memory_tight and "memory" not in s.cooling:
            actions.append(
                Action("memory", trigger, "creating only when nothing else can serve", memory_tight=True)
            )
    if enough and s.hold_ewma_s > cfg.hold_s and "variant" not in s.cooling and can_switch(cfg.fast_variant):
        trigger = f"hold {s.hold_ewma_s * 1e3:.0f} ms > {cfg.hold_s * 1e3:.0f} ms"
        actions.append(
            Action("variant", trigger, f"switched to variant {cfg.fast_variant!r}", variant=cfg.fast_variant)
        )
        switched = True
    saturated = s.size + s.creating >= s.max_size and (s.waiting > 0 or s.peak_in_use >= s.max_size)
    if saturated and s.max_size < s.ceiling and "grow" not in s.cooling:
        reason = None
        if s.peak_in_use > cfg.concurrency:
            reason = f"concurrency {s.peak_in_use} > {cfg.concurrency} at max_size={s.max_size}"
        elif s.waiting > 0 and s.wait_ewma_s > cfg.wait_s:
            reason = f"wait {s.wait_ewma_s * 1e3:.0f} ms > {cfg.wait_s * 1e3:.0f} ms at max_size={s.max_size}"
        if reason is not None and cfg.grow_beyond_max_size:
            new = min(s.ceiling, max(s.max_size + 1, math.ceil(s.max_size * cfg.growth)))
            actions.append(Action("grow", reason, f"raised max_size {s.max_size} -> {new}", max_size=new))
        elif reason is not None:
            actions.append(
                Action(
                    "grow",
                    reason,
                    f"kept max_size={s.max_size}, the user's bound "
                    "(AdaptationConfig(grow_beyond_max_size=True) would raise it)",
                )
            )
    return tuple(actions)


class AdaptationSupervisor:
    """Applies :func:`plan_adaptation` to every service once per ``interval_s``."""

    def __init__(self, pool: PoolView, *, rss: Callable[[], float] = read_rss_mb) -> None:
        self.pool = pool
        cfg = pool.adaptation
        self.cfg: AdaptationConfig = cfg if isinstance(cfg, AdaptationConfig) else AdaptationConfig()
        self.rss = rss
        self.baseline_mb: float | None = None
        self.fired: dict[tuple[str, str], float] = {}
        self.left: dict[str, set[str]] = {}

    async def tick(self) -> float:
        pool, cfg = self.pool, self.cfg
        if pool.closed:
            return cfg.interval_s
        now = pool.clock.now()
        rss = self.rss()  # once per tick, never per acquire
        if self.baseline_mb is None:
            self.baseline_mb = rss
        growth = rss - self.baseline_mb
        memory_acted = False
        for name, svc in list(pool.service_pools.items()):
            if svc.core.closed:
                continue
            cooling = frozenset(
                kind
                for (service, kind), at in self.fired.items()
                if service == name and now - at < cfg.cooldown_s
            )
            for action in plan_adaptation(self._input(svc, growth, cooling), cfg):
                self._apply(svc, action)
                self.fired[(name, action.kind)] = now
                memory_acted |= action.trigger.startswith("RSS")
                pool.record_event(name, action.trigger, action.response)
        if memory_acted:
            self.baseline_mb = rss  # measure further growth from here
        return cfg.interval_s

    def _input(self, svc: ServicePool, growth: float, cooling: frozenset[str]) -> AdaptInput:
        core, m, cfg = svc.core, svc.metrics, self.cfg
        ceiling = (
            cfg.max_size_ceiling
            if cfg.max_size_ceiling is not None
            else svc.spec.max_size * cfg.ceiling_factor
        )
        return AdaptInput(
            size=core.size,
            creating=core.creating,
            idle=len(core.idle),
            waiting=core.waiting,
            min_size=core.min_size,
            max_size=core.max_size,
            ceiling=max(ceiling, core.max_size),
            acquisitions=m.acquisitions,
            peak_in_use=max(svc.peak_total, core.peak_in_use),
            hold_ewma_s=m.hold_ewma,
            wait_ewma_s=m.wait_ewma,
            error_rate=m.error_rate(),
            rss_growth_mb=growth,
            variants=frozenset(svc.spec.variants),
            variant=svc.variant,
            left_variants=frozenset(self.left.get(svc.name, ())),
            has_health_check=svc.spec.health_check is not None,
            check_on_acquire=svc.check_on_acquire,
            memory_tight=svc.memory_tight_by_growth,
            cooling=cooling,
        )

    def _apply(self, svc: ServicePool, action: Action) -> None:
        logger.info("service %r: %s -> %s", svc.name, action.trigger, action.response)
        if action.max_size is not None and action.max_size > svc.core.max_size:
            svc.core.max_size = action.max_size
            svc.ensure_creations()
        if action.variant is not None:
            if svc.variant is not None:
                self.left.setdefault(svc.name, set()).add(svc.variant)
            else:
                self.left.setdefault(svc.name, set()).add("")  # the spec's own factory
            # New instances (creations and recovery tier 2) come from the variant; existing
            # ones are replaced as they are evicted or recovered.
            svc.factory = svc.spec.variants[action.variant]
            svc.variant = action.variant
        if action.memory_tight:
            svc.memory_tight_by_growth = svc.memory_tight = True
        if action.check_on_acquire:
            svc.check_window = self.cfg.check_window_s
            svc.check_on_acquire = True


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The adaptation supervisor: runs until cancelled."""
    await run_supervised(pool, "adaptation", AdaptationSupervisor, task_status=task_status)
