"""Self-sizing: default pool sizes against the best fixed ``max_size``, per workload (issue 14).

Run: ``python benchmarks/sizing.py`` (``--quick`` for a short run; ``--tests N``, ``--rounds R``,
``--only NAME``, ``--sizes 1,4,16``, ``--timeout S``, ``--no-prune``, ``--json PATH``,
``--check``). What the figures mean, and those of main: docs/performance.md, "Self-sizing".

Each workload is a suite of tests run as concurrent tasks in one event loop (or one after
another, for ``sequential``), each test leasing one or two doubles through the public API
(``pool.acquire``). Every workload runs with *default sizing* (the specs give neither
``min_size`` nor ``max_size``: what a new user writes) and with each fixed ``max_size`` of the
sweep (``min_size=0``), interleaved within each round, in this one process; the figure of a
variant is the best of its rounds. Per workload the table gives:

- ``default``: wall time of the tests with default sizing, around the tests only;
- ``start``: ``await pool.start()`` of that same run, apart;
- ``best fixed``: the fastest fixed ``max_size`` and its time; ``ratio`` = default / best
  (target <= 1.15x);
- ``churn``: instances destroyed before the pool closed / instances created, from
  ``PoolStats.created`` and ``.destroyed`` read before ``aclose``, in the default run's worst
  round (target <= 5%);
- ``peak``: the most instances alive at once with default sizing (counted by the factory and
  destroy hooks, all services together), and ``timeouts``: ``AcquireTimeout`` raised in the
  default runs, all rounds (target 0);
- ``load``: the machine's 1-minute load average when the workload ended (the machine is shared).

Same work in every variant: the CPU work is a fixed number of loop turns (calibrated once per
process, printed), every test checks that its doubles are clean and exclusive, and the harness
checks after each run that every test finished and did its work. Garbage is collected before
each run and the collector stays enabled during it, as in a test suite. A fixed size whose
first round took more than twice the round's fastest variant is not run again (``--no-prune``
runs it): it cannot be the best. ``--check`` exits 1 when a target is missed, or when a fixed
run had more instances of a service alive than its ``max_size``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import AcquireTimeout, MockPool, ServiceSpec

#: ``max_size`` of the fixed variants (each with ``min_size=0``).
SWEEP = (1, 2, 4, 8, 16, 32, 64)
RATIO_TARGET = 1.15
CHURN_TARGET = 0.05
#: A fixed size whose first round took more than this times the round's fastest is not run again.
PRUNE_FACTOR = 2.0


# -- CPU work ---------------------------------------------------------------------------------


def spin(turns: int) -> int:
    """Pure-Python CPU work: ``turns`` loop turns. Returns a checksum, so nothing is skipped."""
    acc = 0
    for i in range(turns):
        acc = (acc + i * i) & 0xFFFF
    return acc


def calibrate(trials: int = 7, turns: int = 100_000) -> float:
    """Loop turns of :func:`spin` per millisecond here: the best of a few trials, so a busy
    neighbour during calibration makes the work smaller, never the variants unequal (every
    variant runs the same number of turns)."""
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        spin(turns)
        best = min(best, time.perf_counter() - start)
    return turns / (best * 1000)


# -- the doubles and the tests ----------------------------------------------------------------


class Double:
    """What tests lease: who holds it and what they wrote, so each test can check that its
    double is clean (nothing from an earlier test) and exclusive (nobody wrote meanwhile).
    ``payload`` is the memory it keeps, as a real double keeps its mock tree or its data."""

    __slots__ = ("holder", "payload", "writes")

    def __init__(self, payload: int = 0) -> None:
        self.holder: int | None = None
        self.writes = 0
        # Non-zero bytes: the pages are written, so they count in the process's RSS.
        self.payload = b"\x01" * payload


def reset_double(double: Double) -> None:
    double.holder = None
    double.writes = 0


@dataclass(slots=True)
class Instances:
    """Instances alive per service, counted by the factory and destroy hooks: the pool's size
    seen from outside, whatever its internals."""

    live: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    total: int = 0
    peak_total: int = 0

    def made(self, service: str) -> None:
        live = self.live[service] = self.live.get(service, 0) + 1
        self.peak[service] = max(self.peak.get(service, 0), live)
        self.total += 1
        self.peak_total = max(self.peak_total, self.total)

    def destroyed(self, service: str) -> None:
        self.live[service] -= 1
        self.total -= 1


@dataclass(frozen=True, slots=True)
class Cost:
    """What one instance of a service costs: CPU to make (loop turns), memory to keep (bytes)."""

    turns: int = 0
    payload: int = 0


def service_spec(
    name: str,
    cost: Cost,
    max_size: int | None,
    instances: Instances,
    depends_on: tuple[str, ...] = (),
) -> ServiceSpec:
    """The spec of one service: ``max_size=None`` gives no size at all (default sizing);
    ``depends_on`` makes it a group built on one instance of each of those services."""

    def make(*_members: Double) -> Double:
        spin(cost.turns)
        instances.made(name)
        return Double(cost.payload)

    def destroy(_: Double) -> None:
        instances.destroyed(name)

    if max_size is None:  # what a new user writes: no sizes at all
        return ServiceSpec(
            name=name, factory=make, reset=reset_double, destroy=destroy, depends_on=depends_on
        )
    return ServiceSpec(
        name=name,
        factory=make,
        reset=reset_double,
        destroy=destroy,
        depends_on=depends_on,
        min_size=0,
        max_size=max_size,
    )


@dataclass(frozen=True, slots=True)
class Hold:
    """What a test does while it holds its doubles: CPU work, one await (None: none), CPU work."""

    cpu_turns: int = 0
    await_s: float | None = None
    after_turns: int = 0

    @property
    def turns(self) -> int:
        return self.cpu_turns + self.after_turns


@dataclass(frozen=True, slots=True)
class Case:
    """One test: the services it leases (in this order, nested) and what it does with them."""

    services: tuple[str, ...]
    hold: Hold


@dataclass(slots=True)
class Tally:
    """What the tests of one run did."""

    passed: int = 0
    timeouts: int = 0
    turns: int = 0
    latencies: list[float] = field(default_factory=list)


async def run_test(
    pool: MockPool, test_id: int, case: Case, tally: Tally, timeout: float | None = None
) -> None:
    """One test: lease its doubles (nested), check they are clean, work, check nobody else
    wrote to them. ``timeout``: the acquire bound (None: the pool's default, as users write)."""
    # Only a given timeout is passed: acquire(timeout=None) would mean "wait for ever".
    bound: dict[str, float] = {} if timeout is None else {"timeout": timeout}
    started = time.perf_counter()
    try:
        async with AsyncExitStack() as stack:
            doubles = [await stack.enter_async_context(pool.acquire(name, **bound)) for name in case.services]
            for double in doubles:
                assert double.holder is None and double.writes == 0, f"test {test_id}: a used double"
                double.holder = test_id
            spin(case.hold.cpu_turns)
            if case.hold.await_s is not None:
                await asyncio.sleep(case.hold.await_s)
            spin(case.hold.after_turns)
            for double in doubles:
                assert double.holder == test_id, f"test {test_id}: another test wrote to its double"
                double.writes += 1
    except AcquireTimeout:
        tally.timeouts += 1
        return
    tally.passed += 1
    tally.turns += case.hold.turns
    tally.latencies.append(time.perf_counter() - started)


# -- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """A suite: its services (name -> cost of an instance), its tests and how they start.

    ``schedule``: ``concurrent`` starts every test at once; ``sequential`` one after another;
    ``burst+trickle`` starts the first ``burst`` at once and, once they all ended, the others
    one every ``trickle_every_s`` (paced on the loop's clock, so a slow test does not delay the
    next start).
    """

    name: str
    about: str
    factories: dict[str, Cost]
    cases: tuple[Case, ...]
    schedule: str = "concurrent"
    burst: int = 0
    trickle_every_s: float = 0.0
    max_total: int | None = None
    #: Bound on each acquire (None: the pool's default).
    acquire_timeout: float | None = None
    #: Group services (``depends_on``): name -> members; the members come first in ``factories``.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def turns(self) -> int:
        """Loop turns the tests spend inside their leases: the same in every variant."""
        return sum(case.hold.turns for case in self.cases)


@dataclass(frozen=True, slots=True)
class Params:
    tests: int = 1199
    sequential_tests: int = 200
    #: CPU cost of creating an expensive double (the cheap one costs nothing).
    factory_ms: float = 20.0
    #: Memory an expensive double keeps: 1,199 autospec mocks of a 60-method class take about
    #: 390 MB (DESIGN.md), 325 KB each.
    payload_kb: int = 325
    cpu_hold_ms: float = 1.5
    io_hold_s: float = 0.02
    mixed_cpu_ms: float = 1.0
    sequential_await_s: float = 0.005
    trickle_s: float = 2.0
    trickle_every_s: float = 0.005
    services: int = 6
    max_total: int = 24
    seed: int = 0
    #: Bound on each acquire (None: the pool's default, 30 s).
    acquire_timeout: float | None = None


def workloads(params: Params, turns_per_ms: float) -> list[Workload]:
    """The workloads of issue 14, sized by ``params``."""

    def turns(ms: float) -> int:
        return max(1, round(ms * turns_per_ms))

    n = params.tests
    payload = params.payload_kb * 1024
    expensive = Cost(turns(params.factory_ms), payload)
    double = f"a {params.factory_ms:g} ms, {params.payload_kb:g} KB double"
    cpu = Hold(cpu_turns=turns(params.cpu_hold_ms))
    io = Hold(await_s=params.io_hold_s)
    mixed = Hold(cpu_turns=turns(params.mixed_cpu_ms), await_s=params.io_hold_s)
    trickle = max(1, round(params.trickle_s / params.trickle_every_s))

    # Many services: factories from cheap to expensive, holds from pure I/O to mostly CPU;
    # a third of the tests use two services (nested, in name order).
    rng = random.Random(params.seed)
    names = [f"s{i}" for i in range(params.services)]
    costs = {
        name: Cost(turns(params.factory_ms * (i + 1) / params.services), payload * (i + 1) // params.services)
        for i, name in enumerate(names)
    }
    holds = [
        Hold(cpu_turns=turns(0.25 * (i % 3)), await_s=params.io_hold_s * (1 + i % 2) / 2)
        for i in range(params.services)
    ]
    many: list[Case] = []
    for _ in range(n):
        used = sorted(rng.sample(range(params.services), 2 if rng.random() < 1 / 3 else 1))
        many.append(Case(tuple(names[i] for i in used), holds[used[0]]))

    # A group and its expensive member: two thirds of the tests lease the group (built on the
    # member, a cheaper double and a free one), a third the member directly.
    grouped = [Case(("app",), io) if rng.random() < 2 / 3 else Case(("client",), io) for _ in range(n)]

    suite = [
        Workload(
            "cpu",
            f"{params.cpu_hold_ms:g} ms of CPU per test, no await; {double}",
            {"client": expensive},
            (Case(("client",), cpu),) * n,
        ),
        Workload(
            "io",
            f"one {params.io_hold_s * 1000:g} ms await per test; a double that costs nothing",
            {"cache": Cost()},
            (Case(("cache",), io),) * n,
        ),
        Workload(
            "io, expensive",
            f"one {params.io_hold_s * 1000:g} ms await per test; {double}",
            {"client": expensive},
            (Case(("client",), io),) * n,
        ),
        Workload(
            "mixed",
            f"{params.mixed_cpu_ms:g} ms of CPU and one {params.io_hold_s * 1000:g} ms await per "
            f"test; {double}",
            {"client": expensive},
            (Case(("client",), mixed),) * n,
        ),
        Workload(
            "burst+trickle",
            f"mixed tests: {n} at once, then one every {params.trickle_every_s * 1000:g} ms "
            f"for {params.trickle_s:g} s",
            {"client": expensive},
            (Case(("client",), mixed),) * (n + trickle),
            schedule="burst+trickle",
            burst=n,
            trickle_every_s=params.trickle_every_s,
        ),
        Workload(
            "many services",
            f"{params.services} services (doubles of {params.factory_ms / params.services:.3g}-"
            f"{params.factory_ms:g} ms), each test uses 1 or 2 (nested), max_total={params.max_total}",
            costs,
            tuple(many),
            max_total=params.max_total,
        ),
        Workload(
            "nested",
            f"one {params.io_hold_s * 1000:g} ms await per test, holding a double that costs "
            f"nothing and, leased inside it, {double}",
            {"cache": Cost(), "client": expensive},
            (Case(("cache", "client"), io),) * n,
        ),
        Workload(
            "groups",
            f"one {params.io_hold_s * 1000:g} ms await per test; 2/3 lease a group of {double}, "
            f"one a quarter of its cost and a free one; 1/3 lease that {params.factory_ms:g} ms "
            "double directly",
            {
                "client": expensive,
                "db": Cost(turns(params.factory_ms / 4), payload // 4),
                "cache": Cost(),
                "app": Cost(),
            },
            tuple(grouped),
            groups={"app": ("client", "db", "cache")},
        ),
        Workload(
            "sequential",
            f"one test at a time: {params.mixed_cpu_ms:g} ms of CPU and one "
            f"{params.sequential_await_s * 1000:g} ms await; {double}",
            {"client": expensive},
            (
                Case(
                    ("client",),
                    Hold(cpu_turns=turns(params.mixed_cpu_ms), await_s=params.sequential_await_s),
                ),
            )
            * params.sequential_tests,
            schedule="sequential",
        ),
    ]
    return [replace(w, acquire_timeout=params.acquire_timeout) for w in suite]


async def drive(workload: Workload, pool: MockPool, tally: Tally) -> None:
    """Run the workload's tests on ``pool`` as its schedule says."""
    cases, timeout = workload.cases, workload.acquire_timeout
    if workload.schedule == "sequential":
        for test_id, case in enumerate(cases):
            await run_test(pool, test_id, case, tally, timeout)
        return
    burst = workload.burst if workload.schedule == "burst+trickle" else len(cases)
    await asyncio.gather(*(run_test(pool, i, case, tally, timeout) for i, case in enumerate(cases[:burst])))
    if burst == len(cases):
        return
    loop = asyncio.get_running_loop()
    began = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for k, case in enumerate(cases[burst:]):
        delay = began + k * workload.trickle_every_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run_test(pool, burst + k, case, tally, timeout)))
    await asyncio.gather(*tasks)


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One variant of one workload, one round. ``max_size`` None: default sizing."""

    workload: str
    max_size: int | None
    round: int
    wall_s: float
    start_s: float
    passed: int
    timeouts: int
    created: int
    destroyed: int
    peak_size: int
    peak_per_service: dict[str, int]
    peak_in_use: int
    latency_p50_s: float
    latency_p99_s: float
    #: The pool's report events (adaptation and the like): ``"service: trigger -> response"``.
    events: tuple[str, ...] = ()

    @property
    def grew(self) -> bool:
        """A fixed-size run had more instances of a service alive than its ``max_size``."""
        return self.max_size is not None and any(p > self.max_size for p in self.peak_per_service.values())

    @property
    def complete(self) -> bool:
        """Every test passed: the run did the workload's whole work."""
        return self.timeouts == 0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_variant(workload: Workload, max_size: int | None, round_: int = 0) -> Run:
    """One run: a new pool as a user writes it (only the specs' sizes differ), its tests,
    its stats read before it closes."""
    instances = Instances()
    pool = MockPool(max_total=workload.max_total)
    for name, cost in workload.factories.items():
        pool.register(service_spec(name, cost, max_size, instances, tuple(workload.groups.get(name, ()))))
    tally = Tally()
    try:
        t0 = time.perf_counter()
        await pool.start()
        t1 = time.perf_counter()
        await drive(workload, pool, tally)
        t2 = time.perf_counter()
        stats = pool.stats()
        events = tuple(f"{e.service}: {e.trigger} -> {e.response}" for e in pool.report().events)
    finally:
        await pool.aclose()
    expected = len(workload.cases)
    if tally.passed + tally.timeouts != expected:
        raise AssertionError(
            f"{workload.name}: {tally.passed} tests passed and {tally.timeouts} timed out of {expected}"
        )
    if tally.timeouts == 0 and tally.turns != workload.turns:
        raise AssertionError(f"{workload.name}: the tests spun {tally.turns} turns, not {workload.turns}")
    return Run(
        workload=workload.name,
        max_size=max_size,
        round=round_,
        wall_s=t2 - t1,
        start_s=t1 - t0,
        passed=tally.passed,
        timeouts=tally.timeouts,
        created=sum(s.created for s in stats.values()),
        destroyed=sum(s.destroyed for s in stats.values()),
        peak_size=instances.peak_total,
        peak_per_service=dict(instances.peak),
        peak_in_use=sum(s.peak_in_use for s in stats.values()),
        latency_p50_s=percentile(tally.latencies, 50),
        latency_p99_s=percentile(tally.latencies, 99),
        events=events,
    )


