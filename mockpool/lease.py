"""``Lease``: what ``pool.acquire(name)`` returns; an async context manager over one instance.

This is the hot path. When an idle instance is ready, entering takes no lock and never
awaits; leaving runs a sync reset inline. Everything else is in :mod:`mockpool.service`
(waiting, releasing) and its mixins (timers, async resets, the hand-off to recovery).
"""

from __future__ import annotations

import asyncio
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

from .errors import AcquireTimeout, MockPoolError

if TYPE_CHECKING:
    from .core import Entry
    from .service import ServicePool

__all__ = ("Lease", "lease_owner")

T = TypeVar("T")

#: Who acquires, for leak reports: the pytest plugin sets it to the running test's node id.
#: Read only when the pool tracks leases.
lease_owner: ContextVar[str | None] = ContextVar("mockpool_lease_owner", default=None)


@final
class Lease(Generic[T]):
    """One exclusive use of one instance of a service.

    ``async with pool.acquire("redis") as redis:`` yields the instance. Keep the lease object
    to reach more: ``lease.discard()`` sends the instance to recovery instead of reset,
    ``lease.degraded`` says it came from recovery tier 3 or 4, ``lease.members`` holds a
    group's member instances by service name.
    """

    __slots__ = (
        "_discard",
        "_entry",
        "_holder",
        "_released",
        "_served",
        "_started",
        "_svc",
        "_timeout",
        "_token",
        "_waited",
        "owner",
        "where",
    )

    #: How the slow path served it (``metrics.HANDOFF``, ``MISS``...); unset on the hot path
    #: (a hit), so that path stores nothing. Read when the acquisition ends otherwise after all.
    _served: int
    #: The wait recorded for it, on the slow path (``ServicePool.unlease`` takes it back).
    _waited: float

    def __init__(self, svc: ServicePool, timeout: float | None) -> None:
        self._svc = svc
        self._timeout = timeout
        self._entry: Entry | None = None
        self._holder: asyncio.Task[Any] | None = None  # set if it queued (service.Holds)
        self._discard = False
        self._released = False
        self._started = 0.0
        #: What spec.on_acquire returned, for spec.on_release (a group whose members have lease
        #: hooks: each hook's, in ``svc.group_hooks`` order).
        self._token: Any = None
        #: ``(filename, line)`` of the ``async with`` that acquired, when the pool tracks leases.
        self.where: tuple[str, int] | None = None
        #: The value of :data:`lease_owner` when acquired (the test's node id under pytest).
        self.owner: str | None = None

    async def __aenter__(self) -> T:
        if self._entry is not None:
            raise MockPoolError(
                f"service {self._svc.name!r}: this lease was entered already (a lease is entered "
                f"once); call pool.acquire({self._svc.name!r}) again for another lease"
            )
        svc = self._svc
        metrics = svc.metrics
        metrics.acquisitions += 1
        entry = svc.core.take_idle()
        if entry is None:
            # A lease shared by two tasks: both would wait here, and the second entry would
            # overwrite the first, whose instance then stayed out for good. ``_started`` is
            # negative while a task waits to enter: checked here, on the slow path only.
            if self._started < 0.0:
                metrics.acquisitions -= 1
                raise MockPoolError(
                    f"service {svc.name!r}: another task is entering this lease already; a lease "
                    f"serves one task: call pool.acquire({svc.name!r}) in each task"
                )
            self._started = -1.0
            # Under lease tracking, the tests waiting here: a timeout tells a deadlock of
            # nested leases from a slow release (``_waited_for_itself``).
            owner = lease_owner.get() if svc.active is not None else None
            if owner is not None:
                svc.waiting_owners[owner] += 1
            try:
                # Waits, binds and checks; counts its own outcome, and its wait once served.
                entry = await svc.wait_for_entry(self, self._timeout)
                if self._entry is None:
                    # Served at once after all (work settled as it queued: an instance taken
                    # back from a closed loop, an orphan resumed): a hit, bound and checked as
                    # below.
                    self._entry = entry
                    if svc.binds:
                        svc.bind_leased(self, entry)
                    if svc.acquire_check:
                        entry = await svc.checked_on_acquire(self, entry)
            except BaseException as exc:
                self._started = 0.0  # a failed acquire may be retried with the same lease
                if owner is not None and isinstance(exc, AcquireTimeout):
                    # Waiters whose deadlines passed together wake in one loop step: each still
                    # counts as waiting for the others' messages until that step is over.
                    asyncio.get_running_loop().call_soon(svc.stop_waiting, owner)
                    owner = None
                    mine = self._waited_for_itself(exc)
                    if mine is not None:
                        raise mine from None
                raise
            finally:
                if owner is not None:
                    svc.stop_waiting(owner)
        else:
            metrics.hits += 1  # a wait of 0 s, counted rather than stored (wait_percentiles)
            self._entry = entry
            if svc.binds:
                svc.bind_leased(self, entry)
            if svc.acquire_check:  # this service's check on acquire, or a group member's
                entry = await svc.checked_on_acquire(self, entry)
        on_acquire = svc.on_acquire
        if on_acquire is not None:
            try:
                self._token = on_acquire(entry.handle)
            except BaseException as exc:  # a cancellation too: the instance must not stay out
                svc.unlease(self, entry, exc, f"on_acquire raised {exc!r}")
                raise
        elif svc.group_hooks is not None:  # a group whose members have lease hooks
            self._token = svc.enter_group_hooks(self, entry)
        if entry.degraded:
            metrics.degraded_leases += 1
        active = svc.active
        if active is not None:
            frame = sys._getframe(1)
            self.where = (frame.f_code.co_filename, frame.f_lineno)
            self.owner = lease_owner.get()
            active.add(self)
            svc.pool.note_use(self.owner, svc.name)
        self._started = svc.clock.now()
        return entry.handle  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._entry
        if entry is None or self._released:
            return
        self._released = True
        svc = self._svc
        hook_error: BaseException | None = None
        on_release = svc.on_release
        if on_release is not None:
            try:
                on_release(entry.handle, self._token)
            except BaseException as error:  # a cancellation too: the instance must still go back
                # What on_acquire set up may still be in place: recover the instance, tell the test.
                hook_error, self._discard = error, True
        elif svc.group_hooks is not None:
            hook_error = svc.leave_group_hooks(self._token)
            if hook_error is not None:
                self._discard = True
        now = svc.clock.now()
        started = self._started
        blocks = svc.blocks
        if blocks.last_end > started:  # a sync factory held the loop during the lease
            svc.metrics.record_blocked_hold(now - started, blocks.within(started, now))
        else:
            svc.metrics.record_hold(now - started)
        entry.last_used = now
        svc.metrics.released_at = now
        if exc_type is not None and issubclass(exc_type, Exception):
            svc.metrics.lease_errors += 1
        active = svc.active
        if active is not None:
            active.discard(self)
        if self._holder is not None:  # it queued: its task holds it no more (mockpool.nesting)
            svc.forget_holder(self)
        pending = svc.release_entry(entry, discard=self._discard)
        # An async reset runs in the background; wait for it so the instance is back when the
        # block ends. If this task is cancelled meanwhile, the reset still finishes and places
        # the instance; the cancellation propagates. Not while the coroutine is being closed
        # (GeneratorExit: its task collected after its loop closed, while another loop runs),
        # where awaiting raises "coroutine ignored GeneratorExit": the reset places the
        # instance without it.
        if pending is not None and (exc_type is not GeneratorExit or pending.done()):
            dirty = await pending
            if dirty is not None:
                svc.pool.note_isolation_failure(self.owner, dirty)
        if hook_error is not None:
            raise hook_error

    def _waited_for_itself(self, timeout: AcquireTimeout) -> AcquireTimeout | None:
        """The timeout, told as what it is when the waiting test holds every instance itself
        (a lease of the service nested in one of its own), or when every instance is held by
        a test that is itself waiting here (many tests nesting leases of one service at once):
        no release could ever have come. Only with lease tracking (the pytest plugin), and
        only once the wait has failed."""
        owner = lease_owner.get()
        svc = self._svc
        active = svc.active
        if owner is None or not active:
            return None
        mine = [lease for lease in active if lease.owner == owner]
        if not mine or len(active) < timeout.max_size:
            return None
        where = mine[0].where
        at = f", the first acquired at {where[0]}:{where[1]}" if where is not None else ""
        if len(mine) < timeout.max_size:
            waiting = svc.waiting_owners
            holders = {lease.owner for lease in active}
            if not all(holder in waiting for holder in holders):
                return None
            advice = (
                f"a deadlock: each of the {len(active)} instances is held by a test that is itself "
                f"waiting for another ({len(holders)} tests, this one among them{at}); a lease "
                "nested in a lease of the same service deadlocks once as many tests hold one as "
                "max_size allows: raise max_size above the number of tests that run at once, or "
                "run fewer at once"
            )
        else:
            advice = (
                f"this test holds all {len(mine)} of them itself{at}: an acquire nested in a lease "
                "of the same service waits for the test's own lease; use the instance the test "
                "holds, or raise max_size"
            )
        return AcquireTimeout(
            timeout.service,
            timeout.timeout,
            size=timeout.size,
            in_use=timeout.in_use,
            waiting=timeout.waiting,
            max_size=timeout.max_size,
            creating=timeout.creating,
            max_total=timeout.max_total,
            advice=advice,
        )

    # -- the lease's own API ---------------------------------------------------------------

    @property
    def service(self) -> str:
        """The service name."""
        return self._svc.name

    @property
    def instance(self) -> T:
        """The instance (or its loop-bound handle) this lease holds."""
        return self._held().handle  # type: ignore[no-any-return]

    @property
    def degraded(self) -> bool:
        """True when the instance came from recovery tier 3 (minimal) or 4 (stub)."""
        entry = self._entry
        return entry is not None and entry.degraded

    @property
    def tier(self) -> str | None:
        """``"minimal"`` or ``"stub"`` for degraded instances, else None."""
        entry = self._entry
        return entry.tier if entry is not None else None

    @property
    def members(self) -> dict[str, Any]:
        """A group's member instances by service name (empty for a plain service)."""
        entry = self._held()
        if not entry.members:
            return {}
        return {name: member.handle for name, member in entry.members.items()}

    @property
    def held(self) -> bool:
        """True between entering and leaving the ``async with`` block."""
        return self._entry is not None and not self._released

    def discard(self) -> None:
        """On release, send this instance to recovery instead of resetting it."""
        self._held()
        self._discard = True

    def _held(self) -> Entry:
        entry = self._entry
        if entry is None or self._released:
            raise MockPoolError(
                f"service {self._svc.name!r}: the lease is not held; use it inside 'async with lease:'"
            )
        return entry

    def __repr__(self) -> str:
        state = "not entered" if self._entry is None else "released" if self._released else "held"
        return f"<Lease {self._svc.name!r} {state}>"
