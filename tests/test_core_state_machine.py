"""Hypothesis state machines. Over the synchronous core: every interleaving of acquire,
release, cancel (while waiting, and after a hand-over), timeouts, failing factories, failing
resets, health checks and evictions keeps the books exact. Over a real service pool in virtual
time: its counters agree with what the acquirers saw."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import looptime
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mockpool import MockPool, ServiceSpec
from mockpool.core import Budget, Entry, EntryState, ServiceCore, Waiter
from mockpool.errors import AcquireTimeout, MockPoolError

T = TypeVar("T")


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # The waiters' loop, not running here (the machine runs in no loop): the core schedules
        # its deliveries there, and the machine runs them (``_collect_served``).
        self.loop = asyncio.new_event_loop()
        self.retired: list[Entry] = []
        self.core = ServiceCore(
            "svc", min_size=0, max_size=3, budget=Budget(None), on_retire=self.retired.append
        )
        self.held: list[Entry] = []
        #: Held entries lent to a group instance (members it keeps for its life).
        self.lent: list[Entry] = []
        self.waiting: list[Waiter] = []
        self.recovering: list[Entry] = []
        self.checking: list[Entry] = []
        self.creations = 0

    def teardown(self) -> None:
        self.loop.close()

    # -- helpers --------------------------------------------------------------------------

    def _collect_served(self) -> None:
        """Waiters whose future got an entry now hold it (the task would resume). The core
        delivers in the waiter's own loop (another one than the running one, here none): run
        what it scheduled there first."""
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
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
    def lend_to_a_group(self, i: int) -> None:
        """A group instance being built takes a held entry as its member, for its life."""
        entry = self.held.pop(i % len(self.held))
        self.core.lend(1)
        self.lent.append(entry)

    @precondition(lambda self: bool(self.lent))
    @rule(i=st.integers(0, 100))
    def group_gives_a_member_back(self, i: int) -> None:
        """The group instance is destroyed: its member is released like any lease."""
        entry = self.lent.pop(i % len(self.lent))
        self.core.lend(-1)
        self.core.begin_reset(entry)
        self.core.finish_reset(entry)
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
        out = self.held + self.lent
        assert len({id(e) for e in out}) == len(out), "an entry is held twice"
        assert all(e.state is EntryState.LEASED for e in out)
        assert core.leased == len(self.held) + len(self.lent)
        assert core.lent == len(self.lent)
        assert core.recovering == len(self.recovering)
        assert core.creating == self.creations
        # Above a lowered max_size only while instances are out; they go as they come back.
        assert core.size <= core.max_size or not core.idle
        assert all(e.state is EntryState.DESTROYED and e not in core.entries for e in self.retired)
        assert core.waiting == len(self.waiting)
        # Nobody waits while an instance is idle.
        assert not (core.idle and core.waiters)


TestCoreMachine = CoreMachine.TestCase


# == the same books through a real ServicePool, in virtual time ================================


class LoopClock:
    """The event loop's (virtual) time as the pool's clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: Virtual seconds a settle may take before the example fails as a livelock.
SETTLE_LIMIT_S = 600.0


