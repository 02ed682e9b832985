"""How many instances a service should have: the sizing controller, one pure function of a
snapshot of measurements (tested without an event loop, driven by a Hypothesis machine).

On one event loop, a second instance of a double helps only while the loop has idle time
while tests wait (their leases await I/O); otherwise it costs its creation and nothing else
(the tests take turns on one CPU). So a creation is decided, for waiters that are not covered
by a creation or recovery already on its way, from what is measured per service and loop:

* **liveness**: a waiter with nothing held and nothing on its way always gets a creation, and
  so does one that waited a stall (an instance held and no lease ended for ``stall_s(...)``:
  the holders may be waiting for the waiters themselves, as tests that need several instances
  at once do; waiters that waited on a creation, with nothing held, did not stall);
* **a release would be sooner**: leases end about every ``hold / in_use`` seconds, so the
  ``k``-th waiter in line is served by releases after ``k * hold / in_use``; a creation serves
  one after ``create``: only waiters further back than ``create / (hold / in_use)`` are worth
  a creation;
* **spare capacity**: not while the loop is saturated (its thread busy >= ``SATURATED`` of
  the time), where another instance runs no test sooner; and not beyond the size at which
  it would be: each lease held takes ``lease_cost`` of the
  loop's time (measured: the loop's busy share less the CPU the factories took, over the
  leases held meanwhile), so about ``SATURATED / lease_cost`` leases saturate it;
* **the search**: not beyond the service's ``limit``, the size the throughput search found
  (:func:`next_limit`: grow while completed leases per second rise with the size, stop where
  they do not: a smaller pool is often faster);
* **members lent to groups** are in ``size`` (the user's bound and ``max_total`` count them)
  but serve none of the service's own leases: the search's limit, the loop's capacity and the
  square-root size below count the others;
* **the user's bound**: never beyond ``max_size``;
* **a fair share**: under a pool-wide ``max_total``, not beyond this service's share of it
  among the services in use (otherwise the first services take the whole budget, and tests
  that hold one service while they wait for another wait for ever);
* **memory**: not while memory is tight (preferring not to create over evicting later);
* **creations that hold the loop**: a sync factory runs on the loop's thread, and no lease
  runs while it does; one more instance shortens the ``n`` remaining leases (held and
  waiting) by about ``n * hold / size**2`` and costs ``create``: not beyond
  ``sqrt(n * hold / create)`` (1,199 tests awaiting 20 ms on a double that takes 20 ms to
  build: 34, where the best fixed size measured 32 and 64 was 18 % slower). ``hold`` is
  ``work_s``, the holds less the time factories held the loop during each. ``n`` counts the
  tests queued at services whose holders wait here (``upstream``: nested leases), which will
  each lease this service next, and the leases that queued here earlier in the run
  (``queued_before``): an instance outlives the queue it was made for, and a suite whose tests
  each fan out 50 leases of a sync-built double queues as often again later (sized for each
  queue alone, such a suite ran on 6 instances where 16 took 40 % less time);
* **slow start**: one creation at a time until a creation, a lease and the loop's load have
  been measured (the load over a window in which the waiters already waited: one taken
  before they came describes another demand), and not past the size history says earlier
  runs settled at (``settled``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = (
    "GROWTH",
    "SATURATED",
    "STALL_MAX_RETRY_S",
    "LimitState",
    "SizingInput",
    "Window",
    "creations",
    "members_room",
    "next_limit",
    "stall_s",
)

#: The loop's thread busy this share of the time: saturated, no instance more helps.
SATURATED = 0.85

#: A size step must raise completed leases per second by this factor to count as better.
GROWTH = 1.05


@dataclass(frozen=True, slots=True)
class SizingInput:
    """One service at the moment a creation is considered.

    :param hold_s: mean hold time of recent leases, None before the first release.
    :param create_s: mean creation time, None before the first creation ended.
    :param busy: the loop thread's busy share over the last window, None before measured.
    :param limit: the size the throughput search allows now (:func:`next_limit`).
    """

    size: int
    creating: int
    recovering: int
    in_use: int
    waiting: int
    max_size: int
    limit: int
    hold_s: float | None = None
    create_s: float | None = None
    busy: float | None = None
    #: The share of the loop's time one lease held takes (None: not measured).
    lease_cost: float | None = None
    #: ``busy`` and ``lease_cost`` were measured over a window that began before the waiters
    #: queued: they describe another demand, so count as not measured yet. (A warm pool's
    #: burst decided on the idle moments before it grew 11 -> 26 on a saturated loop, and each
    #: run of the suite warmed to more than the one before.)
    load_predates_queue: bool = False
    memory_tight: bool = False
    #: No lease ended for a stall (:func:`stall_s`) while these waiters waited.
    stalled: bool = False
    #: ... for several stalls in a row: the holders may be waiting for the waiters.
    lasting: bool = False
    #: This service's share of the pool-wide ``max_total`` (None: no pool-wide bound).
    share: int | None = None
    #: The size earlier runs settled at, from history (0: no history): where slow start stops.
    settled: int = 0
    #: The factory is sync: a creation holds the loop for ``create_s``, and no lease runs then.
    create_blocks: bool = False
    #: Mean hold of recent leases less the time sync factories held the loop during each
    #: (None: not measured): what a lease takes when no creation stops it.
    work_s: float | None = None
    #: Instances lent to groups as members: in ``size`` (the user's bound counts them), not in
    #: ``in_use``; they serve no direct lease, so the sizes that trade leases against creations
    #: leave them out.
    lent: int = 0
    #: For a group: how many more instances its members can lend to groups and still keep half
    #: their ``max_size`` for their own tests (see :func:`members_room`); None: not a group.
    members_room: int | None = None
    #: Tests queued at other services whose holders wait here (nested leases, see
    #: :mod:`mockpool.nesting`): each will lease this service next, so they count among the
    #: leases a creation shortens.
    upstream: int = 0
    #: Leases of this service that queued earlier in the run (not the ones waiting now): as
    #: many more are likely to queue later, and an instance made now serves those too.
    queued_before: int = 0


#: The shortest wait without any release that counts as a stall.
STALL_MIN_S = 0.05
#: The longest wait between stall checks while the factory keeps failing (see ``stall_s``).
STALL_MAX_RETRY_S = 1.0


def stall_s(hold_s: float | None, in_use: int, failures: int = 0) -> float:
    """How long waiters wait without any lease ending before it counts as a stall: twice the
    expected time between releases, at least ``STALL_MIN_S``. ``failures``: creations failed in
    a row; each doubles the wait (up to ``STALL_MAX_RETRY_S``), so a broken factory is retried
    with backoff while a waiter waits, not every 50 ms for as long as it waits."""
    base = STALL_MIN_S if hold_s is None else max(STALL_MIN_S, 2.0 * hold_s / max(in_use, 1))
    if failures <= 0:
        return base
    return max(base, min(STALL_MIN_S * 2.0 ** min(failures, 16), STALL_MAX_RETRY_S))


def members_room(members: Iterable[tuple[int, int, bool]]) -> int:
    """How many more instances a group's members can lend to groups: for each member
    ``(max_size, lent, used_directly)``, its ``max_size`` less what it lends already, less
    half its ``max_size`` if tests lease it directly.

    A test that holds a group instance and then leases one of its members directly needs a
    member instance that no group keeps. Groups allowed every member instance took them all
    (the group's creations queue first at the member), and 64 such tests each held a group
    and waited for the member until their timeouts. Half leaves the member's own tests as
    many instances as the groups may keep, as ``max_total`` shares are kept between services.
    """
    return min(
        (
            max_size - lent - (max_size // 2 if used_directly else 0)
            for max_size, lent, used_directly in members
        ),
        default=0,
    )


def creations(s: SizingInput) -> int:
    """How many creations to start now (0 or more); see the module docstring."""
    uncovered = s.waiting - s.creating - s.recovering
    room = s.max_size - s.size - s.creating
    if uncovered <= 0 or room <= 0:
        return 0
    if s.in_use == 0 and s.creating == 0 and s.recovering == 0:
        return 1  # liveness: nothing held, nothing on its way
    # A group instance keeps one instance of each member for good: past the members' room, the
    # tests that hold the group and then lease a member directly would wait for ever.
    members = None if s.members_room is None else s.members_room - s.creating
    if s.stalled:
        # Within the service's share of max_total; beyond it only when the stall lasts: a
        # short one taking another service's share would have it evict one back (churn).
        within = s.share is None or s.lasting or s.size + s.creating < s.share
        within = within and (members is None or members > 0)
        return 1 if s.creating == 0 and within else 0  # liveness: the holders may wait for the waiters
    if s.memory_tight:
        return 0
    if members is not None:
        room = min(room, members)
    serving = s.size - s.lent + s.creating  # instances that will serve direct leases
    # The search measured sizes of instances serving direct leases; the share is of max_total,
    # which counts every instance.
    room = min(room, s.limit - serving)
    if s.share is not None:
        room = min(room, s.share - s.size - s.creating)
    if room <= 0:
        return 0
    # Slow start, one at a time while something is unmeasured, stops at the size earlier runs
    # settled at: a run warmed to it has its creations measured but not yet its leases, and
    # growing past it unmeasured made each run warm more than the one before.
    slow = 1 if s.creating == 0 and (s.settled == 0 or s.size < s.settled) else 0
    if s.busy is not None and s.busy >= SATURATED and not s.load_predates_queue:
        # Nor on a loop measured saturated while they waited: another instance runs no test
        # sooner there, whatever the leases turn out to take. A reading from before they queued
        # is the burst's start (tasks starting, first creations): tests that await I/O in their
        # leases, stopped on it, ran 15 % slower.
        slow = 0
    if s.hold_s is None or s.create_s is None:
        return slow  # slow start: nothing measured yet
    per_release = s.hold_s / max(s.in_use, 1)
    if per_release <= 0:
        return 0  # leases end at once: releases serve everyone first
    served_by_releases = s.create_s / per_release  # waiters releases serve before a creation would
    if served_by_releases >= uncovered:
        return 0
    wanted = min(uncovered - math.floor(served_by_releases), room)
    if wanted <= 0:
        return 0
    if s.create_blocks and s.create_s > 0:
        # Each creation holds the loop for create_s, so every lease waits that long; one more
        # instance shortens the remaining leases (those held and waiting, about
        # n * hold / size seconds) by n * hold / size**2. Worth it below sqrt(n * hold / create).
        # The holds, less the time creations held the loop during each: counted in, each
        # batch of creations lengthened the holds and called for a larger one.
        hold = s.hold_s if s.work_s is None else s.work_s
        leases = s.waiting + s.in_use + s.upstream + s.queued_before
        ratio = leases * hold / s.create_s  # may overflow: no bound
        if ratio < (serving + wanted) ** 2:
            best = max(1, math.floor(math.sqrt(ratio)))
            wanted = min(wanted, best - serving)
            if wanted <= 0:
                return 0
    if s.busy is None or s.lease_cost is None:
        # Slow start, the loop's load not measured yet: but a saturated reading stops it here
        # as it stops the measured rule below, from before the queue too. Leases have ended,
        # so they run: 300 tests of 1.5 ms of CPU each got two more 20 ms doubles this way
        # (9 % of their run), one at a time, while the first lease-cost reading was due.
        return 0 if s.busy is not None and s.busy >= SATURATED else slow
    if s.busy >= SATURATED:
        return 0  # a reading from before the queue too: more demand saturates it no less
    if s.load_predates_queue:
        return slow  # an idle loop before the queue came says nothing of it
    if s.lease_cost * (serving + wanted) > SATURATED:
        # The loop saturates at about SATURATED / lease_cost leases (a group's, members and
        # all, is one lease).
        wanted = min(wanted, math.floor(SATURATED / s.lease_cost) - serving)
    return max(0, wanted)


@dataclass(frozen=True, slots=True)
class Window:
    """What one service did over one sampling window."""

    #: Leases that ended in the window, and the window's length.
    completed: int
    seconds: float
    #: The size at the window's end (instances serving this service's own leases), and
    #: whether tests waited throughout it (at every sample): only then does the rate measure
    #: what the size can serve rather than how many tests came.
    size: int
    waited: bool
    #: The share of the loop's time the leases took (creations left out), None if unmeasured.
    busy: float | None = None
    #: Seconds of the window sync factories held the loop (no lease ran meanwhile).
    blocked_s: float = 0.0


@dataclass(frozen=True, slots=True)
class LimitState:
    """The throughput search of one service: the limit, and the last size's throughput."""

    limit: int
    #: The size and throughput (leases per second) measured at the last window with demand.
    last_size: int = 0
    last_rate: float = 0.0
    #: Windows left before the search probes one size above a limit it capped.
    hold_off: int = 0
    #: The largest size a window has seen.
    peak: int = 0


#: After capping, the search probes one size higher after this many windows with demand.
PROBE_AFTER = 20

#: A window in which sync factories held the loop for more than this share of it measured
#: the creations, not the size: the search reads nothing from it.
BLOCKED_MAX = 0.5


def next_limit(state: LimitState, w: Window, max_size: int) -> LimitState:
    """One step of the throughput search (hill climbing on completed leases per second).

    Unless tests waited throughout the window the limit stays: the rate measured the demand,
    not the size. With waiting throughout, a window at a
    larger size than the last one is compared with it: if the rate did not rise by ``GROWTH``,
    the extra instances bought nothing, so the limit is capped at the last size (they stay;
    no churn, but no more are made). A capped limit is probed one higher now and then, since
    the load may have changed. A saturated loop caps at once, at the largest size a window
    has seen (groups that take a member's instances lower its size without telling anything
    of what its own tests can use).

    The rate counts the time the leases could run: sync factories hold the loop, and no lease
    ends while they do. A window they held for most of its length is not read at all (a
    suite that outgrew its history made 24 instances in one window, whose rate, a seventh of
    the last one, capped the limit back where history had put it).
    """
    peak = max(state.peak, w.size)
    running = w.seconds - min(max(w.blocked_s, 0.0), w.seconds)
    if not w.waited or w.seconds <= 0 or running < w.seconds * (1.0 - BLOCKED_MAX):
        return state if peak == state.peak else replace(state, peak=peak)
    rate = w.completed / running
    limit = state.limit
    hold_off = max(0, state.hold_off - 1)
    if w.busy is not None and w.busy >= SATURATED:
        # Not below the most it has had: a size that groups lowered by taking members says
        # nothing of how many the service's own tests can use.
        limit = min(limit, max(peak, 1))
        hold_off = PROBE_AFTER
    elif state.last_size and w.size > state.last_size:
        if rate < state.last_rate * GROWTH:
            limit = max(1, state.last_size)
            hold_off = PROBE_AFTER
        else:
            limit = max_size
    elif limit < max_size and hold_off == 0 and w.size >= limit:
        limit += 1  # probe: the load may have changed since the cap
        hold_off = PROBE_AFTER
    return LimitState(
        limit=min(limit, max_size), last_size=w.size, last_rate=rate, hold_off=hold_off, peak=peak
    )
