"""``ServicePool``: one service's pool. It owns the :class:`~mockpool.core.ServiceCore` and runs
the hooks (factory, reset, health, snapshot/restore, destroy) outside it.

This module holds the acquire and release paths (the hot path's slow half: ``Lease`` takes an
idle instance straight from the core) and the decision to create. The rest is in a mixin each:
:mod:`mockpool.waiting` (deadline timers, the stall check, futures set across threads),
:mod:`mockpool.instances` (creating, resetting and destroying instances: the user's hooks) and
:mod:`mockpool.recovery_handoff` (sending entries to the recovery ladder; orphans).

The cancellation rule, applied here and in the mixins: whatever interrupts a step, the
instance goes back (to the next waiter, to idle or to recovery) and the original cancellation
propagates. Async hooks run in background tasks of the pool's runtime, never in the task that
released the lease, so a cancellation of that task (even a native ``Task.cancel()``, which
pierces anyio's shields) cannot strand an instance half-reset.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .core import Entry, EntryState, ServiceCore, Waiter
from .errors import AcquireTimeout, PoolClosedError
from .hooks import call_hook, running_loop
from .instances import CpuMeter, InstanceHooks
from .isolation import IsolationError
from .metrics import (
    HANDOFF,
    HIT,
    MISS,
    RECOVERY_TIERS,
    LoopBlocks,
    PoolStats,
    ServiceMetrics,
    TierCounts,
    format_error,
)
from .recovery_handoff import RecoveryHandoff
from .sizing import LimitState, SizingInput, creations, members_room, stall_s
from .waiting import Waiting

if TYPE_CHECKING:
    from .clock import Clock
    from .core import Budget
    from .nesting import Holds
    from .spec import ServiceSpec

__all__ = ("CpuMeter", "HookStep", "LeaseState", "MemberPath", "PoolPort", "Recover", "ServicePool")

logger = logging.getLogger("mockpool")


class LeaseState(Protocol):
    """What a service reads and writes on a lease it serves (a :class:`~mockpool.lease.Lease`;
    the lease module imports this one, not the other way round)."""

    _entry: Entry | None
    _timeout: float | None
    _served: int
    #: The wait recorded for it once served (the slow path sets it; see ``unlease``).
    _waited: float
    #: The task that queued for it and holds it (the slow path sets it; see ``Holds``).
    _holder: asyncio.Task[Any] | None


class PoolPort(Protocol):
    """What a service needs of its pool: the narrow interface :class:`~mockpool.MockPool`
    offers it (the pool module imports this one, not the other way round)."""

    name: str
    clock: Clock
    isolation_verify: bool
    track_leases: bool
    default_timeout: float | None
    budget: Budget
    blocks: LoopBlocks
    service_pools: dict[str, ServicePool]
    holds: Holds[ServicePool]

    @property
    def closed(self) -> bool: ...
    def spawn(
        self, fn: Callable[..., Any], *args: Any, on_drop: Callable[[], None] | None = None
    ) -> None: ...
    def make_room(self, svc: ServicePool, *, lasting: bool = False) -> bool: ...
    def settle_closed_loops(self) -> None: ...
    def end_closed_holders(self) -> None: ...
    def loop_load(self) -> tuple[float | None, float | None, float | None]: ...
    def current_runtime(self) -> CpuMeter | None: ...
    def fair_share(self, svc: ServicePool) -> int | None: ...
    def leases_ended(self) -> int: ...
    def start_task(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None: ...
    def settled_size(self, name: str) -> int: ...
    def note_isolation_failure(self, owner: str | None, error: IsolationError) -> None: ...
    def note_use(self, owner: str | None, service: str) -> None: ...
    def lease_ended(self) -> None: ...


#: Recovers an entry (recovery tiers; :func:`mockpool.recovery.recover_entry`, handed in by the
#: pool, since the recovery module reads the service's internals).
Recover = Callable[["ServicePool", Entry, str], Awaitable[None]]

#: A group's member at some depth: the member names from the group's entry to the member's
#: entry (``("cache",)`` for a direct member, longer for a member's member), and its service.
MemberPath = tuple[tuple[str, ...], "ServicePool"]


class HookStep(NamedTuple):
    """One service's lease hooks, as a group lease runs them (``ServicePool.group_hooks``)."""

    #: The member names from the group's entry to the entry whose handle the hooks get:
    #: ``("redis",)`` for a member, ``()`` for the group itself, longer for a group's group.
    path: tuple[str, ...]
    service: str
    on_acquire: Callable[[Any], Any] | None
    on_release: Callable[[Any, Any], object] | None


