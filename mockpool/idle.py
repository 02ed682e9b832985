"""How long an event loop sat idle: waiting in its selector for I/O or a timer.

The sizing supervisor reads the loop's busy share as one minus its idle share. The loop
thread's CPU time over wall time reads low on a machine other processes load (the thread waits
for a CPU, runnable, and that counts as neither), and a loop that looks half idle gets more
instances that only cost their creation. Waiting in ``select`` with a timeout is the one state
in which the loop has nothing to run; it is measured by wrapping the selector's ``select`` of
loops that have one (asyncio's selector loops); others (uvloop, the proactor) return None and
the supervisor falls back to CPU time.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

__all__ = ("IdleMeter", "idle_meter")


class IdleMeter:
    """Seconds a loop spent waiting in ``select`` since the meter was installed."""

    __slots__ = ("idle_s",)

    def __init__(self) -> None:
        self.idle_s = 0.0


# One meter per loop, installed once: pools that share a loop share it (no nested wrappers).
_meters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleMeter] = weakref.WeakKeyDictionary()


def idle_meter(loop: asyncio.AbstractEventLoop) -> IdleMeter | None:
    """The idle meter of ``loop``, installed on first use; None when the loop has no selector."""
    meter = _meters.get(loop)
    if meter is not None:
        return meter
    selector = getattr(loop, "_selector", None)
    select: Callable[..., Any] | None = getattr(selector, "select", None)
    if selector is None or select is None:
        return None
    meter = IdleMeter()

    def timed_select(timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= 0:
            return select(timeout)  # callbacks are ready: a poll, not idle time
        started = perf_counter()
        try:
            return select(timeout)
        finally:
            meter.idle_s += perf_counter() - started

    selector.select = timed_select
    _meters[loop] = meter
    return meter