def warm_process() -> None:
    """One small run, not measured: mockpool imports numpy and psutil lazily, at a pool's
    first supervisor round, and the first measured run must not pay for that."""
    workload = Workload("warm-up", "", {"warm": Cost()}, (Case(("warm",), Hold(await_s=0.001)),) * 20)
    asyncio.run(run_variant(workload, None))


def measure(
    workload: Workload,
    sizes: Sequence[int] = SWEEP,
    rounds: int = 3,
    *,
    prune: bool = True,
    progress: bool = False,
) -> list[Run]:
    """Default sizing and each fixed size, interleaved, ``rounds`` times; each run in its own
    event loop after a full collection. The order rotates each round, so no variant always
    runs first (after a pause) or last."""
    variants: list[int | None] = [None, *sizes]
    runs: list[Run] = []
    for round_ in range(rounds):
        shift = round_ % len(variants)
        for max_size in variants[shift:] + variants[:shift]:
            if round_ > 0 and prune and max_size is not None and _pruned(runs, max_size):
                continue
            gc.collect()
            run = asyncio.run(run_variant(workload, max_size, round_))
            runs.append(run)
            if progress:
                label = "default" if max_size is None else f"max_size={max_size}"
                print(
                    f"  {workload.name}, round {round_ + 1}: {label:<12} {run.wall_s:7.3f} s, "
                    f"{run.created} created, {run.destroyed} destroyed, peak {run.peak_size}",
                    file=sys.stderr,
                )
    return runs


