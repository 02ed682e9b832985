"""The sizing controller (mockpool.sizing) is a pure function: tested without an event loop,
by table, by properties, and driven by a Hypothesis state machine of a service under load."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mockpool.sizing import (
    PROBE_AFTER,
    SATURATED,
    LimitState,
    SizingInput,
    Window,
    creations,
    members_room,
    next_limit,
    stall_s,
)

BASE = SizingInput(
    size=4,
    creating=0,
    recovering=0,
    in_use=4,
    waiting=10,
    max_size=64,
    limit=64,
    hold_s=0.020,
    create_s=0.001,
    busy=0.2,
    lease_cost=0.01,
)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # I/O-bound holds, a cheap double, an idle loop: a creation per waiter a release would
        # serve later than a creation would
        (BASE, 10),
        # the loop would saturate: about SATURATED / lease_cost leases at most
        (replace(BASE, lease_cost=0.1), int(SATURATED / 0.1) - 4),
        (replace(BASE, busy=SATURATED), 0),
        # CPU-bound holds on an expensive double: releases serve the queue sooner
        (replace(BASE, hold_s=0.002, create_s=0.020, in_use=1, size=1), 0),
        # the first waiters go to releases, the ones further back get creations
        (replace(BASE, hold_s=0.020, create_s=0.030, in_use=4, waiting=10), 4),
        # creations and recoveries on their way cover waiters
        (replace(BASE, creating=4, recovering=6), 0),
        # the user's bound, the search's limit, a share of max_total
        (replace(BASE, max_size=6), 2),
        (replace(BASE, limit=5), 1),
        (replace(BASE, share=4), 0),
        # memory is tight: not even one, while something is held
        (replace(BASE, memory_tight=True), 0),
        # slow start: one at a time until a creation and a lease were measured...
        (replace(BASE, hold_s=None), 1),
        (replace(BASE, hold_s=None, creating=1), 0),
        # ...but not on a loop measured saturated while they waited: another instance runs no
        # test sooner there, whatever the leases turn out to take
        (replace(BASE, hold_s=None, busy=SATURATED), 0),
        (replace(BASE, create_s=None, busy=1.0), 0),
        (replace(BASE, hold_s=None, busy=SATURATED - 0.01), 1),
        # ...a reading from before they queued is the burst's start, not the leases'
        (replace(BASE, hold_s=None, busy=SATURATED, load_predates_queue=True), 1),
        # ...and the loop's load
        (replace(BASE, lease_cost=None), 1),
        # ...but not once leases ended on a loop read as saturated, from before the queue too,
        # as the measured rule below
        (replace(BASE, lease_cost=None, busy=SATURATED), 0),
        (replace(BASE, lease_cost=None, busy=SATURATED, load_predates_queue=True), 0),
        (replace(BASE, lease_cost=None, busy=SATURATED - 0.01), 1),
        # ...but not past the size earlier runs settled at: a run warmed to it from history has
        # its creations measured, not yet its leases, and grew at every run
        (replace(BASE, hold_s=None, settled=4), 0),
        (replace(BASE, lease_cost=None, settled=4), 0),
        (replace(BASE, hold_s=None, settled=5), 1),
        # ...which the measured rule may pass once it can decide
        (replace(BASE, settled=4), 10),
        # ...on a load measured while the waiters waited: one taken before they came (the
        # idle moments before a burst) counts as not measured yet
        (replace(BASE, load_predates_queue=True), 1),
        (replace(BASE, load_predates_queue=True, settled=4), 0),
        (replace(BASE, load_predates_queue=True, creating=1), 0),
        # ...but a loop saturated before they came is no less saturated with them
        (replace(BASE, load_predates_queue=True, busy=SATURATED), 0),
        # liveness: nothing held, nothing on its way, whatever the measurements say
        (replace(BASE, in_use=0, size=0, busy=1.0, memory_tight=True, limit=0), 1),
        # a stall: holders may wait for the waiters themselves
        (replace(BASE, stalled=True, busy=1.0, limit=4), 1),
        (replace(BASE, stalled=True, creating=1), 0),
        # ...within the service's share of max_total, beyond it only when the stall lasts
        (replace(BASE, stalled=True, share=4), 0),
        (replace(BASE, stalled=True, share=4, lasting=True), 1),
        (replace(BASE, stalled=True, share=5), 1),
        # a sync factory holds the loop while it builds: not past sqrt(n * hold / create),
        # n the leases held and waiting (here sqrt(1,199 * 0.020 / 0.020) = 34)
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=1195), 34 - 4),
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=1195, size=34), 0),
        # ...from the leases' own work: holds that creations stretched from 20 to 80 ms count
        # as 20 ms (here sqrt(1,199 * 0.020 / 0.020) = 34)
        (
            replace(BASE, create_blocks=True, create_s=0.020, hold_s=0.080, work_s=0.020, waiting=1195),
            34 - 4,
        ),
        # ...n counts the tests queued at services whose holders wait here (nested leases):
        # 32 waiters here hold the group they queued for, 1,163 more wait for it and will lease
        # this service next (sqrt(1,199 * 0.020 / 0.020) = 34, against sqrt(36) = 6 without;
        # the 4 first waiters go to releases)
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=32), 6 - 4),
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=32, upstream=1163), 32 - 4),
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=60, upstream=1135), 34 - 4),
        # ...and the leases that queued here earlier in the run: as many are likely to queue
        # again, and an instance made now serves them too (tests that each fan out 50 leases:
        # sqrt(56 * 0.010 / 0.011) = 7 for one queue, sqrt(556 * 0.010 / 0.011) = 22 after ten)
        (replace(BASE, create_blocks=True, create_s=0.011, hold_s=0.010, in_use=6, size=6, waiting=50), 1),
        (
            replace(
                BASE,
                create_blocks=True,
                create_s=0.011,
                hold_s=0.010,
                in_use=6,
                size=6,
                waiting=50,
                queued_before=500,
            ),
            22 - 6,
        ),
        # ...a creation measured as taking no time at all sets no bound (the ratio overflows)
        (replace(BASE, create_blocks=True, create_s=1e-308, hold_s=1.0, in_use=1, waiting=1), 1),
        # ...but an async factory's creations overlap the leases: no such bound
        (replace(BASE, create_s=0.020, in_use=4, waiting=1195), 64 - 4),
        # members lent to groups serve no direct lease: the square-root size, the search's
        # limit and the loop's capacity count the others (the user's bound counts them all)
        (replace(BASE, create_blocks=True, create_s=0.020, in_use=4, waiting=1195, size=34, lent=30), 30),
        (replace(BASE, limit=5, size=8, lent=4), 1),
        (replace(BASE, lease_cost=0.1, size=12, lent=8), int(SATURATED / 0.1) - 4),
        (replace(BASE, max_size=12, size=12, lent=8), 0),
        # a group keeps one instance of each member: not past its members' room, even after a
        # stall that lasts (the holders may be waiting for a member the groups keep)...
        (replace(BASE, members_room=0), 0),
        (replace(BASE, members_room=3, creating=1), 2),
        (replace(BASE, stalled=True, members_room=0), 0),
        (replace(BASE, stalled=True, lasting=True, share=4, members_room=0), 0),
        (replace(BASE, stalled=True, members_room=1), 1),
        # ...but a group with nothing held and nothing on its way still gets its first
        (replace(BASE, in_use=0, size=0, members_room=0), 1),
    ],
)
def test_creations(case: SizingInput, expected: int) -> None:
    assert creations(case) == expected


sizing_inputs = st.builds(
    SizingInput,
    size=st.integers(0, 70),
    creating=st.integers(0, 10),
    recovering=st.integers(0, 5),
    in_use=st.integers(0, 70),
    waiting=st.integers(0, 2000),
    max_size=st.integers(1, 64),
    limit=st.integers(1, 64),
    hold_s=st.none() | st.floats(0, 5),
    create_s=st.none() | st.floats(0, 5),
    busy=st.none() | st.floats(0, 1),
    lease_cost=st.none() | st.floats(0, 1),
    memory_tight=st.booleans(),
    stalled=st.booleans(),
    share=st.none() | st.integers(1, 64),
    settled=st.integers(0, 70),
    create_blocks=st.booleans(),
    work_s=st.none() | st.floats(0, 5),
    lent=st.integers(0, 70),
    members_room=st.none() | st.integers(-10, 70),
    upstream=st.integers(0, 2000),
    load_predates_queue=st.booleans(),
    queued_before=st.integers(0, 5000),
)


@given(sizing_inputs)
def test_creations_never_pass_the_users_bound_nor_serve_nobody(s: SizingInput) -> None:
    n = creations(s)
    assert n >= 0
    assert s.size + s.creating + n <= max(s.max_size, s.size + s.creating)
    assert n <= max(0, s.waiting - s.creating - s.recovering)


@given(sizing_inputs)
def test_a_waiter_with_nothing_held_and_nothing_on_its_way_always_gets_a_creation(s: SizingInput) -> None:
    s = replace(
        s, in_use=0, creating=0, recovering=0, size=min(s.size, s.max_size - 1), waiting=s.waiting + 1
    )
    assert creations(s) >= 1


def test_members_room_keeps_half_of_each_member_used_directly() -> None:
    # (max_size, lent, used directly): 64 - 10 - 32 for the first, 64 for the second
    assert members_room([(64, 10, True), (64, 0, False)]) == 22
    assert members_room([(2, 1, True)]) == 0
    # a member of max_size 1 can still be lent (the idle group gives it back to its waiters)
    assert members_room([(1, 0, True)]) == 1
    assert members_room([(4, 4, False)]) == 0


def test_stall_s() -> None:
    assert stall_s(None, 0) == 0.05
    assert stall_s(0.5, 2) == 0.5
    assert stall_s(0.001, 4) == 0.05


def test_a_failing_factory_is_retried_with_backoff() -> None:
    """Each creation failed in a row doubles the wait before the next stall check (which
    retries the factory for a waiter), up to a second; a long hold still wins."""
    waits = [stall_s(None, 0, failures) for failures in range(8)]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert stall_s(3.0, 1, failures=2) == 6.0
    assert stall_s(None, 0, failures=10_000) == 1.0


class TestTheSearch:
    def test_a_size_that_did_not_raise_throughput_caps_the_limit(self) -> None:
        state = next_limit(LimitState(64), Window(100, 1.0, size=4, waited=True), 64)
        state = next_limit(state, Window(102, 1.0, size=8, waited=True), 64)
        assert state.limit == 4
        # ...probed one higher after a while, since the load may change
        for _ in range(PROBE_AFTER):
            state = next_limit(state, Window(100, 1.0, size=8, waited=True), 64)
        assert state.limit == 5

    def test_a_size_that_raised_throughput_keeps_the_limit_open(self) -> None:
        state = next_limit(LimitState(64), Window(100, 1.0, size=4, waited=True), 64)
        state = next_limit(state, Window(200, 1.0, size=8, waited=True), 64)
        assert state.limit == 64

    def test_without_waiting_there_is_nothing_to_learn_but_the_largest_size(self) -> None:
        state = LimitState(7, last_size=3, last_rate=5.0, peak=9)
        assert next_limit(state, Window(0, 1.0, size=9, waited=False), 64) == state
        assert next_limit(state, Window(0, 1.0, size=12, waited=False), 64) == replace(state, peak=12)

    def test_a_saturated_loop_caps_at_the_current_size(self) -> None:
        state = next_limit(LimitState(64), Window(100, 1.0, size=3, waited=True, busy=0.99), 64)
        assert state.limit == 3

    def test_a_saturated_loop_caps_no_lower_than_the_largest_size_seen(self) -> None:
        """Groups that take a member's instances lower the size serving its own tests (24 to
        1 for the stress suite's jwt, under device_session): capped there by a saturated
        window, its own tests took turns on one instance for the next 5 s."""
        state = next_limit(LimitState(64), Window(100, 1.0, size=24, waited=False), 64)
        state = next_limit(state, Window(100, 1.0, size=1, waited=True, busy=0.99), 64)
        assert state.limit == 24

    def test_a_window_the_creations_held_is_not_read(self) -> None:
        """A suite that outgrew its history made 24 instances in one window; that window's
        rate, a seventh of the one before, capped the limit back where history put it."""
        state = next_limit(LimitState(12), Window(50, 0.25, size=12, waited=True), 64)
        assert state.limit == 13  # a probe past history's size
        state = next_limit(state, Window(60, 0.25, size=13, waited=True), 64)
        assert state.limit == 64  # the probe paid: open
        held = next_limit(state, Window(9, 0.32, size=36, waited=True, blocked_s=0.29), 64)
        assert held == replace(state, peak=36)

    def test_the_rate_counts_the_time_no_creation_held_the_loop(self) -> None:
        """100 leases in a window sync factories held for 0.4 of its 1 s are 100 / 0.6 a
        second of what the size serves: more than the 120 before, so the limit stays open."""
        state = next_limit(LimitState(64), Window(120, 1.0, size=4, waited=True), 64)
        state = next_limit(state, Window(100, 1.0, size=8, waited=True, blocked_s=0.4), 64)
        assert state.limit == 64
        assert state.last_rate == pytest.approx(100 / 0.6)
        # counted over the whole window, the same leases would have capped it at 4
        capped = next_limit(
            next_limit(LimitState(64), Window(120, 1.0, size=4, waited=True), 64),
            Window(100, 1.0, size=8, waited=True),
            64,
        )
        assert capped.limit == 4

    def test_the_limit_never_passes_max_size(self) -> None:
        state = next_limit(
            LimitState(64, last_size=2, last_rate=1.0), Window(500, 1.0, size=8, waited=True), 10
        )
        assert state.limit == 10


class ControlledService(RuleBasedStateMachine):
    """A service whose creations the controller decides: waiters arrive, leases end,
    creations finish, measurements change. The books stay within the bounds, and no waiter
    is ever left with nothing held and nothing on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.max_size = 5
        self.size = self.creating = self.in_use = self.waiting = 0
        self.hold: float | None = None
        self.create: float | None = None
        self.busy: float | None = None
        self.cost: float | None = None
        #: The share of the holds that was the leases' own work (the rest: creations).
        self.work_share = 1.0
        self.limit = 5
        #: A sync factory: creations hold the loop (bounded by the square-root rule).
        self.blocks = False

    def decide(self, stalled: bool = False) -> None:
        n = creations(
            SizingInput(
                size=self.size,
                creating=self.creating,
                recovering=0,
                in_use=self.in_use,
                waiting=self.waiting,
                max_size=self.max_size,
                limit=self.limit,
                hold_s=self.hold,
                create_s=self.create,
                busy=self.busy,
                lease_cost=self.cost,
                stalled=stalled,
                create_blocks=self.blocks,
                work_s=None if self.hold is None else self.hold * self.work_share,
            )
        )
        self.creating += n

    @rule()
    def arrive(self) -> None:
        if self.size > self.in_use:  # an idle instance
            self.in_use += 1
            return
        self.waiting += 1
        self.decide()

    @precondition(lambda self: self.in_use > 0)
    @rule(hold=st.floats(0.0001, 1.0))
    def release(self, hold: float) -> None:
        self.hold = hold
        if self.waiting:
            self.waiting -= 1  # handed straight to the next waiter
        else:
            self.in_use -= 1

    @precondition(lambda self: self.creating > 0)
    @rule(took=st.floats(0.0001, 1.0))
    def creation_ends(self, took: float) -> None:
        self.create = took
        self.creating -= 1
        self.size += 1
        if self.waiting:
            self.waiting -= 1
            self.in_use += 1

    @rule(
        busy=st.floats(0, 1),
        cost=st.floats(0.001, 1),
        limit=st.integers(1, 5),
        blocks=st.booleans(),
        work_share=st.floats(0, 1),
    )
    def measure(self, busy: float, cost: float, limit: int, blocks: bool, work_share: float) -> None:
        self.busy, self.cost, self.limit, self.blocks = busy, cost, limit, blocks
        self.work_share = work_share
        self.decide()

    @precondition(lambda self: self.waiting > 0)
    @rule()
    def stall(self) -> None:
        self.decide(stalled=True)

    @invariant()
    def within_bounds(self) -> None:
        assert self.size + self.creating <= self.max_size
        assert self.in_use <= self.size

    @invariant()
    def live(self) -> None:
        if self.waiting > self.creating:
            assert self.in_use > 0 or self.creating > 0, "waiters with nothing held, nothing coming"


TestControlledService = ControlledService.TestCase
