"""Background work counted by the event loop that runs it, to tell what a *paused* loop holds up.

A loop is paused when it is open but not running: pytest-asyncio keeps a session- or
module-scoped loop so while a function-scoped test runs in a loop of its own, and a test that
drives a loop with ``run_until_complete`` leaves it so between calls. Work the pool started in
it (a creation that warming ahead asked for, or that a waiter which gave up left behind; a
recovery) goes on only when that loop runs again, which may be never. Counted as covering a
waiter in another loop, it made that waiter start nothing and wait until its timeout. A
service keeps one :class:`LoopWork` for its creations and one for its recoveries; the waiting
path reads :meth:`LoopWork.paused` only when work is in flight in some other loop.

A loop blocked in another thread (a sync call into Starlette's TestClient) is running, so it
is not counted here: its creations that have not started yet are taken over by the waiter's
loop instead (``InstanceHooks.take_over_creations``). A closed loop is not counted either: its
work is settled when the pool next looks (``MockPool.settle_closed_loops``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref

__all__ = ("LoopWork",)


class LoopWork:
    """How many jobs of one kind run in each event loop now."""

    __slots__ = ("_by_loop", "_lock")

    def __init__(self) -> None:
        # Weak: a loop closed with a job frozen in it (never finished, never cancelled) is
        # forgotten with it.
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def begin(self) -> asyncio.AbstractEventLoop:
        """A job starts in the running loop; returns that loop, for :meth:`end`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._by_loop[loop] = self._by_loop.get(loop, 0) + 1
        return loop

    def end(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            left = self._by_loop.get(loop, 0) - 1
            if left > 0:
                self._by_loop[loop] = left
            else:
                self._by_loop.pop(loop, None)

    def paused(self) -> int:
        """The jobs in flight in loops that are open and not running: frozen until their loop
        runs again. Cheap when no job runs outside the caller's loop (the usual case)."""
        by_loop = self._by_loop
        if not by_loop:
            return 0
        if len(by_loop) == 1:
            running = asyncio._get_running_loop()
            if running is not None and running in by_loop:
                return 0  # all of it runs in the caller's loop: the usual case under load
        with self._lock:
            return sum(
                count for loop, count in by_loop.items() if not loop.is_running() and not loop.is_closed()
            )
