"""A Hypothesis state machine over the synchronous core: every interleaving of acquire,
release, cancel (while waiting, and after a hand-over), timeouts, failing factories, failing
resets, health checks and evictions keeps the books exact."""

from __future__ import annotations

import asyncio

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mockpool.core import Budget, Entry, EntryState, ServiceCore, Waiter
from mockpool.errors import AcquireTimeout


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Futures of a loop that never runs: the core only sets them, never awaits.
        self.loop = asyncio.new_event_loop()
        self.retired: list[Entry] = []
        self.core = ServiceCore(
            "svc", min_size=0, max_size=3, budget=Budget(None), on_retire=self.retired.append
        )
        self.held: list[Entry] = []
        self.waiting: list[Waiter] = []
        self.recovering: list[Entry] = []
        self.checking: list[Entry] = []
        self.creations = 0

    def teardown(self) -> None:
        self.loop.close()

    # -- helpers --------------------------------------------------------------------------

    def _collect_served(self) -> None:
        """Waiters whose future got an entry now hold it (the task would resume)."""
        for waiter in list(self.waiting):
            fut = waiter.future
            if fut.done() and not fut.cancelled():
                self.waiting.remove(waiter)
                if fut.exception() is None:
                    self.held.append(fut.result())
                else:
                    fut.exception()  # retrieved: no "never retrieved" log

    # -- rules ----------------------------------------------------------------------------

    @rule(first=st.booleans())
    def acquire(self, first: bool) -> None:
        entry = self.core.take_idle()
        if entry is not None:
            self.held.append(entry)
            return
        waiter = Waiter(self.loop.create_future(), 0.0)
        # first: a group being built queues at the front of its members' queues.
        self.core.add_waiter(waiter, first=first)
        self.waiting.append(waiter)
        while self.core.shortfall() > 0 and self.core.reserve_creation():
            self.creations += 1

    @precondition(lambda self: self.creations > 0)
    @rule(ok=st.booleans())
    def creation_finishes(self, ok: bool) -> None:
        self.creations -= 1
        if ok:
            self.core.add_created(Entry(object(), now=0.0))
        else:
            self.core.cancel_creation()
        self._collect_served()

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 100), reset_ok=st.booleans())
    def release(self, i: int, reset_ok: bool) -> None:
        entry = self.held.pop(i % len(self.held))
        self.core.begin_reset(entry)
        if reset_ok:
            self.core.finish_reset(entry)
        else:
            self.core.begin_recovery(entry)
            self.recovering.append(entry)
        self._collect_served()

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 100))
    def discard(self, i: int) -> None:
        entry = self.held.pop(i % len(self.held))
        self.core.begin_recovery(entry)
        self.recovering.append(entry)

    @precondition(lambda self: bool(self.recovering))
    @rule(i=st.integers(0, 100), ok=st.booleans())
    def recovery_finishes(self, i: int, ok: bool) -> None:
        entry = self.recovering.pop(i % len(self.recovering))
        if ok:
            self.core.finish_recovery(entry)
        else:
            self.core.remove(entry)
        self._collect_served()

    @precondition(lambda self: bool(self.waiting))
    @rule(i=st.integers(0, 100))
    def cancel_waiter(self, i: int) -> None:
        """The waiting task is cancelled: its future is cancelled, then it cleans up."""
        waiter = self.waiting.pop(i % len(self.waiting))
        waiter.future.cancel()
        self.core.remove_waiter(waiter)

    @precondition(lambda self: bool(self.held))
    @rule()
    def cancel_after_handover(self) -> None:
        """An entry reached a waiter, whose task was cancelled before it ran: give it back."""
        entry = self.held.pop()
        self.core.give_back(entry)
        self._collect_served()

    @precondition(lambda self: bool(self.waiting))
    @rule(i=st.integers(0, 100))
    def timeout_waiter(self, i: int) -> None:
        waiter = self.waiting[i % len(self.waiting)]
        if self.core.remove_waiter(waiter):
            waiter.future.set_exception(AcquireTimeout("svc", 1.0, size=0, in_use=0, waiting=0, max_size=3))
        self._collect_served()

    @precondition(lambda self: bool(self.core.idle))
    @rule(healthy=st.booleans())
    def health_check(self, healthy: bool) -> None:
        entry = self.core.idle[0]
        assert self.core.take_for_check(entry)
        if healthy:
            self.core.finish_check(entry)
            self._collect_served()
        else:
            self.core.begin_recovery(entry)
            self.recovering.append(entry)

    @precondition(lambda self: bool(self.core.idle))
    @rule()
    def evict(self) -> None:
        entry = self.core.take_idle_for_removal()
        assert entry is not None and entry.state is EntryState.DESTROYED

    @rule(max_size=st.integers(1, 4))
    def resize(self, max_size: int) -> None:
        """Lower or raise max_size while instances are out: idle ones beyond it go now, the
        others as they come back (``on_retire``)."""
        core = self.core
        core.max_size = max_size
        while core.size > max_size and core.take_idle_for_removal() is not None:
            pass

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def books_are_exact(self) -> None:
        core = self.core
        core.check_invariants()
        assert len({id(e) for e in self.held}) == len(self.held), "an entry is held twice"
        assert all(e.state is EntryState.LEASED for e in self.held)
        assert core.leased == len(self.held)
        assert core.recovering == len(self.recovering)
        assert core.creating == self.creations
        # Above a lowered max_size only while instances are out; they go as they come back.
        assert core.size <= core.max_size or not core.idle
        assert all(e.state is EntryState.DESTROYED and e not in core.entries for e in self.retired)
        assert core.waiting == len(self.waiting)
        # Nobody waits while an instance is idle.
        assert not (core.idle and core.waiters)


TestCoreMachine = CoreMachine.TestCase
