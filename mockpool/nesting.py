"""Nested leases: which tasks hold a lease they queued for, so that a service whose waiters
hold one sees the queue behind them.

A test that holds one service while it leases another (``async with pool.acquire("app"),
pool.acquire("client"):``) queues at the second with the first in hand. The second service
then sees only the few tests that hold the first, never the hundreds queued for the first
behind them, which will each lease it in turn: sized on what it saw, it stayed small, and the
whole suite ran at its pace (1,199 such tests: 3.7-6.0 s where 1.5-2.1 s was possible). So the
slow path, and only it, records who holds what: a lease served at once was not queued for, and
a service that serves at once has no queue to tell of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ("Holds",)

S = TypeVar("S")


class Holds(Generic[S]):
    """The services (``S``) each task holds a lease of that it queued for.

    ``by_task`` maps a task to the one service it holds, or to a tuple of them when it holds
    several: one store and one lookup for the common case, on a path every queued acquire
    takes.
    """

    __slots__ = ("by_task",)

    def __init__(self) -> None:
        self.by_task: dict[asyncio.Task[Any], S | tuple[S, ...]] = {}

    def of(self, task: asyncio.Task[Any]) -> tuple[S, ...]:
        """What ``task`` holds (empty: nothing it queued for)."""
        held = self.by_task.get(task)
        if held is None:
            return ()
        return held if isinstance(held, tuple) else (held,)

    def add(self, task: asyncio.Task[Any], service: S) -> None:
        by_task = self.by_task
        held = by_task.get(task)
        if held is None:
            by_task[task] = service
        else:
            by_task[task] = (*held, service) if isinstance(held, tuple) else (held, service)

    def remove(self, task: asyncio.Task[Any], service: S) -> None:
        by_task = self.by_task
        held = by_task.get(task)
        if held is service:
            del by_task[task]
        elif isinstance(held, tuple) and service in held:
            rest = list(held)
            rest.remove(service)
            by_task[task] = rest[0] if len(rest) == 1 else tuple(rest)

    def clear(self) -> None:
        self.by_task.clear()

    def __len__(self) -> int:
        return sum(len(held) if isinstance(held, tuple) else 1 for held in self.by_task.values())
