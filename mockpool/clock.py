"""Time, injected: supervisors and metrics read time only through a :class:`Clock`.

Acquire and hook timeouts use anyio cancel scopes, which follow the event loop's time, so a
fake-time loop (the ``looptime`` plugin) fast-forwards them; everything else the pool times or
schedules goes through the clock given to ``MockPool(clock=...)``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ("Clock", "FakeClock", "SystemClock")


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in seconds and a way to sleep on it."""

    def now(self) -> float:
        """Return the current time in seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real monotonic clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to: ``advance(seconds)`` wakes due sleepers.

    Sleepers may live on any event loop; ``advance`` is called from the loop that runs them.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        try:
            await fut
        finally:
            fut.cancel()  # no-op when woken; lets advance() skip it when we were cancelled

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def next_deadline(self) -> float | None:
        """The earliest deadline among live sleepers, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None
