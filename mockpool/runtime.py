"""The per-event-loop runtime: the task group that runs a pool's background work in one loop.

The pool's state (cores, instances, metrics) is loop-agnostic. What is bound to a loop (the
tasks that create, reset, recover and supervise) lives in a ``Runtime``: a host task owning an
anyio task group. ``pool.start()`` (``async with pool``) makes one for its loop; any other loop
gets one lazily on its first background need, and it ends when that loop closes, so a
session-wide pool serves tests that each run in their own loop (pytest-asyncio's default).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import aiorwlock
import anyio
from anyio.abc import TaskGroup

from .hooks import given


class _Resumable(Protocol):
    def resume_orphans(self) -> None: ...


class RuntimeOwner(Protocol):
    """What a runtime needs of its pool (the pool module imports this one, not the other way
    round)."""

    name: str

    @property
    def service_pools(self) -> Mapping[str, _Resumable]: ...
    def _start_supervisors(self, runtime: Runtime) -> None: ...
    def _runtime_ended(self, runtime: Runtime) -> None: ...


__all__ = ("Runtime",)


logger = logging.getLogger("mockpool")


class _Job:
    """A spawned task that must be settled if it never runs: its coroutine (made at spawn, so
    it can be closed unrun) and the ``on_drop`` callback."""

    __slots__ = ("coro", "on_drop")

    def __init__(self, on_drop: Callable[[], None] | None) -> None:
        self.on_drop = on_drop
        self.coro: Coroutine[Any, Any, Any] | None = None


class Runtime:
    """Background work of one pool in one event loop."""

    def __init__(self, pool: RuntimeOwner, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.tg: TaskGroup | None = None
        self._pending: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...], str | None]] = []
        #: Spawned jobs that have not taken their first step yet, and those under way.
        self._unstarted: set[_Job] = set()
        self._running: set[_Job] = set()
        #: Bare tasks started from loop callbacks (:meth:`start_task`), until they end.
        self._bare: set[asyncio.Task[Any]] = set()
        #: The loop thread's busy share over the last window (the sizing supervisor's sample).
        self.busy: float | None = None
        #: The share of the loop's time one held lease takes (the sizing supervisor measures
        #: it), and the CPU sync factories took so far (not the leases').
        self.lease_cost: float | None = None
        #: When that window began, on the pool's clock.
        self.load_since: float | None = None
        self.creation_cpu = 0.0
        #: Seconds (on the pool's clock) sync factories held the loop so far: no lease ran.
        self.creation_blocked = 0.0
        #: Start the supervisors at once (the loop has lived long enough already).
        self.supervise_now = False
        self.ready = asyncio.Event()
        self.finished = asyncio.Event()
        #: Guards structural changes that span awaits (unregister, resize, recovered swaps);
        #: never taken on the acquire/release path. Per loop: asyncio locks are loop-bound.
        self.structure = aiorwlock.RWLock()
        self._host = loop.create_task(self._run(), name=f"mockpool[{pool.name}] runtime")
        # Not in _run's finally: a host cancelled before its first step never runs it, and
        # whoever waits on ``finished`` (aclose) would wait for ever.
        self._host.add_done_callback(self._ended)

    def spawn(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        on_drop: Callable[[], None] | None = None,
        name: str | None = None,
    ) -> None:
        """Run ``fn(*args)`` in this runtime's task group (as soon as it exists).

        If the runtime ends before the task took its first step (its loop closed right after
        the spawn), the task's coroutine is closed unrun and ``on_drop`` runs instead: what the
        task would have settled (a reserved creation, an entry being reset or recovered) must
        not stay reserved for ever.
        """
        # anyio 4.16 wraps each task's coroutine in its own; a task cancelled before its first
        # step never starts ours, which would then warn "never awaited" (fatal under
        # filterwarnings = error). Made here, it can be closed unrun when the runtime ends.
        job = _Job(on_drop)
        coro = job.coro = self._run_job(job, fn, args)
        self._unstarted.add(job)
        fn, args = given, (coro,)
        tg = self.tg
        if tg is not None:
            tg.start_soon(fn, *args, name=name)
        else:
            self._pending.append((fn, args, name))

    def start_task(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """Run ``fn(*args)`` in a bare task of this runtime's loop, for work that a loop
        callback starts (anyio's task group takes new tasks from a task only). It is settled
        with the runtime: cancelled when the runtime ends, closed unrun (and kept referenced)
        when its loop was closed without cancelling it. Untracked, a stall check due as
        pytest-asyncio-cooperative's loop closed warned "never awaited" (an error under
        ``filterwarnings = error``)."""
        task = self.loop.create_task(fn(*args), name=name)
        self._bare.add(task)
        task.add_done_callback(self._bare.discard)

    async def _run_job(
        self, job: _Job, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]
    ) -> None:
        self._unstarted.discard(job)
        self._running.add(job)
        try:
            await fn(*args)
        finally:
            self._running.discard(job)

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                pending, self._pending = self._pending, []
                for fn, args, name in pending:
                    tg.start_soon(fn, *args, name=name)
                for svc in list(self.pool.service_pools.values()):
                    svc.resume_orphans()
                self.pool._start_supervisors(self)
                self.ready.set()
                await anyio.sleep_forever()
        finally:
            self.tg = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tg = None
        # Every child has ended by now (the task group waited); the jobs still here never ran.
        self._settle(self._unstarted)
        self._unstarted = set()
        for bare in list(self._bare):
            bare.cancel()  # the loop runs on: an unstarted one ends at its first step
        self.ready.set()
        self.finished.set()
        self.pool._runtime_ended(self)
        if not task.cancelled() and task.exception() is not None:
            logger.error("pool %r: runtime ended with an error", self.pool.name, exc_info=task.exception())

    def abandon(self) -> None:
        """Settle the work of a runtime whose loop was closed without cancelling its tasks
        (pytest-asyncio 0.23's ``event_loop`` fixture does that): they will never run again.

        Jobs that never started are closed unrun; jobs frozen mid-way are left as they are
        (closing them would run their cleanup a second time, outside any loop) and kept
        referenced by the pool, so that the garbage collector never finalizes them either.
        Both kinds hand what they held back through ``on_drop``.
        """
        self.tg = None
        # Forgotten first: what a drop hands back may start work (a member's async reset),
        # which settles the closed loops again; this runtime must not be among them twice.
        self.pool._runtime_ended(self)
        jobs = self._unstarted | self._running
        self._unstarted, self._running = set(), set()
        self._settle(jobs)
        # Kept in _bare, so referenced for as long as the abandoned runtime is; the host too
        # never ran if the loop closed in the step that started it.
        for bare in (self._host, *self._bare):
            coro = bare.get_coro()
            if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                coro.close()
                # It can never run now, and nothing is lost: collected, it must not log "Task
                # was destroyed but it is pending!" (as run_until_complete marks the task it
                # made when the loop stopped first).
                bare._log_destroy_pending = False  # type: ignore[attr-defined]

    def _settle(self, jobs: set[_Job]) -> None:
        for job in jobs:
            if job.coro is not None and inspect.getcoroutinestate(job.coro) == inspect.CORO_CREATED:
                job.coro.close()
            if job.on_drop is None:
                continue
            try:
                job.on_drop()
            except Exception:
                logger.exception("pool %r: settling a background task that did not finish", self.pool.name)

    def cancel(self) -> None:
        """End this runtime: its supervisors and any background work still running."""
        self._host.cancel()

    @property
    def running(self) -> bool:
        return not self._host.done()

    async def wait_ready(self) -> None:
        await self.ready.wait()
