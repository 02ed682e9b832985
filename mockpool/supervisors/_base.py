"""The runner every supervisor shares: tick, sleep on the pool's clock, restart on a bug.

A supervisor is a class built from the pool whose ``tick()`` does one round of work and returns
the seconds to sleep before the next. :func:`run_supervised` reports readiness, then ticks until
cancelled. A tick that raises is a bug in mockpool (hooks' failures are handled inside the
ticks): it is logged, counted in ``pool.supervisor_errors[name]``, and the supervisor restarts
from a fresh instance after an exponential, capped backoff on the injected clock, so one bad
decision cannot spin, and cannot take the pool down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from .view import PoolView

__all__ = ("Backoff", "Supervisor", "SupervisorFactory", "run_supervised")

logger = logging.getLogger("mockpool.supervisors")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delays: ``initial_s * factor ** (failures - 1)``, capped at ``max_s``."""

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (0 for none)."""
        if failures <= 0:
            return 0.0
        # Bound the exponent: factor ** 1000 overflows long before the cap would apply.
        value = self.initial_s * self.factor ** min(failures - 1, 200)
        return min(self.max_s, value) if math.isfinite(value) else self.max_s


DEFAULT_BACKOFF = Backoff()

#: The shortest sleep between ticks. A tick that asks for ~0 s (a deadline a rounding error
#: away) must still yield real time: otherwise a fake-time loop never goes idle, never advances
#: its clock, and the supervisor spins.
MIN_SLEEP_S = 0.001


class Supervisor(Protocol):
    """One supervisor's state; ``tick`` returns the seconds until the next tick."""

    async def tick(self) -> float: ...


SupervisorFactory = Callable[["PoolView"], Supervisor]


async def run_supervised(
    pool: PoolView,
    name: str,
    factory: SupervisorFactory,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    task_status: TaskStatus[None] = TASK_STATUS_IGNORED,
) -> None:
    """Run ``factory(pool)``'s ticks until cancelled, restarting it with backoff on errors."""
    supervisor: Supervisor | None = None
    failures = 0
    task_status.started()
    while True:
        delay: float
        try:
            if supervisor is None:
                supervisor = factory(pool)
            delay = await supervisor.tick()
        except Exception:
            # Only Exception: a cancellation (the pool closing, the loop ending) must end us.
            failures += 1
            pool.supervisor_errors[name] = pool.supervisor_errors.get(name, 0) + 1
            delay = backoff.delay(failures)
            logger.exception(
                "pool %r: supervisor %r failed (%d in a row); restarting in %.3g s",
                pool.name,
                name,
                failures,
                delay,
            )
            supervisor = None  # restart from a clean state: the old one may be inconsistent
        else:
            failures = 0
        await pool.clock.sleep(max(delay, MIN_SLEEP_S))
