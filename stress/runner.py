"""Running the tests: all at once, one task each, in the running event loop.

Each test ends in one :class:`Outcome`. ``passed`` and ``failed`` are what they say; the tests
``--faults`` drew to raise or be cancelled end ``injected`` or ``cancelled`` when they did
exactly that (the injected error came out unchanged; the cancellation reached the test), and
``failed`` otherwise. A test drawn to be cancelled that finished first simply ``passed``.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mockpool import Lease, MockPool

from .scenario import Case, Held, InjectedError, Use, run_case

__all__ = ("Outcome", "PoolUse", "RunOutcomes", "run_cases")


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    INJECTED = "injected"
    CANCELLED = "cancelled"


@dataclass
class RunOutcomes:
    """What the tests did: counts by outcome, the failures, how many saw a degraded double."""

    total: int
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    failures: list[tuple[str, str]] = field(default_factory=list)
    started: int = 0
    wall_s: float = 0.0
    #: Cancellations the runner delivered to a test still running (each must end it cancelled).
    cancels_delivered: int = 0
    #: Tests drawn to discard their instance that passed (each discarded once).
    discarded: int = 0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def running(self) -> int:
        return self.started - self.done


class _PoolLease:
    """``async with use(name) as held``: enters a pool lease and gives the lease itself."""

    __slots__ = ("_lease", "_use")

    def __init__(self, lease: Lease[Any], use: PoolUse) -> None:
        self._lease = lease
        self._use = use

    async def __aenter__(self) -> Held:
        lease = self._lease
        await lease.__aenter__()
        if lease.degraded:
            self._use.degraded_seen += 1
        return lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._lease.__aexit__(exc_type, exc, tb)


class PoolUse:
    """The tests' ``use`` on a pool; counts the degraded leases the tests saw."""

    def __init__(self, pool: MockPool) -> None:
        self.pool = pool
        self.degraded_seen = 0

    def __call__(self, name: str) -> _PoolLease:
        return _PoolLease(self.pool.acquire(name), self)


async def _run_one(use: Use, case: Case, out: RunOutcomes) -> None:
    out.started += 1
    outcome = Outcome.PASSED
    try:
        if case.fault == "cancel":
            task = asyncio.create_task(run_case(use, case), name=f"stress {case.id}")

            def deliver(task: asyncio.Task[None] = task) -> None:
                if task.cancel():  # False once the test has finished
                    out.cancels_delivered += 1

            timer = asyncio.get_running_loop().call_later(case.cancel_after_s, deliver)
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled() or _cancelling():
                    raise
                outcome = Outcome.CANCELLED
            finally:
                timer.cancel()
        else:
            await run_case(use, case)
    except InjectedError as exc:
        if case.fault == "raise" and case.id in str(exc):
            outcome = Outcome.INJECTED
        else:
            outcome = Outcome.FAILED
            out.failures.append((case.id, f"unexpected {exc!r}"))
    except Exception as exc:
        outcome = Outcome.FAILED
        out.failures.append((case.id, f"{type(exc).__name__}: {exc}"))
    else:
        if case.fault == "raise":
            outcome = Outcome.FAILED
            out.failures.append((case.id, "the exception injected inside the lease did not come out"))
        elif case.fault == "discard" and outcome is Outcome.PASSED:
            out.discarded += 1
    out.counts[outcome] += 1


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def run_cases(
    cases: list[Case], use: Use, *, on_start: Callable[[RunOutcomes], None] | None = None
) -> RunOutcomes:
    """Start every test at once, wait for all; never raises for a test's failure."""
    out = RunOutcomes(total=len(cases))
    if on_start is not None:
        on_start(out)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for case in cases:
            tg.create_task(_run_one(use, case, out))
    out.wall_s = time.perf_counter() - started
    return out