def _pruned(runs: Sequence[Run], max_size: int) -> bool:
    """True if ``max_size``'s first round was so slow (or incomplete) it cannot be the best."""
    first = [r for r in runs if r.round == 0]
    fastest = min((r.wall_s for r in first if r.complete), default=math.inf)
    mine = next(r for r in first if r.max_size == max_size)
    return not mine.complete or mine.wall_s > PRUNE_FACTOR * fastest


# -- the figures ------------------------------------------------------------------------------


def ratio(default_s: float, best_s: float) -> float:
    """Default sizing's time over the best fixed size's: 1.0 is as fast, above is slower."""
    return default_s / best_s if best_s > 0 else math.inf


def churn(created: int, destroyed: int) -> float:
    """Share of the instances created that were destroyed before the pool closed."""
    return destroyed / created if created else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """One workload's line of the table."""

    workload: str
    tests: int
    default_s: float
    start_s: float
    best_size: int | None
    best_s: float
    ratio: float
    churn: float
    created: int
    destroyed: int
    peak_size: int
    timeouts: int
    rounds: int
    #: Fixed sizes that some run went past, each ``"max_size -> peak (services)"``.
    bound_passed: tuple[str, ...] = ()
    #: The best fixed size's run had more instances of a service alive than its max_size.
    best_grew: bool = False
    load: float | None = None

    def misses(self) -> list[str]:
        """The targets this workload missed, each as a sentence."""
        missed = []
        if self.timeouts:
            missed.append(
                f"{self.workload}: {self.timeouts} AcquireTimeout with default sizing (target 0); "
                "those runs did not do the whole work, so their time and ratio are not comparable"
            )
        if self.ratio > RATIO_TARGET:
            missed.append(
                f"{self.workload}: default sizing took {self.ratio:.2f}x the best fixed size "
                f"(max_size={self.best_size}; target <= {RATIO_TARGET:.2f}x)"
            )
        if self.churn > CHURN_TARGET:
            missed.append(
                f"{self.workload}: churn {self.churn:.1%} ({self.destroyed} of {self.created} "
                f"instances destroyed before close; target <= {CHURN_TARGET:.0%})"
            )
        if self.bound_passed:
            missed.append(
                f"{self.workload}: a fixed max_size was passed (max_size -> most instances of one "
                f"service alive): {'; '.join(self.bound_passed)}"
            )
        return missed


