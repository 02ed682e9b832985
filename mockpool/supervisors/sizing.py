"""Sizing supervisor: measure the loop's load, run the throughput search, decide creations.

Every ``sample_s`` (50 ms) in each loop that uses the pool:

* the loop's **busy share** since the last tick (one minus the share of wall time it waited
  in its selector, :mod:`mockpool.idle`; the thread's CPU time over wall time where the loop
  has no selector), and the **cost of a lease**: the busy time less the CPU sync factories
  took, over the leases held meanwhile: what :func:`mockpool.sizing.creations` reads as the
  loop's spare capacity;
* per service, every ``window_s`` (250 ms), a :class:`~mockpool.sizing.Window` of completed
  leases, size and whether tests waited at every sample of it, for :func:`~mockpool.sizing.next_limit` (the
  throughput search); a cap it sets is an event in the report;
* per service with waiters no creation covers: :meth:`ServicePool.ensure_creations`, which
  asks the controller again with fresh measurements (a waiter's arrival asks it too).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from ..idle import idle_meter
from ..sizing import SATURATED, Window, next_limit
from ._base import run_supervised

if TYPE_CHECKING:
    from .view import PoolView

__all__ = ("SizingSupervisor", "run")

SAMPLE_S = 0.05
WINDOW_S = 0.25


@dataclass(slots=True)
class _Open:
    """A service's window under way."""

    started: float
    completed: int
    #: Instances lent to groups when it opened.
    lent: int
    #: The time sync factories had held the loop (``Runtime.creation_blocked``) when it opened.
    creation_blocked: float = 0.0
    #: Tests waited at every sample so far: the leases completed were bound by the size.
    queued: bool = True


class SizingSupervisor:
    """Samples the loop's load and feeds the sizing controller; see the module docstring."""

    def __init__(self, pool: PoolView) -> None:
        self.pool = pool
        self.wall = time.perf_counter()
        self.meter = idle_meter(asyncio.get_running_loop())
        self.busy_at = self._busy_clock()
        #: When the window under way began, on the pool's clock (waiters' times are on it).
        self.since = pool.clock.now()
        runtime = pool.current_runtime()
        self.creation_cpu = runtime.creation_cpu if runtime is not None else 0.0
        self.in_use = self._in_use()
        self.windows: dict[str, _Open] = {}

    def _busy_clock(self) -> float:
        """Seconds the loop was busy so far: wall time less idle time, or the thread's CPU
        time where the loop has no idle meter."""
        if self.meter is None:
            return time.thread_time()
        return time.perf_counter() - self.meter.idle_s

    def _in_use(self) -> int:
        """The leases tests hold (or that are being reset) now, all services together. An
        instance lent to a group instance is not one: it stays with the group while no test
        runs, and counting it made an idle loop's leases look cheap (a group of three members
        divided the load by four, and a burst after a quiet spell got 38 instances a service)."""
        return sum(svc.core.in_use - svc.core.lent for svc in self.pool.service_pools.values())

    async def tick(self) -> float:
        pool = self.pool
        if pool.closed:
            return SAMPLE_S
        wall, busy_at, now = time.perf_counter(), self._busy_clock(), pool.clock.now()
        runtime = pool.current_runtime()
        creation_cpu = runtime.creation_cpu if runtime is not None else 0.0
        # A factory that sleeps or waits on I/O holds the loop without its CPU: the windows
        # count the time on the clock.
        blocked = runtime.creation_blocked if runtime is not None else 0.0
        elapsed = wall - self.wall
        busy = load = None
        in_use = self._in_use()
        if elapsed > 0 and runtime is not None:
            busy = min(1.0, max(0.0, (busy_at - self.busy_at) / elapsed))
            runtime.busy = busy
            runtime.load_since = self.since
            # The share the leases took: creations that held the loop are not the leases'.
            load = min(1.0, max(0.0, busy_at - self.busy_at - (creation_cpu - self.creation_cpu)) / elapsed)
            held = (in_use + self.in_use) / 2  # the leases held over the window, about
            if held >= 1:
                runtime.lease_cost = min(1.0, load / held)
        self.wall, self.busy_at, self.creation_cpu, self.in_use = wall, busy_at, creation_cpu, in_use
        self.since = now
        for name, svc in list(pool.service_pools.items()):
            core = svc.core
            if core.closed:
                continue
            completed = svc.metrics.holds.count
            window = self.windows.get(name)
            if window is None:
                window = self.windows[name] = _Open(wall, completed, core.lent, blocked)
            # A queue that emptied, even once, means the window's rate measured the demand,
            # not what the size can serve: a suite whose tests moved to other services looked
            # like a size that bought nothing, and the search capped a service that was short.
            # Nor does a window in which groups took members or gave them back: the size
            # serving the service's own tests changed under it (a search that read such a
            # window capped redis at the one instance device_session groups had left it).
            window.queued &= core.waiting > 0 and core.lent == window.lent
            if wall - window.started >= WINDOW_S:
                before = svc.limit
                svc.limit = next_limit(
                    before,
                    Window(
                        completed=completed - window.completed,
                        seconds=wall - window.started,
                        # Members lent to groups serve no lease of this service's own.
                        size=core.size - core.lent,
                        waited=window.queued,
                        # A loop saturated by creations says nothing of the size: a search
                        # that read it as the leases' capped a service at the one instance it
                        # had while sync factories built its group's members.
                        busy=load,
                        # No lease ran while they did: the rate counts the rest.
                        blocked_s=blocked - window.creation_blocked,
                    ),
                    core.max_size,
                )
                if svc.limit.limit < before.limit:
                    serving = core.size - core.lent
                    pool.record_event(
                        name,
                        f"the leases saturated the loop (size {serving})"
                        if load is not None and load >= SATURATED
                        else f"completed leases per second did not rise with size {serving}",
                        f"limit {before.limit} -> {svc.limit.limit}",
                    )
                self.windows[name] = _Open(wall, completed, core.lent, blocked)
            if core.shortfall() > 0:
                svc.ensure_creations()
        for gone in set(self.windows) - set(pool.service_pools):
            del self.windows[gone]
        return SAMPLE_S


async def run(pool: PoolView, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """The sizing supervisor: runs until cancelled."""
    await run_supervised(pool, "sizing", SizingSupervisor, task_status=task_status)
