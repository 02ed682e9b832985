"""Waiting for an instance: the waiters' futures, the deadline timers, the stall check.

A :class:`Waiting` mixin of :class:`~mockpool.service.ServicePool`. ``wait_for_entry`` (kept in
:mod:`mockpool.service`, next to the rest of the acquire path) queues a waiter in the core and
awaits its future; what can end that wait other than an instance is here:

- the deadline timers: one per service and event loop, armed for the earliest deadline; it
  sets the waiter's future to :class:`~mockpool.errors.AcquireTimeout` and never cancels the
  task, so a timeout cannot race a cancellation;
- the stall check: while waiters go uncovered (no creation or recovery on its way for them),
  it asks the sizing controller for creations again after a stall's time, as a stall if no
  lease ended meanwhile (liveness without supervisors), and re-arms for as long as they wait;
- a waiter that gives up (``_abandon``), and waiters failed at once when nothing can serve them.

Futures may belong to another thread's loop (a pool reached from Starlette's TestClient): they
are set there, with ``call_soon_threadsafe``. An entry's own hand-over to a waiter is the core's
(:meth:`~mockpool.core.ServiceCore.recycle` and the other placing steps).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import AcquireTimeout
from .sizing import SATURATED, members_room, stall_s

if TYPE_CHECKING:
    from .core import ServiceCore, Waiter
    from .metrics import ServiceMetrics
    from .paused import LoopWork

__all__ = ("STALLS_TO_EVICT", "STALLS_WHEN_SATURATED", "Waiting")

#: Stall checks in a row with no lease ended before a stalled waiter may evict another
#: service's idle instance at the pool-wide cap.
STALLS_TO_EVICT = 4
#: Stall checks in a row that count as a stall at all on a saturated loop.
STALLS_WHEN_SATURATED = 20
#: A service at or over its share of ``max_total`` evicts only after this many times as long.
OVER_SHARE_FACTOR = 4


class _LoadPort(Protocol):
    """What the stall check reads of the pool (:class:`~mockpool.service.PoolPort` has it)."""

    def loop_load(self) -> tuple[float | None, float | None, float | None]: ...
    def fair_share(self, svc: Any) -> int | None: ...
    def leases_ended(self) -> int: ...
    def start_task(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None: ...


class Waiting:
    """The waiting half of a service pool (a mixin of :class:`~mockpool.service.ServicePool`)."""

    if TYPE_CHECKING:
        # What this part reads of the service pool, which defines it.
        name: str
        core: ServiceCore
        metrics: ServiceMetrics
        members: tuple[Waiting, ...]
        last_error: BaseException | None
        creation_failures: int
        creations_in: LoopWork

        @property
        def pool(self) -> _LoadPort: ...
        def ensure_creations(self, *, stalled: bool = False, evict: bool = False) -> None: ...
        def shortfall(self) -> int: ...
        def paused_work(self) -> int: ...
        def parked_holders(self) -> dict[Any, int]: ...

    def __init__(self) -> None:
        super().__init__()  # the next mixin's state (cooperative: ServicePool lists several)
        #: ``creations_settled`` callers waiting for the creations in flight to end.
        self._settled_waiters: list[asyncio.Future[None]] = []
        #: The stall check of each loop with uncovered waiters.
        self._stall_checks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StallCheck] = (
            weakref.WeakKeyDictionary()
        )
        #: The deadline timer of each loop with waiters that have a timeout, and when it fires.
        self._timers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.TimerHandle, float]
        ] = weakref.WeakKeyDictionary()

    # == deadlines ============================================================================

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """(Re-)arm the timer of ``loop`` (called in that loop only)."""
        armed = self._timers.get(loop)
        if armed is not None:
            armed[0].cancel()
        self._timers[loop] = (loop.call_at(deadline, self._on_timer, loop), deadline)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Expire the waiters of ``loop`` whose deadline has passed; re-arm for the next."""
        self._timers.pop(loop, None)
        core = self.core
        if core.leased:
            # Before failing anyone: an instance may be stranded with a waiter of a loop that
            # closed since (``ServiceCore.settle_transit``), and serve the first in line.
            core.settle_transit()
        for waiter in core.due_waiters(loop, loop.time()):
            self._expire(waiter)
        deadline = core.next_deadline(loop)
        if deadline is not None:
            self._arm_timer(loop, deadline)

    def _expire(self, waiter: Waiter) -> None:
        fut = waiter.future
        core = self.core
        if fut.done() or not core.remove_waiter(waiter):
            return  # served (or being served from another thread) or gone already
        # The counts as the waiter saw them, itself included among the waiting.
        error = AcquireTimeout(
            self.name,
            waiter.timeout if waiter.timeout is not None else 0.0,
            size=core.size,
            in_use=core.in_use,
            waiting=core.waiting + 1,
            max_size=core.max_size,
            creating=core.creating,
            max_total=core.budget.max_total,
            advice=self.why_no_instance(),
        )
        # Counted as a timeout by the waiting task (wait_for_entry), if that is what it raises.
        fut.set_exception(error)

    def why_no_instance(self) -> str:
        """Which bound kept a waiter waiting, and what to change (for ``AcquireTimeout``)."""
        core = self.core
        paused = self.paused_work() if core.creating or core.recovering else 0
        if paused and core.size + core.creating >= core.max_size:
            return (
                f"{paused} instance(s) are being created or recovered in an event loop that is not "
                "running (open, between its run_until_complete calls: pytest-asyncio's session- or "
                "module-scoped loop while a function-scoped test runs); they go on only when that "
                f"loop runs again, and they hold their places under max_size={core.max_size}: raise "
                "max_size, or run the tests that use this service in one loop scope"
            )
        # At max_size with no instance held by a test, only work on its way can serve (the
        # first creation, with timeout=0): said below, not "tests that hold leases too long".
        held = core.in_use > core.lent or not (core.creating or core.recovering or core.checking)
        if core.size + core.creating >= core.max_size and held:
            return (
                f"the service is at max_size={core.max_size}: raise max_size, pass a longer "
                "timeout=, or look for tests that hold leases too long"
            )
        if not core.budget.has_room():
            return (
                f"the pool is at max_total={core.budget.max_total} instances across its services: "
                "raise max_total, or lower other services' max_size"
            )
        if not core.budget.has_room(core):
            return (
                f"the rest of the pool's max_total={core.budget.max_total} is kept for the first "
                "instance of services that have none yet: raise max_total"
            )
        for member in self.members:
            mc = member.core
            if not mc.idle and mc.size + mc.creating >= mc.max_size:
                return (
                    f"member {member.name!r} is at its max_size={mc.max_size}, shared by its own "
                    f"leases and the groups built on it: raise {member.name!r}'s max_size"
                )
            if members_room([(mc.max_size, mc.lent, member.metrics.acquisitions > 0)]) <= 0:
                return (
                    f"the groups built on member {member.name!r} keep {mc.lent} of its "
                    f"max_size={mc.max_size}; the other half is kept for tests that lease "
                    f"{member.name!r} directly: raise {member.name!r}'s max_size, or pass a longer "
                    "timeout="
                )
        if core.creating:
            return (
                f"{core.creating} instance(s) were being created and none was ready in time: the "
                "factory is slow; pass a longer timeout= or make the factory faster"
            )
        if core.recovering or core.checking:
            last = self.last_error
            cause = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
            return (
                f"{core.recovering + core.checking} instance(s) were being checked or recovered and "
                f"none came back in time{cause}; fix what breaks them, or pass a longer timeout="
            )
        return "no instance could be made in time; see the service's last error in pool.report()"

    # == waiters that give up or cannot be served =============================================

    def _abandon(self, waiter: Waiter) -> None:
        """The waiting task stopped waiting (cancelled, timed out, failed): nothing may be lost."""
        core = self.core
        core.remove_waiter(waiter)
        fut = waiter.future
        if fut.done():
            if not fut.cancelled() and fut.exception() is None:
                # The race: an entry was handed over, then the task was cancelled before it
                # ran. Pass the entry on unchanged (unless the pool took it back already: the
                # task is being collected long after its loop closed); the cancellation still
                # propagates.
                core.give_back_from(waiter, fut.result())
        elif not fut.get_loop().is_closed():
            # (A task of a closed loop is being collected: cancelling would call into the loop.)
            fut.cancel()
        # Creations already started for this waiter go on: their instances join the pool.

    def fail_waiters_since(self, error: BaseException, started: float | None) -> None:
        """Fail the waiters already queued when the failed attempt began (``started``); later
        ones get an attempt of their own, since the fault may have cleared meanwhile."""
        core = self.core
        if started is None:
            core.fail_waiters(error)
            return
        stale = sum(1 for w in core.waiters if w.enqueued_at <= started and not w.future.done())
        if stale:
            core.fail_waiters(error, limit=stale)
        if core.waiters:
            self.ensure_creations()

    # == the stall check ======================================================================

    def _arm_stall_check(self, loop: asyncio.AbstractEventLoop, streak: int = 0, quiet: int = 0) -> None:
        """Look again after a stall's time: uncovered waiters with no lease ended meanwhile
        get a creation (liveness; works without supervisors). ``streak``: stalls in a row;
        ``quiet``: those with no lease of any service ended either."""
        core = self.core
        # Instances lent to groups are no leases that end: with none held by a test, no release
        # is on its way to measure a stall by, and the waiters wait only for room to create
        # (at max_total, another service's release may make it): look again at the shortest
        # stall. Measured on the holds, a waiter of a service with 10 s holds looked again
        # 20 s after another service's idle instance could have made room.
        held = core.in_use - core.lent
        hold = self.metrics.hold_ewma if self.metrics.holds.count and held > 0 else None
        delay = stall_s(hold, held, self.creation_failures)
        timer = loop.call_later(delay, self._stall_due, loop)
        self._stall_checks[loop] = _StallCheck(
            self.metrics.holds.count,
            self.pool.leases_ended(),
            streak,
            quiet,
            self.core.in_use > 0,
            timer,
        )

    def watch_shortfall(self) -> None:
        """Waiters of the running loop may go uncovered with no check armed to look again (a
        creation for them failed; a recovery failed and destroyed its instance): make sure a
        stall check will, soon when nothing is held for them (see :meth:`_look_again`)."""
        loop = asyncio._get_running_loop()
        if loop is not None:
            self._look_again(loop)

    def watch_lent(self) -> None:
        """An instance was lent to a group while waiters wait: look again after a stall, since
        the group instance may go idle holding it (``reclaim_if_only_lent`` then takes it)."""
        self._look_again(asyncio.get_running_loop())

    def _look_again(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the stall check of ``loop``'s uncovered waiters if none is. With nothing left
        held by a test, one armed for a stall measured on a holder that is gone (twice a long
        hold: it lent its instance to a group, or its instance broke and its recovery failed)
        is brought forward: no release is on its way, and the waiters wait only for a creation
        (from a factory that failed and may work again), or for room."""
        core = self.core
        if self.shortfall() <= 0 or not core.waits_in(loop):
            return
        armed = self._stall_checks.get(loop)
        if armed is None:
            self._arm_stall_check(loop)
        elif core.in_use <= core.lent and armed.timer is not None:
            soonest = stall_s(None, 0, self.creation_failures)
            if armed.timer.when() > loop.time() + soonest:
                armed.timer.cancel()
                self._arm_stall_check(loop, armed.streak, armed.quiet)

    def _stall_due(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.core.closed:
            self._stall_checks.pop(loop, None)
            return
        # In a task: creations are spawned into the runtime's task group, which anyio allows
        # from a task only, not from a bare loop callback.
        self.pool.start_task(self._stall_check, loop, name=f"mockpool {self.name} stall check")

    async def _stall_check(self, loop: asyncio.AbstractEventLoop) -> None:
        armed = self._stall_checks.pop(loop, None)
        if armed is None:
            armed = _StallCheck(0, 0, 0, 0, False)
        streak, quiet = armed.streak, armed.quiet
        core = self.core
        if core.closed or self.shortfall() <= 0:
            return
        # A stall is an instance held for the whole check with no lease ended. With nothing held
        # when it was armed, the waiters waited for creations, and the holders now got their
        # instances less than a stall ago: a warm run's first tests, served by the creations
        # warming started, read as stalled and made one instance past the settled size.
        stalled = armed.held and self.metrics.holds.count == armed.released
        busy, _, _ = self.pool.loop_load()
        saturated = busy is not None and busy >= SATURATED
        if stalled and saturated and self._holders_advance():
            # On a loop with idle time another instance still runs tests sooner: there the
            # stall stands (tests awaiting I/O in their leases ran 15 % slower without it).
            stalled = False
        streak = streak + 1 if stalled else 0
        quiet = quiet + 1 if stalled and self.pool.leases_ended() == armed.pool_released else 0
        # On a saturated loop a release is slow because other tests run, not because the
        # holders wait for the waiters: a stall counts there only when it lasts (a second or
        # so). Evicting another service's idle instance too waits for a lasting stall: a slow
        # release is no reason to destroy what another service will need again.
        need = STALLS_WHEN_SATURATED if saturated else STALLS_TO_EVICT
        lasting = streak >= need
        if lasting:
            # Under max_total, a lasting stall takes another service's instance while this one
            # is under its fair share. At or over it, only after a stall four times as long with
            # no lease ended anywhere in the pool all that time: then the holders may wait for
            # this service itself (a test holding one lease asks for a second). While other
            # services' leases end, the holders most likely wait for those (nested leases), and
            # evicting would only move instances between services, destroying what was made
            # (churn), for tests that are served anyway.
            share = self.pool.fair_share(self)
            if share is not None and core.size + core.creating >= share:
                lasting = quiet >= OVER_SHARE_FACTOR * need
        self.ensure_creations(stalled=stalled and (lasting or not saturated), evict=lasting)
        if self.shortfall() > 0 and core.waits_in(loop):
            self._arm_stall_check(loop, streak, quiet)

    def _holders_advance(self) -> bool:
        """True when every test holding an instance here waits in another service's queue
        (a nested lease) that moves: a lease ended there within that service's own stall time
        (:meth:`~mockpool.service.ServicePool.advancing`). Those holders are in line, and
        release here once served. (1,199 stress tests, some holding youtube while they queued
        for a device session behind 250 others: each lasting stall made youtube one more
        autospec'd client of 50-80 ms, which ran no test sooner on the saturated loop.) A
        holder waiting for anything else, or in a queue that does not move, leaves it a stall:
        the holders may wait for the waiters."""
        parked = self.parked_holders()
        if not parked or sum(parked.values()) < self.core.in_use - self.core.lent:
            return False
        return all(svc.advancing() for svc in parked)

    # == creations settled ====================================================================

    async def creations_settled(self) -> None:
        """Return once the creations in flight now have ended (``warm`` waits so for the ones
        it did not start: the scaling supervisor's ``min_size`` floor starts them too).

        Only those: creations started later are not waited for. A failing factory that the
        floor keeps restarting would otherwise keep a creation in flight for ever, and
        ``start()`` would never return. Nor those frozen in a paused loop (open, not running:
        :mod:`mockpool.paused`): they end only when that loop runs again, maybe never.
        """
        core = self.core
        target = core.creations_begun
        while core.creations_ended + self.creations_in.paused() < target:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settled_waiters.append(fut)
            await fut

    def _wake_settled(self) -> None:
        """A creation ended: let ``creations_settled`` callers check whether theirs have."""
        if self._settled_waiters:
            waiters, self._settled_waiters = self._settled_waiters, []
            for fut in waiters:
                if not fut.done() and not fut.get_loop().is_closed():
                    try:
                        fut.get_loop().call_soon_threadsafe(_settle, fut)
                    except RuntimeError:
                        pass  # that loop closed since it was looked at: nobody waits there


@dataclass(slots=True)
class _StallCheck:
    """A stall check armed for one loop (its timer is cancelled only to be brought forward:
    one due after the waiters left finds no shortfall and ends)."""

    #: Leases ended when it was armed: this service's, and the pool's.
    released: int
    pool_released: int
    #: Stalls in a row so far: this service's, and the pool's (no lease of any service ended).
    streak: int
    quiet: int
    #: An instance was held when it was armed.
    held: bool
    #: Its timer (None: a check run without one).
    timer: asyncio.TimerHandle | None = None


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
