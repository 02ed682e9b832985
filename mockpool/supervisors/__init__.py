"""Background work of the pool: health, scaling, adaptation, leaks, warming (and recovery).

Each supervisor is a coroutine ``run(pool, *, task_status)`` that reports readiness and runs
until cancelled; ``start_all`` starts them in the runtime's task group (one runtime per event
loop), so closing the pool, or the end of the loop, ends them all. A supervisor that raises is
logged, counted in ``pool.supervisor_errors`` and restarted with backoff (see ``_base``).
Recovery is not a loop: the pool spawns one recovery per broken instance (``recovery``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

from . import adaptation, health, leaks, scaling, warming
from .adaptation import AdaptationConfig
from .scaling import ScalingConfig

if TYPE_CHECKING:
    from ..pool import MockPool

__all__ = ("SUPERVISORS", "AdaptationConfig", "ScalingConfig", "start_all")

#: Name and entry point of every supervisor, in start order (the sampler first).
SUPERVISORS = (
    ("warming", warming.run),
    ("health", health.run),
    ("scaling", scaling.run),
    ("adaptation", adaptation.run),
    ("leaks", leaks.run),
)


async def start_all(pool: MockPool, tg: TaskGroup) -> None:
    """Start every supervisor of ``pool`` in ``tg`` (each runs from the loop's next step).

    ``start_soon``, not ``TaskGroup.start``: a supervisor reports ready as its first act, so
    waiting for it bought no ordering, and under anyio 4.16 a task cancelled before its first
    step never reports to ``start``, which then waited for ever when the loop closed while a
    runtime was starting (short-lived loops: a test's own ``asyncio.run``).
    """
    for name, run in SUPERVISORS:
        if name == "leaks" and pool.leak_threshold is None:
            continue
        tg.start_soon(run, pool, name=f"mockpool[{pool.name}] {name}")