class User:
    """One acquirer: a task that acquires, holds until told, and notes how it ended."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.release = asyncio.Event()
        self.acquiring = False
        #: "served", "timeout", "cancelled" (while acquiring) or "error"; set once.
        self.outcome: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        return self.outcome == "served" and self.task is not None and not self.task.done()


class PoolMachine(RuleBasedStateMachine):
    """Acquire (with and without timeouts), release, cancel at any moment (also in the loop
    step of the waiter's own deadline), let time pass, break and heal the factory and the
    reset: the pool's counters always equal what the acquirers saw, one outcome each, and
    ``size == created - destroyed`` whenever nothing is being created or recovered."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = looptime.new_event_loop(start=0.0)
        self.broken = {"factory": False, "reset": False}
        # The pool's clock is the loop's virtual one: its sizing decisions read hold and
        # creation times, which on the real clock vary with the machine's load and would make
        # Hypothesis' replays of an example diverge.
        self.pool = MockPool(supervise=False, default_timeout=None, clock=LoopClock(self.loop))
        self.pool.register(ServiceSpec(name="svc", factory=self._factory, reset=self._reset, max_size=3))
        self._run(self.pool.start())
        self.users: list[User] = []

    def _factory(self) -> dict[str, int]:
        if self.broken["factory"]:
            raise OSError("factory broken by the test")
        return {}

    def _reset(self, instance: dict[str, int]) -> None:
        if self.broken["reset"]:
            raise ValueError("reset broken by the test")

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def _settle(self) -> None:
        """Run until every task waits. Bounded in virtual time: a pool whose timers keep tasks
        busy for ever (a broken factory retried without backoff did) fails the example here,
        with its steps, instead of hanging the run."""

        async def settle() -> bool:
            with anyio.move_on_after(SETTLE_LIMIT_S):
                for _ in range(3):
                    await anyio.wait_all_tasks_blocked()
                    await asyncio.sleep(0)
                return True
            return False

        assert self._run(settle()), f"tasks still busy after {SETTLE_LIMIT_S} s of virtual time"

    async def _use(self, user: User, timeout: float | None) -> None:
        user.acquiring = True
        try:
            async with self.pool.acquire("svc", timeout=timeout):
                user.outcome = "served"
                await user.release.wait()
        except AcquireTimeout:
            user.outcome = "timeout"
        except asyncio.CancelledError:
            if user.outcome is None:
                user.outcome = "cancelled"
            raise
        except MockPoolError:  # RecoveryFailedError: the factory is broken and nothing is alive
            user.outcome = "error"

    def _live(self) -> list[User]:
        return [u for u in self.users if u.task is not None and not u.task.done()]

    def teardown(self) -> None:
        for user in self._live():
            assert user.task is not None
            user.task.cancel()
        self._settle()
        self._run(self.pool.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    # -- rules ----------------------------------------------------------------------------

    @rule(timeout=st.sampled_from([None, 0.5, 2.0]))
    def acquire(self, timeout: float | None) -> None:
        user = User(None if timeout is None else self.loop.time() + timeout)
        user.task = self.loop.create_task(self._use(user, timeout))
        self.users.append(user)
        self._settle()

    @precondition(lambda self: any(u.holding for u in self.users))
    @rule(i=st.integers(0, 100))
    def release(self, i: int) -> None:
        holders = [u for u in self.users if u.holding]
        holders[i % len(holders)].release.set()
        self._settle()

    @precondition(lambda self: bool(self._live()))
    @rule(i=st.integers(0, 100))
    def cancel(self, i: int) -> None:
        live = self._live()
        task = live[i % len(live)].task
        assert task is not None
        task.cancel()
        self._settle()

    @precondition(lambda self: any(u.deadline is not None and u.outcome is None for u in self._live()))
    @rule(i=st.integers(0, 100))
    def cancel_at_its_deadline(self, i: int) -> None:
        """Cancel a waiter in the very loop step its deadline passes."""
        waiting = [u for u in self._live() if u.deadline is not None and u.outcome is None]
        user = waiting[i % len(waiting)]
        assert user.task is not None and user.deadline is not None
        self.loop.call_at(user.deadline, user.task.cancel)
        self._run(asyncio.sleep(max(0.0, user.deadline - self.loop.time())))  # virtual time
        self._settle()

    @rule(seconds=st.sampled_from([0.1, 0.6, 2.5]))
    def time_passes(self, seconds: float) -> None:
        self._run(asyncio.sleep(seconds))  # virtual time: deadlines pass
        self._settle()

    @rule(hook=st.sampled_from(["factory", "reset"]), broken=st.booleans())
    def break_or_heal(self, hook: str, broken: bool) -> None:
        self.broken[hook] = broken

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def counters_agree_with_the_acquirers(self) -> None:
        self.pool.check_invariants()
        stats = self.pool.stats("svc")
        seen = collections.Counter(u.outcome for u in self.users if u.outcome is not None)
        assert stats.acquisitions == sum(u.acquiring for u in self.users)
        assert (stats.served, stats.timeouts, stats.cancellations, stats.acquire_errors) == (
            seen["served"],
            seen["timeout"],
            seen["cancelled"],
            seen["error"],
        )
        # Exactly one outcome per acquisition: those that ended, plus those still waiting.
        pending = sum(u.acquiring and u.outcome is None for u in self.users)
        ended = stats.served + stats.timeouts + stats.cancellations + stats.acquire_errors
        assert ended + pending == stats.acquisitions
        assert stats.hits <= stats.reuses <= stats.served

    @invariant()
    def live_instances_are_created_minus_destroyed(self) -> None:
        stats = self.pool.stats("svc")
        if stats.creating == 0 and stats.recovering == 0:
            assert stats.size == stats.created - stats.destroyed, stats


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(stateful_step_count=30, deadline=None)


# == several services, a group and max_total: bounds and liveness ===============================


class Person:
    """One acquirer of the several-services machine: acquires, holds until told, and notes how
    it ended; ``discard`` sends its instance to recovery as it lets go."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.release = asyncio.Event()
        self.discard = False
        self.outcome: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        return self.outcome == "served" and self.task is not None and not self.task.done()


class ServicesMachine(RuleBasedStateMachine):
    """Two services and a group on one of them under a pool-wide ``max_total``, without
    supervisors: acquire, release, discard, cancel, break and heal factories and resets,
    ``resize``, let time pass. The bounds hold as the factory and destroy hooks count instances
    (a rebuild made beside the broken instance was one past ``max_size``); and after two
    seconds a waiter with nothing held for it has something on its way, unless its factory is
    broken (retried with backoff) or nothing could make room (every other instance held, or
    every one of its own lent to groups that tests hold)."""

    MAX_TOTAL = 4

    def __init__(self) -> None:
        super().__init__()
        self.loop = looptime.new_event_loop(start=0.0)
        self.broken: collections.Counter[str] = collections.Counter()
        self.alive: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.pool = MockPool(
            supervise=False, default_timeout=None, clock=LoopClock(self.loop), max_total=self.MAX_TOTAL
        )
        for name in ("a", "b"):
            self.pool.register(
                ServiceSpec(
                    name=name,
                    factory=self._factory(name),
                    reset=self._reset(name),
                    destroy=self._destroy(name),
                    max_size=2,
                )
            )
        self.pool.register(
            ServiceSpec(
                name="g",
                factory=self._group_factory,
                destroy=self._destroy("g"),
                depends_on=("a",),
                max_size=2,
            )
        )
        self.loop.run_until_complete(self.pool.start())
        self.people: list[Person] = []

    def _made(self, name: str) -> None:
        self.alive[name] += 1
        core = self.pool.service_pools[name].core
        # A creation takes a slot under max_size; a rebuild the slot of the instance it
        # replaces, destroyed first (size counts that entry; above a lowered max_size too).
        if self.alive[name] > max(core.max_size, core.size):
            self.violations.append(f"{name}: {self.alive[name]} alive, {core.describe()}")
        if sum(self.alive.values()) > self.MAX_TOTAL:
            self.violations.append(f"{dict(self.alive)} alive, max_total={self.MAX_TOTAL}")

    def _factory(self, name: str) -> Callable[[], dict[str, str]]:
        def make() -> dict[str, str]:
            if self.broken[name + ".factory"]:
                raise OSError("factory broken by the test")
            self._made(name)
            return {"service": name}

        return make

    def _group_factory(self, a: dict[str, str]) -> dict[str, object]:
        self._made("g")
        return {"service": "g", "a": a}

    def _reset(self, name: str) -> Callable[[dict[str, str]], None]:
        def reset(instance: dict[str, str]) -> None:
            if self.broken[name + ".reset"]:
                raise ValueError("reset broken by the test")

        return reset

    def _destroy(self, name: str) -> Callable[[object], None]:
        def destroy(instance: object) -> None:
            self.alive[name] -= 1

        return destroy

    def _settle(self, seconds: float = 0.0) -> None:
        async def settle() -> bool:
            if seconds:
                await asyncio.sleep(seconds)  # virtual time: stall checks come due
            with anyio.move_on_after(SETTLE_LIMIT_S):
                for _ in range(3):
                    await anyio.wait_all_tasks_blocked()
                    await asyncio.sleep(0)
                return True
            return False

        assert self.loop.run_until_complete(settle()), "tasks still busy"

    async def _use(self, person: Person) -> None:
        try:
            lease = self.pool.acquire(person.service)
            async with lease:
                person.outcome = "served"
                await person.release.wait()
                if person.discard:
                    lease.discard()
        except asyncio.CancelledError:
            if person.outcome is None:
                person.outcome = "cancelled"
            raise
        except MockPoolError:  # RecoveryFailedError: a factory is broken and nothing is alive
            person.outcome = "error"

    def _live(self) -> list[Person]:
        return [p for p in self.people if p.task is not None and not p.task.done()]

    def teardown(self) -> None:
        for person in self._live():
            assert person.task is not None
            person.task.cancel()
        self._settle()
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        assert self.violations == []
        assert sum(self.alive.values()) == 0, dict(self.alive)

    # -- rules ----------------------------------------------------------------------------

    @rule(service=st.sampled_from(["a", "b", "g"]))
    def acquire(self, service: str) -> None:
        person = Person(service)
        person.task = self.loop.create_task(self._use(person))
        self.people.append(person)
        self._settle()

    @precondition(lambda self: any(p.holding for p in self.people))
    @rule(i=st.integers(0, 100), discard=st.booleans())
    def release(self, i: int, discard: bool) -> None:
        holders = [p for p in self.people if p.holding]
        person = holders[i % len(holders)]
        person.discard = discard
        person.release.set()
        self._settle()

    @precondition(lambda self: bool(self._live()))
    @rule(i=st.integers(0, 100))
    def cancel(self, i: int) -> None:
        live = self._live()
        task = live[i % len(live)].task
        assert task is not None
        task.cancel()
        self._settle()

    @rule(seconds=st.sampled_from([0.05, 0.3, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self._settle(seconds)

    @rule(hook=st.sampled_from(["a.factory", "a.reset", "b.factory", "b.reset"]), broken=st.booleans())
    def break_or_heal(self, hook: str, broken: bool) -> None:
        self.broken[hook] = broken

    @rule(service=st.sampled_from(["a", "b", "g"]), max_size=st.integers(1, 3))
    def resize(self, service: str, max_size: int) -> None:
        self.loop.run_until_complete(self.pool.resize(service, max_size=max_size))
        self._settle()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def bounds_hold(self) -> None:
        self.pool.check_invariants()
        assert self.violations == []
        for svc in self.pool.service_pools.values():
            core = svc.core
            # Past max_size only after resize lowered it under instances in use: none idle.
            assert core.size + core.creating <= core.max_size or not core.idle, core.describe()

    @invariant()
    def a_waiter_with_nothing_held_gets_something_on_its_way(self) -> None:
        self._settle(2.0)
        services = self.pool.service_pools
        for name, svc in services.items():
            core = svc.core
            if (
                not core.waiters
                or core.in_use > core.lent
                or core.creating
                or core.recovering
                or core.checking
            ):
                continue
            if self.broken[f"{name}.factory"] or (name == "g" and self.broken["a.factory"]):
                continue  # retried with backoff
            room = core.size + core.creating < core.max_size
            full = self.pool.budget.total >= self.MAX_TOTAL
            others_idle = any(other.core.idle for other in services.values() if other is not svc)
            idle_groups = any(
                other.core.idle for other in services.values() if any(m is svc for _, m in other.member_paths)
            )
            state = {n: s.core.describe() for n, s in services.items()}
            assert not (room and not full), (name, state)  # a creation was possible
            assert not (room and others_idle), (name, state)  # room could have been made
            assert not idle_groups, (name, state)  # an idle group could give its member back


TestServicesMachine = ServicesMachine.TestCase
# A bounded number of examples in every profile: each step lets two virtual seconds pass.
TestServicesMachine.settings = settings(stateful_step_count=30, deadline=None, max_examples=100)
