"""Cost per acquire+release: mockpool against a bare ``asyncio.Queue`` pool.

Run: ``python benchmarks/acquire.py`` (``--quick`` for a short run). Prints, for each scenario,
microseconds per acquire+release and the ratio to the Queue pool:

- uncontended: one task, an idle instance always ready;
- 200 tasks sharing 16 instances, and 2,000 tasks sharing 16 (each holds across one yield);
- the scaling ratio: per-op cost at 2,000 tasks over that at 200 (flat is 1.0).

Each figure is the best of several rounds, so a noisy neighbour inflates none of them.
``--cpu-time`` times the process's CPU time instead of the wall clock: on a loaded machine
(other jobs on the same cores) it moves far less from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool, ServiceSpec

#: What the scenarios time: wall time by default, CPU time with ``--cpu-time``.
_clock = time.perf_counter


class QueuePool:
    """The baseline: a bare asyncio.Queue of instances, as an async context manager."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        for _ in range(size):
            self.queue.put_nowait(object())

    def acquire(self) -> QueueLease:
        return QueueLease(self.queue)


class QueueLease:
    __slots__ = ("item", "queue")

    def __init__(self, queue: asyncio.Queue[object]) -> None:
        self.queue = queue

    async def __aenter__(self) -> object:
        self.item = await self.queue.get()
        return self.item

    async def __aexit__(self, *exc: object) -> None:
        self.queue.put_nowait(self.item)


async def _mockpool(size: int) -> MockPool:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="x", factory=object, min_size=size, max_size=size))
    await pool.start()
    return pool


async def uncontended(kind: str, ops: int) -> float:
    if kind == "queue":
        acquire: Callable[[], Any] = QueuePool(1).acquire
        pool = None
    else:
        pool = await _mockpool(1)
        acquire = lambda: pool.acquire("x")
    gc.collect()
    start = _clock()
    for _ in range(ops):
        async with acquire():
            pass
    elapsed = _clock() - start
    if pool is not None:
        pool.check_invariants()
        await pool.aclose()
    return elapsed / ops


async def contended(kind: str, tasks: int, size: int, ops_per_task: int) -> float:
    if kind == "queue":
        acquire: Callable[[], Any] = QueuePool(size).acquire
        pool = None
    else:
        pool = await _mockpool(size)
        acquire = lambda: pool.acquire("x")

    async def worker() -> None:
        for _ in range(ops_per_task):
            async with acquire():
                await asyncio.sleep(0)

    gc.collect()
    start = _clock()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = _clock() - start
    if pool is not None:
        pool.check_invariants()
        await pool.aclose()
    return elapsed / (tasks * ops_per_task)


def best(rounds: int, run: Callable[[], Awaitable[float]]) -> float:
    return min(asyncio.run(run()) for _ in range(rounds))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer operations and rounds")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time CPU time, not wall time (steadier on a busy machine)"
    )
    args = parser.parse_args()
    global _clock
    if args.cpu_time:
        _clock = time.process_time
    rounds = 3 if args.quick else 5
    ops = 50_000 if args.quick else 200_000
    total = 40_000 if args.quick else 200_000

    rows: list[tuple[str, float, float]] = []
    for label, run in (
        ("uncontended", lambda kind: uncontended(kind, ops)),
        ("200 tasks / 16 instances", lambda kind: contended(kind, 200, 16, total // 200)),
        ("2,000 tasks / 16 instances", lambda kind: contended(kind, 2000, 16, total // 2000)),
    ):
        queue = best(rounds, functools.partial(run, "queue"))
        ours = best(rounds, functools.partial(run, "mockpool"))
        rows.append((label, ours, queue))

    timer = "CPU time" if args.cpu_time else "wall time"
    print(f"acquire+release, best of {rounds} rounds, {timer} (Python {sys.version.split()[0]})")
    print(f"{'scenario':<28} {'mockpool':>12} {'Queue pool':>12} {'ratio':>7}")
    for label, ours, queue in rows:
        print(f"{label:<28} {ours * 1e6:>9.2f} us {queue * 1e6:>9.2f} us {ours / queue:>6.2f}x")
    scaling = rows[2][1] / rows[1][1]
    print(f"{'scaling 2,000 vs 200 tasks':<28} {scaling:>11.2f}x {rows[2][2] / rows[1][2]:>11.2f}x")


if __name__ == "__main__":
    main()
