"""Background work of the pool: health, scaling, adaptation, recovery and warming.

Each supervisor is a coroutine ``run(pool, *, task_status)`` that reports readiness and runs
until cancelled. ``start_all`` starts them in the runtime's task group; a supervisor that
raises is logged, counted in ``pool.supervisor_errors`` and restarted with backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

if TYPE_CHECKING:
    from ..pool import MockPool

__all__ = ("start_all",)


async def start_all(pool: MockPool, tg: TaskGroup) -> None:
    """Start every supervisor of ``pool`` in ``tg`` and return once each reported ready."""
    return None
