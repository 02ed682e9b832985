"""Warming supervisor: the usage sampler and predictive warming.

Once per ``pool.recorder.window_s`` it folds the pool's counters into this run's usage record
(``pool.sample_usage()``; the hot path only bumps counters), then creates instances ahead of
demand: what history says the next ``lookahead`` windows need
(``pool.history.expected_demand``) and what the forecast of this run's demand so far says,
each turned into instances by Little's law (demand rate x hold time).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ..forecast import expected_concurrency, forecast
from ._base import run_supervised

if TYPE_CHECKING:
    from ..pool import MockPool
    from ..service import ServicePool

__all__ = ("NeedInput", "Prediction", "WarmingSupervisor", "plan_need", "predict", "run")

logger = logging.getLogger("mockpool.warming")

#: How many windows ahead warming looks at history.
LOOKAHEAD_WINDOWS = 2
#: A run forecast needs this many complete windows before anyone acts on it.
MIN_WINDOWS = 4


@dataclass(frozen=True, slots=True)
class NeedInput:
    """What predicts a service's need over the next stretch."""

    #: Acquisitions history expects in the next ``lookahead_s`` seconds.
    history_demand: float
    lookahead_s: float
    #: Decayed peak concurrency in history (0: unknown); caps the history estimate.
    history_peak: float
    #: Upper estimate of this run's acquisitions in its next window (None: too little data).
    run_peak_demand: float | None
    window_s: float
    #: Mean hold time in seconds (this run's EWMA, else history's mean; 0: unknown).
    hold_s: float
    max_size: int


@dataclass(frozen=True, slots=True)
class Prediction:
    """Instances the service is expected to need at once, and whether the run's own
    forecast contributed (only then is it trusted for eviction)."""

    need: int
    from_run: bool


def plan_need(inp: NeedInput) -> Prediction:
    """Instances needed at once over the next stretch, by Little's law, capped at max_size."""
    hist = 0.0
    if inp.history_demand > 0:
        if inp.hold_s > 0:
            hist = expected_concurrency(inp.history_demand, window_s=inp.lookahead_s, hold_s=inp.hold_s)
        else:
            hist = inp.history_demand  # no hold known: as if each acquisition overlapped
        if inp.history_peak > 0:
            hist = min(hist, inp.history_peak)
    run = 0.0
    if inp.run_peak_demand is not None and inp.hold_s > 0:
        run = expected_concurrency(inp.run_peak_demand, window_s=inp.window_s, hold_s=inp.hold_s)
    need = max(hist, run)
    if not math.isfinite(need):
        need = 0.0
    # Any expected use needs one instance, however short its holds.
    wanted = math.ceil(need) if need >= 0.05 else 0
    if wanted == 0 and (inp.history_demand >= 0.5 or (inp.run_peak_demand or 0.0) >= 0.5):
        wanted = 1
    return Prediction(need=min(wanted, inp.max_size), from_run=inp.run_peak_demand is not None)


def predict(
    pool: MockPool, name: str, svc: ServicePool, *, lookahead_windows: int = LOOKAHEAD_WINDOWS
) -> Prediction:
    """:func:`plan_need` from the pool's history, this run's record and the service's metrics."""
    recorder = pool.recorder
    window = recorder.window_s
    now = pool.elapsed()
    lookahead = window * lookahead_windows
    history = pool.history
    hold = svc.metrics.hold_ewma
    hist = history.services.get(name)
    if hold <= 0 and hist is not None:
        hold = hist.hold_mean_s
    series = recorder.demand(name, t_rel=now)
    run_peak: float | None = None
    if series.size >= MIN_WINDOWS:
        run_peak = forecast(series, window_s=window).expected_peak
    return plan_need(
        NeedInput(
            history_demand=history.expected_demand(name, now, now + lookahead) if hist is not None else 0.0,
            lookahead_s=lookahead,
            history_peak=history.peak(name),
            run_peak_demand=run_peak,
            window_s=window,
            hold_s=hold,
            max_size=svc.core.max_size,
        )
    )


class WarmingSupervisor:
    """Samples usage once per window and creates ahead of predicted demand."""

    def __init__(self, pool: MockPool) -> None:
        self.pool = pool

    async def tick(self) -> float:
        pool = self.pool
        window = pool.recorder.window_s
        if pool.closed:
            return window
        pool.sample_usage()
        for name, svc in list(pool.service_pools.items()):
            core = svc.core
            if core.closed:
                continue
            need = predict(pool, name, svc).need
            missing = need - core.size - core.creating
            if missing > 0:
                started = svc.grow(missing)
                if started:
                    logger.debug("service %r: warming %d ahead of predicted need %d", name, started, need)
        # The recorder may have doubled its window meanwhile (long runs): follow it.
        return pool.recorder.window_s


async def run(pool: MockPool, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The warming supervisor (usage sampler + predictive warming): runs until cancelled."""
    await run_supervised(pool, "warming", WarmingSupervisor, task_status=task_status)