def summarize(workload: str, runs: Sequence[Run], load: float | None = None) -> Summary:
    """The figures of one workload from its runs: default's best round against the best round
    of the fastest fixed size, among complete runs only (a run with timeouts did less work)."""
    defaults = [r for r in runs if r.max_size is None]
    if not defaults:
        raise ValueError(f"{workload}: no run with default sizing")
    complete = [r for r in defaults if r.complete]
    best_default = min(complete or defaults, key=lambda r: r.wall_s)
    fixed = [r for r in runs if r.max_size is not None and r.complete]
    best_fixed = min(fixed, key=lambda r: r.wall_s) if fixed else None
    worst = max(defaults, key=lambda r: (churn(r.created, r.destroyed), r.destroyed))
    passed = tuple(
        f"{size} -> {peak} ({', '.join(sorted(names))})"
        for size, (peak, names) in sorted(_bounds_passed(runs).items())
    )
    return Summary(
        workload=workload,
        tests=best_default.passed + best_default.timeouts,
        default_s=best_default.wall_s,
        start_s=best_default.start_s,
        best_size=best_fixed.max_size if best_fixed else None,
        best_s=best_fixed.wall_s if best_fixed else math.nan,
        ratio=ratio(best_default.wall_s, best_fixed.wall_s) if best_fixed else math.nan,
        churn=churn(worst.created, worst.destroyed),
        created=worst.created,
        destroyed=worst.destroyed,
        peak_size=max(r.peak_size for r in defaults),
        timeouts=sum(r.timeouts for r in defaults),
        rounds=len(defaults),
        bound_passed=passed,
        best_grew=best_fixed is not None and best_fixed.grew,
        load=load,
    )


