"""Background work of the pool: health, scaling, adaptation, leaks, warming (and recovery).

Each supervisor is a coroutine ``run(pool, *, task_status)`` that reports readiness and runs
until cancelled; ``start_all`` starts them in the runtime's task group (one runtime per event
loop), so closing the pool, or the end of the loop, ends them all. A supervisor that raises is
logged, counted in ``pool.supervisor_errors`` and restarted with backoff (see ``_base``).
Recovery is not a loop: the pool spawns one recovery per broken instance (``recovery``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import adaptation, health, leaks, scaling, sizing, warming
from .adaptation import AdaptationConfig
from .scaling import ScalingConfig

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .view import PoolView

__all__ = ("SUPERVISORS", "AdaptationConfig", "ScalingConfig", "start_all")

#: Name and entry point of every supervisor, in start order (the sampler first).
SUPERVISORS = (
    ("warming", warming.run),
    ("sizing", sizing.run),
    ("health", health.run),
    ("scaling", scaling.run),
    ("adaptation", adaptation.run),
    ("leaks", leaks.run),
)


def start_all(pool: PoolView, runtime: Runtime) -> None:
    """Start every supervisor of ``pool`` in ``runtime`` (each runs from the loop's next step).

    Through ``Runtime.spawn``, like all background work: a supervisor whose task is cancelled
    before its first step (a loop that closes right after the runtime started, as
    ``asyncio.run`` does mid-release) has its coroutine closed unrun, with no "coroutine 'run'
    was never awaited" warning. Not ``TaskGroup.start``: under anyio 4.16 a task cancelled
    before its first step never reports to ``start``, which then waits for ever.
    """
    for name, run in SUPERVISORS:
        if name == "leaks" and pool.leak_threshold is None:
            continue
        runtime.spawn(run, pool, name=f"mockpool[{pool.name}] {name}")
