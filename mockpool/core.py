"""The synchronous state core of one service: entries, states, the idle stack, the waiter queue.

Every transition happens here, in plain non-awaiting code, so that no task switch can fall
between two halves of a bookkeeping step. Factory, reset, health and destroy hooks run outside,
in :mod:`mockpool.service`; they call back into this core when they finish. Nothing here
awaits, reads the clock, or imports anyio.

Lifecycle of an entry::

    (creating) -> IDLE <-> LEASED -> RESETTING -> IDLE or a waiter's LEASED
                   |        |          |
                   +--------+----------+--> RECOVERING -> IDLE / a waiter / DESTROYED
                  CHECKING (health check of an idle entry) -> IDLE or RECOVERING
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from .errors import MockPoolError

__all__ = ("Budget", "Entry", "EntryState", "ServiceCore", "Waiter")


class EntryState(enum.Enum):
    """Where an instance is in its lifecycle."""

    IDLE = "idle"
    LEASED = "leased"
    RESETTING = "resetting"
    CHECKING = "checking"
    RECOVERING = "recovering"
    DESTROYED = "destroyed"


_IDLE = EntryState.IDLE
_LEASED = EntryState.LEASED
_RESETTING = EntryState.RESETTING
_CHECKING = EntryState.CHECKING
_RECOVERING = EntryState.RECOVERING
_DESTROYED = EntryState.DESTROYED
_ids = itertools.count(1)


class Entry:
    """One pooled instance and what the pool knows about it."""

    __slots__ = (
        "created_at",
        "degraded",
        "fingerprint",
        "handle",
        "handle_loop",
        "id",
        "instance",
        "last_used",
        "leases",
        "members",
        "pristine",
        "spent",
        "state",
        "tier",
        "transit",
        "variant",
    )

    def __init__(self, instance: Any, *, now: float, pristine: Any = None) -> None:
        self.id = next(_ids)
        self.instance = instance
        #: What tests receive: the instance itself, or its loop-bound handle (``spec.bind``).
        self.handle: Any = instance
        self.handle_loop: object = None
        self.state = _IDLE
        self.created_at = now
        self.last_used = now
        self.leases = 0
        self.pristine = pristine
        #: What the instance looked like new (``spec.fingerprint``), kept in isolation-verify mode.
        self.fingerprint: Any = None
        #: Recovery tier that produced it: None (factory), "minimal" or "stub".
        self.tier: str | None = None
        self.degraded = False
        self.variant: str | None = None
        #: For group services: the member entries this one was built on, by service name.
        self.members: dict[str, Entry] | None = None
        #: The waiter it was handed to, until that waiter takes it (``ServiceCore.settle_transit``).
        self.transit: Waiter | None = None
        #: Its instance was destroyed and recovery is making it a new one (the broken one goes
        #: first: alive beside its replacement, it was one instance past ``max_size``).
        self.spent = False

    def __repr__(self) -> str:
        return f"<Entry #{self.id} {self.state.value} {type(self.instance).__name__}>"

    def member_at(self, path: tuple[str, ...]) -> Entry:
        """The member entry ``path`` leads to from this group entry (itself for ``()``):
        ``("cache",)`` for a direct member, longer for a member's member."""
        entry = self
        for name in path:
            members = entry.members
            if members is None:  # pragma: no cover - a group's entry holds its members
                raise LookupError(f"entry #{self.id} has no member {name!r} (it holds no members)")
            entry = members[name]
        return entry


class Waiter:
    """One acquirer waiting for an instance; its future receives the entry."""

    __slots__ = ("deadline", "enqueued_at", "fresh", "future", "timeout")

    def __init__(
        self,
        future: asyncio.Future[Entry],
        enqueued_at: float,
        timeout: float | None = None,
        deadline: float = float("inf"),
    ) -> None:
        self.future = future
        self.enqueued_at = enqueued_at
        #: The wait bound in seconds, and when it runs out in the waiter's loop time.
        self.timeout = timeout
        self.deadline = deadline
        #: Set when the entry it received was created for it (a miss, not a hit).
        self.fresh = False


