"""Leak supervisor: report leases held longer than ``MockPool(leak_threshold=...)`` seconds.

Runs only when a threshold is set; the pool then tracks leases (each records where it was
acquired). A lease over the threshold is logged once, with its service, its age, the file and
line of its ``async with`` and its owner (the test id under pytest), and counted in the
service's ``leaks``. The lease itself is left alone: a long hold is suspicious, not wrong; the
pytest plugin reclaims leases still held when their test ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ._base import run_supervised

if TYPE_CHECKING:
    from ..lease import Lease
    from .view import PoolView

__all__ = ("LeaseView", "LeakSupervisor", "find_leaks", "run", "tick_interval")

logger = logging.getLogger("mockpool.leaks")


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What the detector needs to know of one live lease."""

    key: int
    started: float
    reported: bool


def find_leaks(leases: Iterable[LeaseView], *, now: float, threshold: float) -> tuple[int, ...]:
    """Keys of the leases held longer than ``threshold`` and not reported yet."""
    return tuple(v.key for v in leases if not v.reported and now - v.started > threshold)


def tick_interval(threshold: float) -> float:
    """Look often enough to report a leak within half a threshold of it, at most once a second."""
    return min(max(threshold / 2, 0.01), 1.0)


class LeakSupervisor:
    """Counts and logs each lease once when it outlives the threshold."""

    def __init__(self, pool: PoolView) -> None:
        self.pool = pool
        self.threshold: float | None = pool.leak_threshold
        # Strong references, pruned to live leases each tick, so an id is never reused.
        self.reported: set[Lease[Any]] = set()

    async def tick(self) -> float:
        threshold = self.threshold
        if threshold is None:
            return 1.0
        pool = self.pool
        now = pool.clock.now()
        live: set[Lease[Any]] = set()
        for svc in list(pool.service_pools.values()):
            active = svc.active
            if not active:
                continue
            leases = {id(lease): lease for lease in list(active) if lease.held}
            live.update(leases.values())
            views = (LeaseView(key, lease._started, lease in self.reported) for key, lease in leases.items())
            for key in find_leaks(views, now=now, threshold=threshold):
                lease = leases[key]
                self.reported.add(lease)
                svc.metrics.leaks += 1
                where = f"{lease.where[0]}:{lease.where[1]}" if lease.where else "an unknown place"
                owner = f" by {lease.owner}" if lease.owner else ""
                logger.warning(
                    "service %r: lease held for %.3g s (> leak_threshold %.3g s), acquired at %s%s",
                    svc.name,
                    now - lease._started,
                    threshold,
                    where,
                    owner,
                )
        self.reported &= live
        return tick_interval(threshold)


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The leak supervisor: runs until cancelled."""
    await run_supervised(pool, "leaks", LeakSupervisor, task_status=task_status)
