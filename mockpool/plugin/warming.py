"""Warming: creating ahead what the tests will acquire. When the pool is first asked for, each
service's ``min_size``, or the size history says it settled at (in one process: one xdist
worker's pool) for the services the collected tests use. As each test starts, the pool is
asked for what it and the next test will acquire (``pool.expect``, in ``coroutine``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pool import MockPool
    from .state import State


def warm(state: State, pool: MockPool) -> None:
    """Pre-create, per service: ``min_size``, or the size history says it settled at for the
    services the collected tests use, whichever is larger (``MockPool.warm_targets``).

    What the tests use is ``state.planned``: their marks, what history says each used (a test
    it knows to use nothing adds nothing, so a run of such tests warms nothing), and what was
    leased outside tests (wider fixtures, threads), which no subset of the tests leaves out.
    When no collected test is known, everything history knows is warmed.

    The size is that of one process's pool (under xdist, the largest a worker settled at), so
    it holds whatever the worker count: tests that one process runs one at a time settle at
    what one test holds at once. The peak concurrency it replaced is summed over the workers:
    a single-process run after a 4-worker one warmed four times what it needed.
    """
    history = pool.history
    targets: dict[str, int] = {}
    for name, stats in pool.stats().items():
        want = stats.min_size
        if history.runs and (name in state.planned or not state.known):
            want = max(want, history.settled(name))
        targets[name] = min(want, stats.max_size)
    targets = {name: n for name, n in targets.items() if n > 0}
    if not targets:
        return
    state.warmed = targets
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # No loop is running (every runner but cooperative): warm now, in a private loop,
        # and wait. Instances are loop-agnostic; what binds to a loop is rebuilt per loop.
        # A loop_factory keeps asyncio.Runner from resetting the thread's current loop.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(pool.warm(targets))
    else:
        # Cooperative calls fixtures inside its loop: create in the background there, and
        # record the warm-up once those creations end, as a warm in a private loop does (the
        # report said nothing was warmed while the summary listed what was).
        started = pool.clock.now()
        for name, count in targets.items():
            pool.expect([name], count=count)
        pool.spawn(_record_warm_up, pool, list(targets), started)


async def _record_warm_up(pool: MockPool, names: list[str], started: float) -> None:
    """Once the creations in flight for ``names`` have ended: ``pool.warmed`` and
    ``pool.warmup_s``, as :meth:`MockPool.warm` sets them."""
    services = pool.service_pools
    for name in names:
        await services[name].creations_settled()
    pool.warmed = {name: services[name].core.size for name in names}
    pool.warmup_s = pool.clock.now() - started