class Budget:
    """The pool-wide cap on live plus creating instances, shared by every service, and the
    pool-wide lock of every service's bookkeeping."""

    __slots__ = ("kept_for_others", "lock", "max_total", "total")

    def __init__(self, max_total: int | None) -> None:
        self.max_total = max_total
        self.total = 0
        #: Under ``max_total``: the slots a service that has instances must leave free for the
        #: other services' first ones (set by the pool; see ``MockPool.kept_for_others``).
        self.kept_for_others: Callable[[ServiceCore, bool], int] | None = None
        #: Held by every core method that changes the books. A pool may be reached from two
        #: threads (Starlette's TestClient runs the app in a thread with its own loop); one
        #: lock for the pool, since services share the budget and a group reaches its
        #: members. Reentrant: retiring an instance releases its members into their cores.
        self.lock = threading.RLock()

    def has_room(self, core: ServiceCore | None = None, *, lasting: bool = False) -> bool:
        """Whether one more instance fits under ``max_total``; for ``core``'s growth, also
        beyond the slots kept for the other services' first instances (``lasting``: for a
        waiter of ``core`` stalled for long, see ``MockPool.kept_for_others``)."""
        if self.max_total is None:
            return True
        kept = 0 if core is None or self.kept_for_others is None else self.kept_for_others(core, lasting)
        return self.total + kept < self.max_total


