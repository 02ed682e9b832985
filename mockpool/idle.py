"""How long an event loop sat idle: waiting in its selector for I/O or a timer, or turning
over with next to nothing to run.

The sizing supervisor reads the loop's busy share as one minus its idle share. The loop
thread's CPU time over wall time reads low on a machine other processes load (the thread waits
for a CPU, runnable, and that counts as neither), and a loop that looks half idle gets more
instances that only cost their creation. Waiting in ``select`` with a timeout is the one state
in which the loop has nothing at all to run; it is measured by wrapping the selector's
``select`` of loops that have one (asyncio's selector loops); others (uvloop, the proactor)
return None and the supervisor falls back to CPU time.

A loop can also never wait and still have room: pytest-asyncio-cooperative's runner waits for
its tests with a negative timeout (``asyncio.wait(..., timeout=-600)`` for its first ten
minutes), so it wakes at every turn and the loop polls without end. Read as busy, that loop was
saturated, and 600 tests each awaiting 20 ms ran on the 4 instances the pool made before the
first reading (5 s, where a second was enough). So a turn of the loop, from one ``select`` to
the next, that took less than :data:`SHORT_TURN_S` counts as idle too: a test that became
ready then would have waited less than that. Turns of real work are longer: a suite of
CPU-bound tests (the stress suite) spends 82 % of its time in turns of 1 ms or more and nearly
none under 0.25 ms; the cooperative runner's polling, 85 % in turns under 0.25 ms.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

__all__ = ("SHORT_TURN_S", "IdleMeter", "idle_meter")

#: A turn of the loop shorter than this (from one ``select`` to the next) counts as idle.
SHORT_TURN_S = 0.00025


class IdleMeter:
    """Seconds a loop spent idle since the meter was installed: waiting in ``select``, or in
    turns shorter than :data:`SHORT_TURN_S`."""

    __slots__ = ("idle_s", "turn_began")

    def __init__(self) -> None:
        self.idle_s = 0.0
        #: When the current turn began: the last ``select`` returned.
        self.turn_began = perf_counter()


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
        started = perf_counter()
        turn = started - meter.turn_began
        if turn < SHORT_TURN_S:
            meter.idle_s += turn  # a poll, or a sliver of work: the loop had room
        if timeout is not None and timeout <= 0:
            try:
                return select(timeout)  # callbacks are ready: a poll, no wait
            finally:
                meter.turn_began = perf_counter()
        try:
            return select(timeout)
        finally:
            meter.turn_began = ended = perf_counter()
            meter.idle_s += ended - started

    selector.select = timed_select
    _meters[loop] = meter
    return meter
