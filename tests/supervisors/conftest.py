"""Helpers for the supervisor tests: fake clocks, settling the loop, switchable doubles."""

from __future__ import annotations

import asyncio
import time

import anyio


class LoopClock:
    """The event loop's time as the pool's clock: under ``looptime`` it is virtual too, so the
    supervisors' schedules and the hooks' timeouts fast-forward together."""

    def now(self) -> float:
        loop = asyncio._get_running_loop()
        return loop.time() if loop is not None else time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def settle(rounds: int = 3) -> None:
    """Let every task run until all are blocked (explicit synchronisation, no real sleeps)."""
    for _ in range(rounds):
        await anyio.wait_all_tasks_blocked()
        await asyncio.sleep(0)


class Double:
    """A trivial test double with some state."""

    def __init__(self) -> None:
        self.state: dict[str, object] = {}

    def ping(self) -> bool:
        return True