class ServiceCore:
    """The bookkeeping of one service; every method is synchronous and O(1) on the hot path."""

    __slots__ = (
        "_lock",
        "budget",
        "checking",
        "closed",
        "creating",
        "creations_begun",
        "creations_ended",
        "entries",
        "idle",
        "idle_low",
        "leased",
        "lent",
        "max_size",
        "min_size",
        "name",
        "on_retire",
        "peak_in_use",
        "queued_since",
        "recovering",
        "resetting",
        "waiters",
    )

    def __init__(
        self,
        name: str,
        *,
        min_size: int,
        max_size: int,
        budget: Budget,
        on_retire: Callable[[Entry], None] | None = None,
    ) -> None:
        self.name = name
        self._lock = budget.lock
        #: Called with an entry dropped because ``max_size`` was lowered while it was out; the
        #: caller destroys its instance.
        self.on_retire = on_retire
        self.min_size = min_size
        self.max_size = max_size
        self.budget = budget
        self.entries: set[Entry] = set()
        # Idle entries: taken from the right (most recently used, warm), evicted from the left
        # (least recently used).
        self.idle: deque[Entry] = deque()
        # FIFO waiters; an OrderedDict gives O(1) removal of a cancelled waiter from the middle.
        self.waiters: OrderedDict[Waiter, None] = OrderedDict()
        #: When the queue last went from empty to waited on (the waiter's ``enqueued_at``):
        #: a load reading taken before it describes another demand (see ``SizingInput``).
        self.queued_since = 0.0
        self.creating = 0
        #: Creations reserved and ended so far (``creations_settled`` waits on these).
        self.creations_begun = 0
        self.creations_ended = 0
        self.leased = 0
        #: Of the leased entries, those lent to group instances: they stay leased for as long
        #: as the group instance lives, so none of them will be released to this service's waiters.
        self.lent = 0
        self.resetting = 0
        self.checking = 0
        self.recovering = 0
        #: Highest in-use count since the usage sampler last looked (it keeps the run's peak).
        self.peak_in_use = 0
        #: Lowest idle count seen since the scaling supervisor last looked (shrink watermark).
        self.idle_low = 0
        self.closed = False

    # -- counts ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Live instances: idle, leased, resetting, checking or recovering."""
        return len(self.entries)

    @property
    def in_use(self) -> int:
        return self.leased + self.resetting

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def can_grow(self, *, lasting: bool = False) -> bool:
        """Whether one more instance may be created without breaking a cap."""
        return (
            not self.closed
            and len(self.entries) + self.creating < self.max_size
            and self.budget.has_room(self, lasting=lasting)
        )

    def lend(self, count: int) -> None:
        """``count`` leased entries lent to a group instance (negative: given back by it)."""
        with self._lock:
            self.lent += count

    def shortfall(self) -> int:
        """Waiters not covered by instances being created (or recovered) for them."""
        return len(self.waiters) - self.creating - self.recovering

    # -- the hot path ------------------------------------------------------------------------

    def take_idle(self) -> Entry | None:
        """Lease the most recently used idle entry, or return None. Never blocks."""
        # acquire/release by hand, not ``with``: half the cost on the hot path.
        lock = self._lock
        lock.acquire()
        try:
            idle = self.idle
            if not idle:
                return None
            entry = idle.pop()
            entry.state = _LEASED
            self.leased += 1
            in_use = self.leased + self.resetting
            self.peak_in_use = max(self.peak_in_use, in_use)
            self.idle_low = min(self.idle_low, len(idle))
            return entry
        finally:
            lock.release()

    def begin_reset(self, entry: Entry) -> None:
        with self._lock:
            self._expect(entry, _LEASED, "begin_reset")
            entry.state = _RESETTING
            self.leased -= 1
            self.resetting += 1

    def recycle(self, entry: Entry) -> Waiter | None:
        """A lease ended and its instance is clean already (no reset, or a sync one that
        succeeded): leased straight to the next waiter, or idle."""
        lock = self._lock
        lock.acquire()
        try:
            if entry.state is not _LEASED:
                self._expect(entry, _LEASED, "recycle")
            self.leased -= 1
            entry.leases += 1
            return self._place(entry)
        finally:
            lock.release()

    def finish_reset(self, entry: Entry) -> Waiter | None:
        """The reset succeeded: hand the entry to the first live waiter, or make it idle."""
        with self._lock:
            self._expect(entry, _RESETTING, "finish_reset")
            self.resetting -= 1
            entry.leases += 1
            return self._place(entry)

    # -- waiting -----------------------------------------------------------------------------

    def add_waiter(self, waiter: Waiter, *, first: bool = False) -> None:
        """Queue ``waiter`` last, or ``first`` (a group being built: it serves a queue of its own)."""
        with self._lock:
            if self.idle:
                raise MockPoolError(
                    f"service {self.name!r}: a waiter was queued while {len(self.idle)} instances "
                    "were idle; this is a mockpool bug, please report it"
                )
            if not self.waiters:
                self.queued_since = waiter.enqueued_at
            self.waiters[waiter] = None
            if first:
                self.waiters.move_to_end(waiter, last=False)

    def take_or_queue(self, waiter: Waiter, *, first: bool = False) -> Entry | None:
        """Lease an idle entry, or queue ``waiter`` when there is none: one step, so that no
        release from another thread can fall between the look and the queueing."""
        with self._lock:
            entry = self.take_idle()
            if entry is None:
                self.add_waiter(waiter, first=first)
            return entry

    def due_waiters(self, loop: asyncio.AbstractEventLoop, now: float) -> list[Waiter]:
        """The waiters of ``loop`` whose deadline (in that loop's time) is past."""
        with self._lock:
            return [w for w in self.waiters if w.deadline <= now and w.future.get_loop() is loop]

    def waits_in(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a waiter of ``loop`` is queued."""
        with self._lock:
            return any(w.future.get_loop() is loop for w in self.waiters)

    def next_deadline(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """The earliest deadline among the waiters of ``loop``, if any has one."""
        with self._lock:
            deadlines = [w.deadline for w in self.waiters if w.future.get_loop() is loop]
        finite = [d for d in deadlines if d != float("inf")]
        return min(finite) if finite else None

    def remove_waiter(self, waiter: Waiter) -> bool:
        """Forget a waiter that gave up; False if it was already served or removed."""
        with self._lock:
            return self.waiters.pop(waiter, False) is None

    def give_back(self, entry: Entry) -> Waiter | None:
        """A waiter received ``entry`` but gave up before using it: pass it on unchanged."""
        with self._lock:
            self._expect(entry, _LEASED, "give_back")
            self.leased -= 1
            return self._place(entry)

    def give_back_from(self, waiter: Waiter, entry: Entry) -> bool:
        """``waiter`` gave up after it was handed ``entry`` (or its loop closed before it ran):
        pass the entry on unchanged, if it is still that waiter's to give. False when it is
        not (taken back already, or destroyed by the pool's close)."""
        with self._lock:
            if entry.transit is not waiter or entry.state is not _LEASED:
                return False
            entry.transit = None
            self.leased -= 1
            self._place(entry)
            return True

    def settle_transit(self) -> int:
        """Take back the entries handed to waiters whose event loop closed before they ran
        (a loop's last step served them; pytest-asyncio 0.23 closes a test's loop without
        cancelling its tasks): nobody would ever end those leases. Returns how many."""
        with self._lock:
            stranded = [
                entry
                for entry in self.entries
                if entry.transit is not None and entry.transit.future.get_loop().is_closed()
            ]
            for entry in stranded:
                self.give_back_from(entry.transit, entry)  # type: ignore[arg-type]
            return len(stranded)

    def fail_waiters(self, exc: BaseException, limit: int | None = None) -> int:
        """Deliver ``exc`` to up to ``limit`` waiters (oldest first); return how many."""
        with self._lock:
            failed = 0
            while self.waiters and (limit is None or failed < limit):
                waiter, _ = self.waiters.popitem(last=False)
                fut = waiter.future
                loop = fut.get_loop()
                if not fut.done() and not loop.is_closed():
                    if asyncio._get_running_loop() is loop:
                        fut.set_exception(exc)
                    else:  # a waiter of another loop: set it there, waking it (see _place)
                        try:
                            loop.call_soon_threadsafe(_fail, fut, exc)
                        except RuntimeError:
                            continue  # that loop closed since it was looked at
                    failed += 1
            return failed

    def _place(self, entry: Entry) -> Waiter | None:
        if len(self.entries) > self.max_size:
            # max_size was lowered while this instance was out: it goes, instead of back.
            self._drop(entry)
            if self.on_retire is not None:
                self.on_retire(entry)
            return None
        waiters = self.waiters
        while waiters:
            waiter, _ = waiters.popitem(last=False)
            fut = waiter.future
            # A waiter whose task was cancelled (or whose loop closed) has a done future or a
            # dead loop; pass over it: the entry goes to the next one in line.
            loop = fut.get_loop()
            if fut.done() or loop.is_closed():
                continue
            entry.state = _LEASED
            entry.transit = waiter
            self.leased += 1
            if asyncio._get_running_loop() is loop:
                fut.set_result(entry)
            else:
                # A waiter of another loop (TestClient's app thread; a loop paused between
                # run_until_complete calls): set the future in its own loop, which wakes that
                # loop; if the waiter gave up meanwhile, the entry goes on from there. Even a
                # loop not running now: set from here, a loop that started meanwhile and fell
                # asleep in another thread was not woken, and its waiter slept on with the
                # instance.
                try:
                    loop.call_soon_threadsafe(self._deliver, waiter, entry)
                except RuntimeError:
                    # That loop closed since it was looked at: its waiter will never run.
                    entry.transit = None
                    self.leased -= 1
                    continue
            in_use = self.leased + self.resetting
            self.peak_in_use = max(self.peak_in_use, in_use)
            return waiter
        entry.state = _IDLE
        self.idle.append(entry)
        return None

    def _deliver(self, waiter: Waiter, entry: Entry) -> None:
        """In the waiter's own loop: hand ``entry`` over, or pass it on if the waiter gave up."""
        with self._lock:
            fut = waiter.future
            if not fut.done():
                fut.set_result(entry)
            else:
                self.give_back_from(waiter, entry)

    # -- creation ----------------------------------------------------------------------------

    def reserve_creation(self, *, lasting: bool = False) -> bool:
        """Claim a slot for one creation; False when a cap forbids it (``lasting``: for a
        waiter stalled for long, see ``Budget.has_room``)."""
        with self._lock:
            if not self.can_grow(lasting=lasting):
                return False
            self.creating += 1
            self.creations_begun += 1
            self.budget.total += 1
            return True

    def cancel_creation(self) -> None:
        """A reserved creation failed or was cancelled: release its slot."""
        with self._lock:
            if self.creating <= 0:
                raise MockPoolError(f"service {self.name!r}: cancel_creation without a reservation")
            self.creating -= 1
            self.creations_ended += 1
            self.budget.total -= 1

    def add_created(self, entry: Entry) -> Waiter | None:
        """A reserved creation finished: the entry joins the pool (or the first waiter)."""
        with self._lock:
            if self.creating <= 0:
                raise MockPoolError(f"service {self.name!r}: add_created without a reservation")
            self.creating -= 1
            self.creations_ended += 1
            self.entries.add(entry)
            return self._place(entry)

    # -- health checks, recovery, removal ----------------------------------------------------

    def take_for_check(self, entry: Entry) -> bool:
        """Move an idle entry out of the idle stack for a health check; False if not idle."""
        with self._lock:
            if entry.state is not _IDLE:
                return False
            self.idle.remove(entry)
            entry.state = _CHECKING
            self.checking += 1
            self.idle_low = min(self.idle_low, len(self.idle))
            return True

    def finish_check(self, entry: Entry) -> Waiter | None:
        with self._lock:
            self._expect(entry, _CHECKING, "finish_check")
            self.checking -= 1
            return self._place(entry)

    def begin_recovery(self, entry: Entry) -> None:
        """Send a leased, resetting, checking or idle entry to recovery."""
        with self._lock:
            state = entry.state
            if state is _LEASED:
                self.leased -= 1
            elif state is _RESETTING:
                self.resetting -= 1
            elif state is _CHECKING:
                self.checking -= 1
            elif state is _IDLE:
                self.idle.remove(entry)
            else:
                self._expect(entry, _LEASED, "begin_recovery")
            entry.state = _RECOVERING
            self.recovering += 1

    def finish_recovery(self, entry: Entry) -> Waiter | None:
        """Recovery produced a working instance in ``entry``: serve a waiter or go idle."""
        with self._lock:
            self._expect(entry, _RECOVERING, "finish_recovery")
            self.recovering -= 1
            return self._place(entry)

    def take_idle_for_removal(self, entry: Entry | None = None) -> Entry | None:
        """Detach one idle entry (the least recently used, or ``entry``) to destroy it."""
        with self._lock:
            if entry is None:
                if not self.idle:
                    return None
                entry = self.idle.popleft()
            elif entry.state is _IDLE:
                self.idle.remove(entry)
            else:
                return None
            self.idle_low = min(self.idle_low, len(self.idle))
            self._drop(entry)
            return entry

    def remove(self, entry: Entry) -> None:
        """Drop an entry in any live state from the books (before destroying its instance)."""
        with self._lock:
            state = entry.state
            if state is _DESTROYED:
                return
            if state is _IDLE:
                self.idle.remove(entry)
            elif state is _LEASED:
                self.leased -= 1
            elif state is _RESETTING:
                self.resetting -= 1
            elif state is _CHECKING:
                self.checking -= 1
            elif state is _RECOVERING:
                self.recovering -= 1
            self._drop(entry)

    def _drop(self, entry: Entry) -> None:
        entry.state = _DESTROYED
        self.entries.discard(entry)
        self.budget.total -= 1

    def _expect(self, entry: Entry, state: EntryState, step: str) -> None:
        if entry.state is not state:
            raise MockPoolError(
                f"service {self.name!r}: {step} expected entry #{entry.id} to be "
                f"{state.value}, but it is {entry.state.value}; this is a mockpool bug"
            )

    # -- invariants --------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise :class:`MockPoolError` naming the first broken invariant."""

        def broken(what: str) -> MockPoolError:
            return MockPoolError(f"service {self.name!r}: invariant broken: {what} ({self.describe()})")

        counts = dict.fromkeys(EntryState, 0)
        for entry in self.entries:
            counts[entry.state] += 1
        if counts[_DESTROYED]:
            raise broken("a destroyed entry is still counted as live")
        if len(self.idle) != counts[_IDLE] or len(set(map(id, self.idle))) != len(self.idle):
            raise broken("the idle stack does not hold exactly the idle entries")
        if any(entry not in self.entries for entry in self.idle):
            raise broken("an idle entry is not a live entry")
        for state, counter in (
            (_LEASED, self.leased),
            (_RESETTING, self.resetting),
            (_CHECKING, self.checking),
            (_RECOVERING, self.recovering),
        ):
            if counts[state] != counter:
                raise broken(f"{state.value} counter {counter} != {counts[state]} entries")
        if self.size != len(self.idle) + self.in_use + self.checking + self.recovering:
            raise broken("size != idle + in_use + checking + recovering")
        if self.creating < 0:
            raise broken("creating < 0")
        if not self.closed and not 0 <= self.lent <= self.leased:
            raise broken(f"{self.lent} entries lent to groups, {self.leased} leased")
        if self.creations_begun - self.creations_ended != self.creating:
            raise broken("creations begun - ended != creating")
        if self.size > self.max_size and self.idle:
            # Above a lowered max_size, instances go as they come back; none may sit idle.
            raise broken(f"an instance is idle while size > max_size={self.max_size}")
        if self.idle and self.waiters:
            raise broken("a waiter is queued while an instance is idle")
        for waiter in self.waiters:
            if waiter.future.done() and not waiter.future.cancelled():
                raise broken("a served waiter is still queued")

    def describe(self) -> str:
        return (
            f"size={self.size}, idle={len(self.idle)}, in_use={self.in_use}, "
            f"creating={self.creating}, checking={self.checking}, recovering={self.recovering}, "
            f"waiting={len(self.waiters)}, max_size={self.max_size}"
        )


def _fail(fut: asyncio.Future[Entry], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