class ServicePool(Waiting, InstanceHooks, RecoveryHandoff):
    """The pool of one service: bookkeeping in ``core``, hooks and background work here and
    in the mixins."""

    def __init__(self, pool: PoolPort, spec: ServiceSpec, recover: Recover) -> None:
        super().__init__()  # the mixins' own state: timers, stall checks, orphans
        self._pool_ref = weakref.ref(pool)
        self._recover = recover
        self.spec = spec
        self.name = spec.name
        self.clock = pool.clock
        self.core = ServiceCore(
            spec.name,
            min_size=spec.min_size,
            max_size=spec.max_size,
            budget=pool.budget,
            on_retire=self._retire_lowered,
        )
        self.metrics = ServiceMetrics()
        #: When sync factories held the loop, pool-wide (a lease's own work leaves them out).
        self.blocks = pool.blocks
        self.factory: Callable[..., Any] = spec.factory
        self.variant: str | None = None
        self.reset = spec.reset
        self.bind = spec.bind
        #: The lease hooks the lease calls, read from here rather than from the spec: one
        #: attribute load less on the hot path, which pays for its ``group_hooks`` check.
        #: None on a group whose members have hooks: ``group_hooks`` runs them all.
        self.on_acquire = spec.on_acquire
        self.on_release = spec.on_release
        #: A group's lease hooks and its members', in the order a lease runs their
        #: ``on_acquire``: None unless a member has some (see :meth:`adopt_members`).
        self.group_hooks: tuple[HookStep, ...] | None = None
        #: Leases of it are bound to their loop: it has a ``bind`` hook, or a member has
        #: (set again when its members are known).
        self.binds = spec.bind is not None
        self.timeout = spec.acquire_timeout if spec.acquire_timeout is not None else pool.default_timeout
        #: Health-check instances idle longer than ``check_window`` when they are acquired
        #: (the ``check_on_acquire`` property; the adaptation supervisor turns it on).
        self._check_on_acquire = spec.check_idle_after is not None and spec.health_check is not None
        self.check_window = spec.check_idle_after if spec.check_idle_after is not None else 1.0
        #: A lease checks on acquire: this service does, or a member of this group does. The
        #: flag the lease reads (an attribute, not the property: it is on the hot path).
        self.acquire_check = self._check_on_acquire
        #: A group's members at every depth, each with the path to its entry from the group's
        #: entry, innermost first (a member's own members before it, in ``depends_on``
        #: order): what a group's release resets, isolation-verify compares and recovery
        #: mends. Computed once, at registration (:meth:`adopt_members`).
        self.member_paths: tuple[MemberPath, ...] = ()
        #: The resets a release of a group runs, in order: ``member_paths`` with a reset hook,
        #: then the group's own (a path of ``()``).
        self.reset_paths: tuple[MemberPath, ...] = ()
        #: The services whose checks on acquire a lease runs, with the path to each one's
        #: entry: a group's members at every depth (``member_paths``), then its own.
        self.check_steps: tuple[MemberPath, ...] = (((), self),)
        #: Compare each reset instance's snapshot with its pristine one (isolation-verify mode).
        self.verify_isolation = pool.isolation_verify
        #: Member service pools, in ``depends_on`` order (groups only; :meth:`adopt_members`).
        self.members: tuple[ServicePool, ...] = ()
        #: Leases alive now; tracked only when the pool tracks leases (leak detection).
        #: (The :class:`~mockpool.lease.Lease` objects themselves, for leak reports.)
        self.active: set[Any] | None = set() if pool.track_leases else None
        #: With ``active``: the owners (tests) of the acquisitions waiting here, and how many.
        self.waiting_owners: Counter[str] = Counter()
        self.last_error: BaseException | None = None
        self.last_reset_error: BaseException | None = None
        #: The sizing controller's state: the size limit its throughput search allows. A
        #: service history says settled at a size starts capped there: growing past it takes
        #: a probe of the search that raises completed leases per second, not a load reading
        #: from the burst at a run's start (each run of a suite grew past the last one's size,
        #: 11 -> 21 -> 38 -> 64, and the next warmed to it).
        settled = pool.settled_size(spec.name)
        self.limit = LimitState(limit=min(spec.max_size, settled) if settled > 0 else spec.max_size)
        #: Create only for liveness: memory is tight (the process is over the pool's memory
        #: budget, or grew past the adaptation threshold; kept by the scaling supervisor).
        self.memory_tight = False
        self.memory_tight_by_growth = False
        #: The most instances alive at once in this run (what history keeps as the size the
        #: service settled at; the next run warms to it).
        self.peak_size = 0
        #: When the last creation ended, on the pool's clock (eviction waits a cooldown after).
        self.last_created_at: float | None = None
        #: Creations failed in a row (0 after one succeeds): backs off the stall checks' retries.
        self.creation_failures = 0
        #: What the last failed isolation check found (isolation-verify mode), for the report.
        self.last_isolation_failure: str | None = None
        #: Peak in-use of the run, folded in from the core's windowed peak by the sampler.
        self.peak_total = 0
        self._sampled_acquisitions = 0
        #: Waiters here now that hold a lease of another service they queued for, by that
        #: service: its own waiters will come here next (see :mod:`mockpool.nesting`).
        self.nested: dict[ServicePool, int] = {}
        self.holds = pool.holds  # read on every queued acquire: not through the pool property
        #: The ``id`` of the loop the last queued acquire ran in (see ``wait_for_entry``).
        self._last_loop = 0

    @property
    def pool(self) -> PoolPort:
        pool = self._pool_ref()
        if pool is None:  # pragma: no cover - a ServicePool never outlives its pool in practice
            raise PoolClosedError(f"service {self.name!r}: its pool was garbage-collected")
        return pool

    def closed_error(self) -> PoolClosedError:
        return PoolClosedError(
            f"service {self.name!r} of pool {self.pool.name!r} is closed "
            f"({'the pool was closed' if self.pool.closed else 'the service was unregistered'}); "
            "acquire inside 'async with pool:' or register the service again"
        )

    def adopt_members(self, members: tuple[ServicePool, ...]) -> None:
        """Make this service a group over ``members`` (registered, in ``depends_on`` order).

        A lease of a member runs the member's lease hooks (the redis double's on_acquire ends
        commands a late consumer left blocked; the http double's routes intercepted requests);
        a group lease hands the test the same member instances, so it runs them too, or the
        member is cleaner leased alone than inside a group. When no member has any, the group's
        own hooks run as a plain service's do.
        """
        self.members = members
        self.binds = self.binds or any(member.binds for member in members)
        steps = self._hook_steps(())
        if any(step.path for step in steps):
            self.group_hooks = steps
            self.on_acquire = self.on_release = None
        self.member_paths = tuple(
            ((member.name, *path), svc)
            for member in members
            for path, svc in (*member.member_paths, ((), member))
        )
        self.reset_paths = tuple(
            (path, svc) for path, svc in (*self.member_paths, ((), self)) if svc.reset is not None
        )
        # Likewise a member's check on acquire, at every depth: the group lease hands out its
        # instance too, and the group's recovery mends members at every depth.
        self.check_steps = (*self.member_paths, ((), self))
        self.acquire_check = self._check_on_acquire or any(m._check_on_acquire for _, m in self.member_paths)

    @property
    def check_on_acquire(self) -> bool:
        """Health-check this service's instances that sat idle longer than ``check_window``
        when they are acquired, alone or as a group's member."""
        return self._check_on_acquire

    @check_on_acquire.setter
    def check_on_acquire(self, on: bool) -> None:
        self._check_on_acquire = on
        for svc in (self, *self.pool.service_pools.values()):  # itself, and the groups over it
            svc.acquire_check = svc._check_on_acquire or any(m._check_on_acquire for _, m in svc.member_paths)

    def _hook_steps(self, path: tuple[str, ...]) -> tuple[HookStep, ...]:
        """This service's lease hooks and its members' (theirs first, in ``depends_on``
        order, as a lease of each would run them), with the path to each one's entry."""
        steps: list[HookStep] = []
        for member in self.members:
            steps.extend(member._hook_steps((*path, member.name)))
        spec = self.spec
        if spec.on_acquire is not None or spec.on_release is not None:
            steps.append(HookStep(path, self.name, spec.on_acquire, spec.on_release))
        return tuple(steps)

    # == acquiring ============================================================================

    def stop_waiting(self, owner: str) -> None:
        """An acquisition of ``owner`` (a test, under lease tracking) waits here no more."""
        waiting = self.waiting_owners
        waiting[owner] -= 1
        if waiting[owner] <= 0:
            del waiting[owner]

    def _record_wait(self, lease: LeaseState, since: float) -> None:
        """Record the wait of a served acquisition (a lease hook may yet take it back)."""
        waited = lease._waited = self.clock.now() - since
        self.metrics.record_wait(waited)

    async def wait_for_entry(
        self,
        lease: LeaseState,
        timeout: float | None,
        *,
        first: bool = False,
        reported: float | None = None,
        since: float | None = None,
        record: bool = True,
    ) -> Entry:
        """The slow path: queue as a waiter (``first``: at the front), trigger creations, wait
        (bounded) for an entry; then, for a lease, bind and check it as the hot path does.
        ``reported``: the timeout an ``AcquireTimeout`` names, when ``timeout`` is what is left
        of it. ``since``: when the acquisition began to wait (it waited before, for an instance
        that failed its check on acquire). ``record=False``: the caller (that check's retry)
        binds, checks and records the wait.

        The wait is recorded once the acquisition is served or timed out: one that ends
        otherwise (its bind raised, it was cancelled during its check) waited for nothing it
        got, and stays out of the wait percentiles, as its outcome is not served.

        The acquisition's outcome is counted here, in the acquiring task, from what it returns
        or raises: a deadline that passes in the loop step that also cancels the task counts
        once, as the cancellation the caller sees. A group acquiring its members counts
        nothing: that is no acquisition of theirs.
        """
        counted = lease is not _NO_LEASE
        metrics = self.metrics
        core = self.core
        try:
            if core.closed:
                raise self.closed_error()
            loop = running_loop(self.name)
            if core.creating or core.resetting or core.recovering:
                # Work in flight may be frozen in a loop that was closed under it.
                self.pool.settle_closed_loops()
            if id(loop) != self._last_loop:
                # A loop other than the last to queue here: the last may have closed with
                # instances handed to waiters that never ran. Checked only as loops change
                # (and as deadlines pass): a running loop's waiters will run. (An id: a loop
                # with an instance stranded in it stays referenced, so its id is not reused.)
                self._last_loop = id(loop)
                if self.holds.by_task:
                    # ...or with tasks holding leases they queued for, that will never run.
                    self.pool.end_closed_holders()
                if core.leased:
                    core.settle_transit()
            if self.orphans:
                self.resume_orphans()
            fut: asyncio.Future[Entry] = loop.create_future()
            # The task is looked up again once served, not kept in a local across the wait: a
            # task whose loop closed without cancelling it, holding itself through this frame,
            # was freed only by the cyclic garbage collector, which closes coroutines in any
            # order; closing the test's coroutine then threw into this one as it closed
            # ("coroutine already executing", unraisable). Unheld, it is freed in order.
            # (No task, None: found nowhere.)
            held = self.holds.by_task.get(asyncio.current_task(loop)) if counted else None  # type: ignore[arg-type]
            if held is not None:
                self._nest(held, 1)
            started = self.clock.now()
            if timeout is None:
                waiter = Waiter(fut, started)
            else:
                waiter = Waiter(
                    fut, started, timeout if reported is None else reported, loop.time() + timeout
                )
            entry = core.take_or_queue(waiter, first=first)
            if entry is not None:
                if held is not None:
                    self._nest(held, -1)
                if counted:
                    metrics.hits += 1
                    lease._served = HIT
                return entry
            if counted:
                metrics.queued += 1
            if timeout is not None:
                # One timer per service and loop, armed for the earliest deadline, instead of
                # one per waiter: per-waiter timers cost a heap push and pop each and made
                # contended acquires 40 % slower. The timer sets the waiter's future; it never
                # cancels the task, so a timeout cannot race a cancellation or lose a handed-over
                # entry. Per loop: a pool reached from two threads has waiters in two loops.
                armed = self._timers.get(loop)
                if armed is None or waiter.deadline < armed[1]:
                    self._arm_timer(loop, waiter.deadline)
            try:
                # At max_size (the contended steady state) there is nothing to create: skip the
                # call. Below it, ensure_creations also makes room under the pool-wide cap. At
                # it, an idle group may have to give back an instance lent to it.
                if (len(core.entries) + core.creating < core.max_size or core.lent) and self.shortfall() > 0:
                    self.ensure_creations()
                    if self.shortfall() > 0 and loop not in self._stall_checks:
                        self._arm_stall_check(loop)
                if self._ticket_loops:
                    self.take_over_creations(loop)
                entry = await fut
                entry.transit = None  # taken: no longer the pool's to take back
            except BaseException as exc:
                if held is not None:
                    self._nest(held, -1)
                self._abandon(waiter)
                # A timeout's wait is one the caller had; a cancellation's is the canceller's.
                if counted and isinstance(exc, AcquireTimeout):
                    metrics.record_wait(self.clock.now() - (started if since is None else since))
                raise
        except BaseException as exc:
            if counted:
                metrics.count_failure(exc)
            raise
        if held is not None:
            self._nest(held, -1)
        task = asyncio.current_task(loop) if counted else None
        if task is not None:
            lease._holder = task
            by_task = self.holds.by_task
            if task in by_task:
                self.holds.add(task, self)  # it holds another lease it queued for too
            else:
                by_task[task] = self  # the common case, inline: every queued acquire does it
        if counted:
            if waiter.fresh:
                metrics.misses += 1
                lease._served = MISS
            else:
                metrics.handoffs += 1
                lease._served = HANDOFF
            if record:
                lease._entry = entry
                if self.binds:
                    self.bind_leased(lease, entry)
                if self.acquire_check:
                    return await self.checked_on_acquire(lease, entry, since=started)
                self._record_wait(lease, started)
        return entry

    def _nest(self, held: ServicePool | tuple[ServicePool, ...], step: int) -> None:
        """Count a waiter here that holds leases of ``held`` in (``step=1``) or out (-1).
        Under the books' lock: waiters of two threads' loops may count at once."""
        nested = self.nested
        with self.pool.budget.lock:
            for upstream in held if isinstance(held, tuple) else (held,):
                if upstream is not self:
                    count = nested.get(upstream, 0) + step
                    if count > 0:
                        nested[upstream] = count
                    else:
                        nested.pop(upstream, None)

    def forget_holder(self, lease: LeaseState) -> None:
        """The lease ended (or never began): its task no longer holds it."""
        task = lease._holder
        if task is not None:
            lease._holder = None
            by_task = self.holds.by_task
            if by_task.get(task) is self:
                del by_task[task]  # the common case, inline
            else:
                self.holds.remove(task, self)

    def parked_holders(self) -> dict[ServicePool, int]:
        """The other services whose queues hold tests that hold a lease here (nested leases
        queued for, see ``Holds``), and how many of those wait in each."""
        return {
            other: count
            for other in self.pool.service_pools.values()
            if other is not self and (count := other.nested.get(self, 0))
        }

    def advancing(self) -> bool:
        """A lease ended here within a stall's time (:func:`~mockpool.sizing.stall_s`): the
        tests queued here are being served."""
        m = self.metrics
        if not m.holds.count:
            return False
        waited = self.clock.now() - m.released_at
        return waited < stall_s(m.hold_ewma, self.core.in_use - self.core.lent)

    def upstream_waiting(self) -> int:
        """Tests queued at services whose holders wait here: each will lease this one next."""
        nested = self.nested
        if not nested:
            return 0
        return sum(upstream.core.waiting for upstream in nested)

    async def wait_for_entry_internal(self) -> Entry:
        """An acquire on behalf of a group being built (no lease object, no timeout of its own).

        It queues first: the group instance it completes serves a whole queue of group leases,
        while behind the member's queue of direct leases the group's waiters would all starve
        (in the stress suite, device_session had no instance for the first second of the run).
        """
        return await self.wait_for_entry(_NO_LEASE, self.timeout, first=True)

    def bind_entry(self, entry: Entry) -> Entry:
        """Refresh the loop-bound handle of an entry for the running loop (``spec.bind``), and
        of a group's members: a group's bind may move a member's client to this loop (the redis
        double's does), and a member entry still marked bound to the old loop then handed a
        later direct lease the client with another loop's sockets."""
        members = entry.members
        if members:
            services = self.pool.service_pools
            for name, member in members.items():
                member_svc = services[name]
                if member_svc.binds:
                    member_svc.bind_entry(member)
        bind = self.bind
        if bind is not None:
            loop = asyncio._get_running_loop()
            bound = entry.handle_loop
            if bound is None or bound() is not loop:  # type: ignore[operator]
                # An emergency stub (recovery tier 4) imitates the handle already: binding it
                # would call the real bind on a mock. The stub is its own handle.
                if entry.tier == "stub":
                    entry.handle = entry.instance
                else:
                    entry.handle = bind(entry.instance)
                    if self._handle_type is None:
                        self._handle_type = _imitated(entry.handle)
                entry.handle_loop = weakref.ref(loop) if loop is not None else None
        return entry

    def bind_leased(self, lease: LeaseState, entry: Entry) -> None:
        """Bind a just-leased entry to the running loop (``spec.bind``). If bind raises, the
        test never got the instance: it goes to recovery, the error to the test, and the
        acquisition counts as an error instead of as served. A cancellation (a sync bind that
        met a cancelled future) too goes to recovery: what a bind cut short left is unknown."""
        try:
            self.bind_entry(entry)
        except BaseException as exc:
            self.unlease(lease, entry, exc, f"bind raised {exc!r}", recover=True)
            raise

    def unlease(
        self, lease: LeaseState, entry: Entry, exc: BaseException, reason: str, *, recover: bool | None = None
    ) -> None:
        """A step after the instance was leased failed (bind, ``on_acquire``, a check on
        acquire) or was cancelled: the test never got it. A failure sends it to recovery; a
        cancellation (or another ``BaseException``, such as a sync hook that met a cancelled
        future) says nothing about the instance, so it goes back unchanged, to the next waiter
        or idle (``recover`` overrides that choice). The acquisition counts as what ``exc``
        is, not as served."""
        lease._entry = None
        self.forget_holder(lease)
        if recover is None:
            recover = isinstance(exc, Exception)
        if recover:
            self.to_recovery(entry, reason)
        elif entry.state is EntryState.LEASED:
            self.core.give_back(entry)
        self.metrics.unserve(_served(lease))
        self.metrics.count_failure(exc)
        waited = getattr(lease, "_waited", None)  # unset on the hot path: nothing recorded
        if waited is not None:
            # Recorded by the slow path in this same loop step (the lease hooks that follow it
            # are sync): the ring's last sample is this acquisition's.
            del lease._waited
            self.metrics.unrecord_wait(waited)

    def enter_group_hooks(self, lease: LeaseState, entry: Entry) -> list[tuple[HookStep, Any, Any]]:
        """Run a group lease's ``on_acquire`` hooks (``group_hooks``: the members', then the
        group's own), each on its own instance's handle. Returns what
        :meth:`leave_group_hooks` needs: each step, the handle and the token it got.

        If one raises, the hooks before it are undone (their ``on_release``, the last first:
        the task keeps nothing they set), and the lease ends as a plain lease ends when its
        ``on_acquire`` raises: the instance goes to recovery, or back on a cancellation
        (to recovery after all if an undo failed too), and the error propagates unchanged.
        """
        entered: list[tuple[HookStep, Any, Any]] = []
        for step in self.group_hooks or ():
            handle = entry.member_at(step.path).handle
            on_acquire = step.on_acquire
            if on_acquire is None:
                entered.append((step, handle, None))
                continue
            try:
                entered.append((step, handle, on_acquire(handle)))
            except BaseException as exc:
                undo = self.leave_group_hooks(entered)
                if undo is not None:
                    exc.add_note(f"undoing the hooks run before it, {undo!r} was raised too")
                whose = "" if not step.path else f"{step.service!r}'s "
                self.unlease(
                    lease,
                    entry,
                    exc,
                    f"{whose}on_acquire raised {exc!r}",
                    recover=True if undo is not None else None,
                )
                raise
        return entered

    @staticmethod
    def leave_group_hooks(entered: list[tuple[HookStep, Any, Any]]) -> BaseException | None:
        """Run the ``on_release`` hooks of what :meth:`enter_group_hooks` entered, in the
        reverse order (the group's own first), each with its own handle and token. Every one
        runs even after another raised, since each undoes what its own ``on_acquire`` did.
        Returns the first error (later ones as notes on it), for the lease to raise once the
        instance is on its way to recovery, as a plain lease does with its ``on_release``'s."""
        # The handles are the ones entered, not looked up again: a group instance destroyed
        # under its lease (the pool closed under a leaked lease) has no members any more, and
        # its late release still undoes, in this task, what their on_acquire set, as a plain
        # lease's late release does on its destroyed instance.
        error: BaseException | None = None
        for step, handle, token in reversed(entered):
            on_release = step.on_release
            if on_release is None:
                continue
            try:
                on_release(handle, token)
            except BaseException as exc:
                if error is None:
                    error = exc
                else:
                    error.add_note(f"then {step.service!r}'s on_release raised {exc!r}")
        return error

    async def checked_on_acquire(
        self, lease: LeaseState, entry: Entry, *, since: float | None = None
    ) -> Entry:
        """Health-check ``entry`` (just leased) if it was idle longer than ``check_window``
        (a group's: each member's instance at every depth too, by the member's own check and
        window); an unhealthy one goes to recovery (a group's, whichever member failed: the
        group's recovery checks its members at every depth) and the lease waits for another. Returns the entry to
        use. Turned on by the adaptation supervisor (``check_on_acquire``).

        The acquisition was counted as served; if it ends otherwise (cancelled during the
        check, or served again after a failed one), that count is taken back, so it still
        has exactly one outcome. Its wait, from ``since`` (when it began to wait; a hit that
        fails its check waits from then), is recorded once it is served or times out."""
        metrics = self.metrics
        # The retries share the acquire's timeout: one bound for the whole acquire, or a
        # service whose checks keep failing (and whose recovery keeps serving) never lets go.
        timeout = lease._timeout
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            failure = await self._check_acquired(lease, entry)
            if failure is None:
                break
            if since is None:
                since = self.clock.now()
            lease._entry = None
            self.forget_holder(lease)
            if entry.state is EntryState.LEASED:
                self.to_recovery(entry, failure)
            metrics.unserve(_served(lease))
            if deadline is not None:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    core = self.core
                    error = AcquireTimeout(
                        self.name,
                        lease._timeout or 0.0,
                        size=core.size,
                        in_use=core.in_use,
                        waiting=core.waiting,
                        max_size=core.max_size,
                        creating=core.creating,
                        max_total=core.budget.max_total,
                        advice=f"every instance offered failed its health check on acquire (the last "
                        f"one: {failure}); fix the health_check hook or what makes the instances fail it",
                    )
                    metrics.record_wait(self.clock.now() - since)
                    metrics.count_failure(error)
                    raise error
            # Counts the new outcome (and, if it times out, the wait).
            entry = await self.wait_for_entry(
                lease, timeout, reported=lease._timeout, since=since, record=False
            )
            lease._entry = entry
            if self.binds:
                self.bind_leased(lease, entry)
        if since is not None:
            self._record_wait(lease, since)
        return entry

    async def _check_acquired(self, lease: LeaseState, entry: Entry) -> str | None:
        """Run the checks on acquire that are due on ``entry`` (``check_steps``); None if it
        passed them all, else what failed. Counted as this service's checks, a member's too:
        a failure sends this service's entry to recovery (whose health check of the member
        counts as the member's, and sends it to its own ladder)."""
        idle = self.clock.now() - entry.last_used
        for path, svc in self.check_steps:
            check = svc.spec.health_check
            if check is None or not svc._check_on_acquire or idle <= svc.check_window:
                continue
            self.metrics.health_checks += 1
            try:
                ok = await call_hook(
                    check,
                    entry.member_at(path).instance,
                    timeout=svc.spec.health_timeout,
                    service=svc.name,
                    name="health_check",
                )
                failure = "returned False" if ok is False else None
            except Exception as exc:
                failure = f"raised {exc!r}"
                self.last_error = exc
            except BaseException as exc:
                # Cancelled, or a BaseException from the hook (``pytest.skip``, Ctrl-C): the
                # test never saw the instance, and the check said nothing of it: pass it on
                # unchanged and propagate.
                self.unlease(lease, entry, exc, f"{type(exc).__name__} during its check on acquire")
                raise
            if failure is not None:
                self.metrics.health_failures += 1
                whose = f"member {svc.name!r}'s " if path else ""
                return f"{whose}check on acquire {failure}"
        return None

    # == deciding creations ===================================================================

    def ensure_creations(self, *, stalled: bool = False, evict: bool = False) -> None:
        """Start the background creations the sizing controller decides for the waiters that
        no creation or recovery covers yet (:func:`mockpool.sizing.creations`). At the
        pool-wide cap, another service's idle instance is evicted to make room only for a
        waiter nothing else can serve, or (``evict``) one stalled for long."""
        core = self.core
        if self.shortfall() <= 0:
            return
        # At max_size, or with no room under max_total (a service's last instance is evicted
        # only for another's first, and this one has instances: those lent), an idle group
        # gives its instance back when nothing else will serve the waiters.
        if (
            core.size + core.creating >= core.max_size or not core.budget.has_room(core)
        ) and self.reclaim_if_only_lent():
            return
        sizing = self.sizing_input(stalled=stalled, lasting=evict)
        wanted = creations(sizing)
        pool = self.pool
        while wanted > 0:
            if not core.reserve_creation(lasting=evict):
                # At the pool-wide cap, another service's idle instance makes room only for a
                # waiter that nothing else can serve (liveness): otherwise the services would
                # take turns destroying each other's instances.
                live = evict or (sizing.in_use == 0 and sizing.creating == 0 and sizing.recovering == 0)
                if live and core.size + core.creating < core.max_size and pool.make_room(self, lasting=evict):
                    continue
                break
            self.spawn_creation()
            wanted -= 1

    def _retire_lowered(self, entry: Entry) -> None:
        """An instance came back while ``max_size`` is lowered under the instances out: it is
        destroyed instead of placed. Its holder was the one a waiter's stall check measured
        its wait on: with nothing left held, the waiters look again soon (an idle group may
        give its member back)."""
        self.destroy_soon(entry)
        if self.core.waiters:
            self.watch_shortfall()

    def shortfall(self) -> int:
        """Waiters that no creation or recovery on its way covers: the core's count, where
        work frozen in a paused event loop (open, not running: :mod:`mockpool.paused`) covers
        nobody. It goes on only when that loop runs again; counted, a test in a function-scoped
        loop after one in a session-scoped loop waited for the creation warming had started
        there until its timeout."""
        core = self.core
        short = core.shortfall()
        if core.creating or core.recovering:
            short += self.paused_work()
        return short

    def paused_work(self) -> int:
        """Creations and recoveries frozen in paused event loops (:mod:`mockpool.paused`)."""
        return self.creations_in.paused() + self.recoveries_in.paused()

    def reclaim_if_only_lent(self) -> bool:
        """At ``max_size`` (or with no room under ``max_total``) with every instance lent to
        groups, waiters would wait for ever: a group instance keeps its members for as long as
        it lives. So when no test holds an instance and none is being reset, checked,
        recovered or created, destroy the least recently used idle instance of a group built on this service (at any depth: the
        nearest first); its members go back to their services (reset), and this one's serves
        the first waiter (liveness). True if one was destroyed."""
        core = self.core
        if not core.lent or core.leased != core.lent:
            return False
        if core.resetting or core.checking or core.recovering or core.creating:
            return False
        # A group built on a group holds this service's instances deeper down: destroying its
        # idle instance gives back the inner group's, which the next stall check takes in
        # turn. The nearest groups first (theirs frees an instance at once), then the least
        # recently used.
        victim: ServicePool | None = None
        best: tuple[int, float] | None = None
        for group in self.pool.service_pools.values():
            idle = group.core.idle
            if not idle:
                continue
            depth = min((len(path) for path, member in group.member_paths if member is self), default=0)
            if not depth:
                continue
            key = (depth, idle[0].last_used)
            if best is None or key < best:
                victim, best = group, key
        if victim is None:
            return False
        entry = victim.core.take_idle_for_removal()
        if entry is None:
            return False
        logger.info(
            "service %r: every instance lent to idle groups at max_size=%d; destroyed an idle %r "
            "to give its instance to a waiter",
            self.name,
            core.max_size,
            victim.name,
        )
        victim.destroy_soon(entry)
        return True

    def _creation_cost(self) -> float | None:
        """Seconds a creation costs: a group's includes one instance of each member, which its
        instance keeps for good (from idle members it is built in no time, but their own
        waiters then need new ones: priced at the group's, groups were made by the dozen)."""
        own = self.metrics.create_ewma
        if own is None or not self.members:
            return own
        return own + sum(member._creation_cost() or 0.0 for member in self.members)

    def sizing_input(self, *, stalled: bool = False, lasting: bool = False) -> SizingInput:
        """This service's measurements, as the sizing controller reads them."""
        core, m = self.core, self.metrics
        busy, lease_cost, load_since = self.pool.loop_load()
        # Work frozen in a paused loop is on its way to no waiter here (``shortfall``); it
        # still holds its slot under max_size (``core.reserve_creation`` counts it).
        paused_creations = self.creations_in.paused() if core.creating else 0
        paused_recoveries = self.recoveries_in.paused() if core.recovering else 0
        return SizingInput(
            size=core.size,
            creating=core.creating - paused_creations,
            recovering=core.recovering + core.checking - paused_recoveries,
            # Groups keep the members they were built on: only the leases of tests end.
            in_use=core.in_use - core.lent,
            lent=core.lent,
            members_room=None
            if not self.members
            else members_room(
                (m.core.max_size, m.core.lent, m.metrics.acquisitions > 0) for m in self.members
            ),
            waiting=core.waiting,
            upstream=self.upstream_waiting(),
            queued_before=max(0, m.queued - core.waiting),
            max_size=core.max_size,
            limit=self.limit.limit,
            hold_s=m.hold_ewma if m.holds.count else None,
            create_s=self._creation_cost(),
            busy=busy,
            lease_cost=lease_cost,
            load_predates_queue=load_since is not None and load_since < core.queued_since,
            work_s=m.work_ewma,
            memory_tight=self.memory_tight,
            stalled=stalled,
            lasting=lasting,
            share=self.pool.fair_share(self),
            settled=self.pool.settled_size(self.name),
            create_blocks=not inspect.iscoroutinefunction(self.factory),
        )

    def settled_at(self) -> int:
        """The size this run settled at, as history keeps it: the most instances alive at once,
        but not past the throughput search's limit when it capped (the instances beyond it
        bought nothing, or were made for a stall) with the members lent to groups on top."""
        limit = self.limit.limit
        if limit >= self.core.max_size:
            return self.peak_size
        return min(self.peak_size, limit + self.core.lent)

    def grow(self, count: int) -> int:
        """Start up to ``count`` background creations (warming, scaling); return how many."""
        started = 0
        while started < count and self.core.reserve_creation():
            self.spawn_creation()
            started += 1
        return started

    # == releasing ============================================================================

    def release_entry(
        self, entry: Entry, *, discard: bool = False
    ) -> asyncio.Future[IsolationError | None] | None:
        """End a lease: reset and give back, or send to recovery. Returns a future to wait on
        when the reset runs in the background (async reset, groups, isolation-verify mode),
        else None (all done). The future's result is the isolation failure the lease left, if any.
        """
        core = self.core
        if entry.state is EntryState.DESTROYED:
            return None  # force-closed while leased (the pool closed under a leaked lease)
        if core.closed:
            core.remove(entry)
            self._retire_closed(entry, already_removed=True)
            self.pool.lease_ended()
            return None
        if discard:
            self.metrics.discards += 1
            self.to_recovery(entry, "discarded by the test")
            return None
        pending: Any = None
        rest: tuple[tuple[InstanceHooks, Any], ...] = ()
        if entry.members is None and not self.verify_isolation:
            # The common case, kept short: no reset, or a sync one, runs inline while the
            # entry is still leased (nothing awaits, so nothing can interleave).
            reset = self.reset
            if reset is None:
                core.recycle(entry)
                self.metrics.resets += 1
                return None
            try:
                result = reset(entry.instance)
            except BaseException as exc:
                # A BaseException too (``pytest.fail`` in the hook, KeyboardInterrupt): the
                # instance must not stay leased to a lease that ended; it goes to recovery,
                # and such an exception still reaches the test.
                core.begin_reset(entry)
                self._reset_failed(entry, exc)
                if not isinstance(exc, Exception):
                    raise
                return None
            if result is None or not inspect.isawaitable(result):
                core.recycle(entry)
                self.metrics.resets += 1
                return None
            pending = result
        elif not self.verify_isolation:
            # A group: the members' resets (every depth, innermost first), then its own,
            # inline for as long as they are sync; the first that returns an awaitable and
            # those after it go on in the background. A task per release cost more than the
            # resets of a small group.
            steps = self._reset_steps(entry)
            for index, (svc, instance) in enumerate(steps):
                try:
                    result = svc.reset(instance)  # type: ignore[misc]  # None filtered out
                except BaseException as exc:  # as for a plain service's, above
                    core.begin_reset(entry)
                    self._reset_failed(entry, exc)
                    if not isinstance(exc, Exception):
                        raise
                    return None
                if result is not None and inspect.isawaitable(result):
                    pending, rest = result, steps[index + 1 :]
                    break
            else:
                core.recycle(entry)
                self.metrics.resets += 1
                return None
        loop = asyncio._get_running_loop()
        if loop is None:
            # The lease's task was collected after its loop closed without cancelling it
            # (pytest-asyncio 0.23): its block ends outside any loop, where no reset can run
            # (awaited there, "coroutine ignored GeneratorExit"). As for a reset that never
            # ran, the next runtime recovers the instance.
            if inspect.iscoroutine(pending):
                pending.close()
            self.to_recovery(entry, "its lease ended outside any event loop")
            return None
        core.begin_reset(entry)
        done: asyncio.Future[IsolationError | None] = loop.create_future()
        self.pool.spawn(
            self._reset_in_background,
            entry,
            pending,
            done,
            rest,
            on_drop=lambda: self._reset_dropped(entry, pending, done),
        )
        return done

    def _reset_steps(self, entry: Entry) -> tuple[tuple[InstanceHooks, Any], ...]:
        """A group's resets, in order (``reset_paths``): each member's instance at every
        depth, innermost first, then the group's own."""
        return tuple([(svc, entry.member_at(path).instance) for path, svc in self.reset_paths])

    # == statistics ===========================================================================

    def sample_usage(self, t_rel: float) -> tuple[int, int]:
        """Acquisitions and peak concurrency since the last sample; restarts the window."""
        core = self.core
        count = self.metrics.acquisitions - self._sampled_acquisitions
        self._sampled_acquisitions = self.metrics.acquisitions
        peak = core.peak_in_use
        self.peak_total = max(self.peak_total, peak)
        core.peak_in_use = core.in_use
        return count, peak

    def stats(self) -> PoolStats:
        core, m = self.core, self.metrics
        wait_p50, wait_p99 = m.wait_percentiles(50, 99)
        hold_p50, hold_p99 = m.holds.percentiles(50, 99)
        rec50: dict[str, float] = {}
        rec99: dict[str, float] = {}
        for tier in RECOVERY_TIERS:
            ring = m.recovery_times[tier]
            if ring.count:
                rec50[tier], rec99[tier] = ring.percentiles(50, 99)
        reuses = m.hits + m.handoffs
        served = reuses + m.misses
        return PoolStats(
            name=self.name,
            size=core.size,
            idle=len(core.idle),
            in_use=core.in_use,
            waiting=core.waiting,
            max_size=core.max_size,
            min_size=core.min_size,
            creating=core.creating,
            recovering=core.recovering + core.checking,
            created=m.created,
            destroyed=m.destroyed,
            acquisitions=m.acquisitions,
            hits=m.hits,
            reuses=reuses,
            misses=m.misses,
            hit_rate=m.hits / served if served else 0.0,
            reuse_rate=reuses / served if served else 0.0,
            timeouts=m.timeouts,
            cancellations=m.cancellations,
            acquire_errors=m.acquire_errors,
            resets=m.resets,
            reset_failures=m.reset_failures,
            health_checks=m.health_checks,
            health_failures=m.health_failures,
            create_failures=m.create_failures,
            lease_errors=m.lease_errors,
            discards=m.discards,
            recoveries=TierCounts(m.recoveries),
            recovery_failures=m.recovery_failures,
            degraded_leases=m.degraded_leases,
            leaks=m.leaks,
            isolation_failures=m.isolation_failures,
            peak_in_use=max(self.peak_total, core.peak_in_use),
            wait_p50_s=wait_p50,
            wait_p99_s=wait_p99,
            hold_p50_s=hold_p50,
            hold_p99_s=hold_p99,
            hold_ewma_s=m.hold_ewma,
            wait_ewma_s=m.wait_ewma,
            error_rate=m.error_rate(),
            recovery_p50_s=rec50,
            recovery_p99_s=rec99,
            last_error=format_error(self.last_error),
            last_reset_error=format_error(self.last_reset_error),
            lent=core.lent,
            released=m.holds.count,
        )


class _NoLease:
    """Stands in for a lease when a group acquires its members."""

    _holder = None


def _served(lease: LeaseState) -> int:
    """How ``lease`` was served: set by the slow path; the hot path (a hit) leaves it unset."""
    return getattr(lease, "_served", HIT)


_NO_LEASE: Any = _NoLease()


def _imitated(handle: Any) -> type | None:
    """The class a stub of ``handle`` must imitate: the class it is, or, for a mock made with a
    spec (an autospec double), the class it imitates."""
    mock = sys.modules.get("unittest.mock")  # a handle can only be a mock once it is imported
    if mock is not None and isinstance(handle, mock.NonCallableMock):
        spec_class = handle._spec_class
        return spec_class if isinstance(spec_class, type) else None
    return type(handle)