def _bounds_passed(runs: Sequence[Run]) -> dict[int, tuple[int, set[str]]]:
    """Per fixed ``max_size`` that some run went past: the highest count of one service's
    instances alive at once, and the services that went past it."""
    out: dict[int, tuple[int, set[str]]] = {}
    for run in runs:
        if run.max_size is None:
            continue
        for service, peak in run.peak_per_service.items():
            if peak > run.max_size:
                top, names = out.get(run.max_size, (0, set()))
                out[run.max_size] = (max(top, peak), names | {service})
    return out


def table(summaries: Sequence[Summary]) -> str:
    header = (
        f"{'workload':<14} {'tests':>6} {'default':>9} {'start':>8} {'best fixed':>15} {'ratio':>7} "
        f"{'churn':>15} {'peak':>5} {'timeouts':>8} {'load':>5}"
    )
    lines = [header]
    for s in summaries:
        best = "none complete"
        if s.best_size is not None:
            best = f"{s.best_s:.3f} s ({s.best_size}{'*' if s.best_grew else ''})"
        churned = f"{s.destroyed}/{s.created} {s.churn:5.1%}"
        load = f"{s.load:.1f}" if s.load is not None else "-"
        lines.append(
            f"{s.workload:<14} {s.tests:>6} {s.default_s:>7.3f} s {s.start_s:>6.3f} s {best:>15} "
            f"{s.ratio:>6.2f}x {churned:>15} {s.peak_size:>5} {s.timeouts:>8} {load:>5}"
        )
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 tests, 2 rounds, a shorter trickle")
    parser.add_argument("--tests", type=int, help="tests per concurrent workload (default 1,199)")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 3)")
    parser.add_argument("--sizes", help=f"fixed max_size values, comma-separated (default {SWEEP})")
    parser.add_argument("--only", action="append", help="run this workload only (repeatable)")
    parser.add_argument(
        "--timeout", type=float, help="bound each acquire (default: the pool's, 30 s; a deadlock costs that)"
    )
    parser.add_argument("--no-prune", action="store_true", help="run every fixed size in every round")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = Params()
    if args.quick:
        params = replace(params, tests=300, sequential_tests=60, trickle_s=0.5)
    if args.tests is not None:
        params = replace(params, tests=args.tests)
    if args.timeout is not None:
        params = replace(params, acquire_timeout=args.timeout)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else SWEEP

    load_before = os.getloadavg()
    turns_per_ms = calibrate()
    warm_process()
    chosen = workloads(params, turns_per_ms)
    if args.only:
        unknown = set(args.only) - {w.name for w in chosen}
        if unknown:
            print(f"unknown workload {sorted(unknown)}; choose from {[w.name for w in chosen]}")
            return 2
        chosen = [w for w in chosen if w.name in args.only]

    summaries: list[Summary] = []
    all_runs: list[Run] = []
    for workload in chosen:
        runs = measure(workload, sizes, rounds, prune=not args.no_prune, progress=not args.quiet)
        all_runs.extend(runs)
        summaries.append(summarize(workload.name, runs, load=os.getloadavg()[0]))
    load_after = os.getloadavg()

    print(
        f"Self-sizing: default sizes against the best fixed max_size (min_size=0) of "
        f"{', '.join(map(str, sizes))}; best of {rounds} rounds (Python {sys.version.split()[0]})"
    )
    print(table(summaries))
    print(
        f"targets: ratio <= {RATIO_TARGET:.2f}x, churn <= {CHURN_TARGET:.0%}, timeouts 0. "
        f"CPU work: {turns_per_ms:,.0f} loop turns per ms (calibrated)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    for workload in chosen:
        print(f"  {workload.name}: {workload.about}")
    misses = [m for s in summaries for m in s.misses()]
    for miss in misses:
        print(f"MISSED {miss}")

    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "params": asdict(params),
                    "rounds": rounds,
                    "sizes": list(sizes),
                    "turns_per_ms": turns_per_ms,
                    "cpus": os.cpu_count(),
                    "load_before": load_before,
                    "load_after": load_after,
                    "summaries": [asdict(s) for s in summaries],
                    "runs": [asdict(r) for r in all_runs],
                    "misses": misses,
                },
                indent=2,
            )
        )
    return 1 if args.check and misses else 0


if __name__ == "__main__":
    sys.exit(main())
