"""``python -m stress``: run the suite, check what must hold, report, exit non-zero on failure.

::

    python -m stress                          # 1,199 tests, no faults
    python -m stress --faults 0.05 --seed 7   # factory/reset/health failures, cancellations, errors
    python -m stress --baseline --json out/stress.json --plot out/stress.png
    python -m stress --history .stress-history.json   # a second run warms from the first
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from rich.console import Console

from mockpool import MockPool, MockPoolError

from .baseline import FreshUse, double_costs
from .faults import FaultInjector
from .graph import register_graph, stress_specs
from .progress import RunProgress
from .results import Check, StressResult
from .runner import Outcome, PoolUse, RunOutcomes, run_cases
from .scenario import SERVICES, Case, make_cases
from .timeline import Timeline, held_by_groups

__all__ = ("main", "parse_args", "run")

#: Mean time a test holds its lease beyond its own work (exponential; 0 = just yield).
HOLD_S = 0.0
#: Garbage collector thresholds during a run (see ``main``).
GC_THRESHOLDS = (20_000, 50, 1000)
#: How long the end of the run waits for background resets, recoveries and creations.
SETTLE_S = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stress",
        description="Run N concurrent tests in one event loop against the seed's service graph "
        "on a mockpool pool; exit 1 if a test fails or an invariant breaks.",
    )
    parser.add_argument("--tests", type=int, default=1199, metavar="N", help="number of tests (1199)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    parser.add_argument(
        "--faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="probability of each fault, from 0 to 1/3: reset and health failures, cancellations, "
        "exceptions inside leases, discards; factories fail 5x as often (always from 0.2 on, so "
        "recovery serves degraded doubles). Tested from 0 to 0.3 over several seeds: only the "
        "tests drawn to fail fail (0)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="plot the run over time (PNG)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the tests on a fresh double per test; report the speedup",
    )
    parser.add_argument(
        "--history", type=Path, metavar="PATH", help="learn from and warm with this history file"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=HOLD_S,
        metavar="S",
        help="mean seconds each test awaits in the middle of its lease, as if for I/O "
        "(exponential, at most 20x the mean; 0: it only yields to the loop) (0)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        metavar="N",
        help="fixed sizes instead of the defaults: groups N, members room for their groups and "
        "as many direct leases, all warmed before the first test",
    )
    args = parser.parse_args(argv)
    if args.tests < 1:
        parser.error("--tests must be >= 1")
    if not 0.0 <= args.hold <= 10.0:
        parser.error("--hold must be between 0 and 10 seconds")
    if not 0.0 <= args.faults <= 1.0 / 3:
        parser.error("--faults must be between 0 and 1/3 (three kinds of test fault share it)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Recoveries under --faults log a warning each; the summary counts them instead.
    logging.getLogger("mockpool").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 160)
    # Thousands of live tasks make each full collection long, and the default thresholds run
    # them often: at 10,000 tests that made a test cost 1.35x what it costs at 1,199. Freeze
    # what exists (imports) and collect less often; restored after the run.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        result, timeline = asyncio.run(run(args))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    result.print_summary(console)
    if args.json is not None:
        result.write_json(args.json)
        console.print(f"report: {args.json}")
    if args.plot is not None:
        from .plot import plot_timeline

        plot_timeline(
            timeline, args.plot, title=f"mockpool stress: {args.tests} tests, faults {args.faults:g}"
        )
        console.print(f"plot: {args.plot}")
    return 0 if result.ok else 1


async def run(args: argparse.Namespace) -> tuple[StressResult, Timeline]:
    injector = FaultInjector(args.faults, args.seed) if args.faults > 0 else None
    cases = make_cases(
        args.tests,
        seed=args.seed,
        hold_s=args.hold,
        faults=injector.test_fault if injector is not None else None,
    )
    if injector is not None:
        injector.count_tests([c.fault for c in cases])
    # Every test starts at once and waiters are served first come, first served, so the last
    # ones wait about as long as the run itself: the bound grows with the number of tests.
    pool = MockPool(
        name="stress",
        history=args.history,
        default_timeout=30.0 + 0.01 * args.tests,
    )
    register_graph(
        pool, stress_specs(max_size=args.sizes, wrap=injector.wrap if injector is not None else None)
    )
    use = PoolUse(pool)
    timeline = Timeline(pool)
    timeline.rss()
    checks: list[Check] = []
    async with pool:
        outcomes = await _run_with_progress(cases, use, timeline, "pool")
        checks.extend(await _settle_and_check(pool))
        stats = pool.stats()
        timeline.sample()
        report = pool.report()
        # Measured on clean hooks only: under --faults the pooled side would pay for recoveries.
        measure = args.baseline and injector is None
        costs = await double_costs(pool, FreshUse(stress_specs()), list(stats)) if measure else {}
    result = StressResult(
        tests=args.tests,
        seed=args.seed,
        faults=args.faults,
        outcomes=outcomes,
        stats=stats,
        peak_rss_mb=timeline.peak_rss_mb,
        warmup_s=pool.warmup_s,
        degraded_seen=use.degraded_seen,
        injected=dict(injector.injected) if injector is not None else {},
        events=len(report.events),
        supervisor_errors=dict(report.supervisor_errors),
    )
    if costs:
        # Per test, the doubles its kind acquires (members come with their group).
        per_kind = [SERVICES[case.kind] for case in cases]
        result.double_cost_ms = {n: (1e3 * p, 1e3 * f) for n, (p, f) in costs.items()}
        result.double_speedup = sum(costs[n][1] for s in per_kind for n in s) / sum(
            costs[n][0] for s in per_kind for n in s
        )
    checks.extend(_accounting(result, injector))
    result.checks = checks
    if args.baseline:
        fresh = FreshUse(stress_specs())
        plain = [dataclasses.replace(c, fault=None) for c in cases]
        base_timeline = Timeline(None)
        result.baseline = await _run_with_progress(plain, fresh, base_timeline, "baseline")
        result.baseline_double_s = fresh.double_s
        result.baseline_peak_rss_mb = base_timeline.peak_rss_mb
    return result, timeline


async def _run_with_progress(
    cases: list[Case], use: PoolUse | FreshUse, timeline: Timeline, label: str
) -> RunOutcomes:
    def attach(out: RunOutcomes) -> None:
        timeline.outcomes = out

    with RunProgress(len(cases), label) as bar:
        async with anyio.create_task_group() as tg:
            tg.start_soon(timeline.run, bar.update)
            outcomes = await run_cases(cases, use, on_start=attach)
            tg.cancel_scope.cancel()
        bar.finish(outcomes.done)
    return outcomes


async def _settle_and_check(pool: MockPool) -> list[Check]:
    """Wait (bounded) for background work to end, then check the pool's state."""
    checks = []
    deadline = time.monotonic() + SETTLE_S
    while True:
        busy = _busy(pool)
        if not busy or time.monotonic() > deadline:
            break
        await anyio.sleep(0.01)
    checks.append(
        Check("settled", not busy, "; ".join(busy) or "no lease, wait, reset, recovery or creation left")
    )
    try:
        pool.check_invariants()
    except MockPoolError as exc:
        checks.append(Check("invariants", False, str(exc)))
    else:
        checks.append(Check("invariants", True, "pool.check_invariants() passed"))
    return checks


def _busy(pool: MockPool) -> list[str]:
    held = held_by_groups(pool)
    busy = []
    for name, s in pool.stats().items():
        extra = s.in_use - held.get(name, 0)
        if extra or s.waiting or s.creating or s.recovering:
            busy.append(
                f"{name}: {extra} held beyond groups, {s.waiting} waiting, "
                f"{s.creating} creating, {s.recovering} recovering"
            )
    return busy


def _accounting(result: StressResult, injector: FaultInjector | None) -> list[Check]:
    """What must add up: no leak, every recovery trigger accounted, every degraded lease."""
    checks = [Check("leaks", result.leaks == 0, f"{result.leaks} leaked lease(s)")]
    counted = sum(s.degraded_leases for s in result.stats.values())
    checks.append(
        Check(
            "degraded leases counted",
            counted == result.degraded_seen,
            f"the pool counted {counted}, the tests saw {result.degraded_seen}",
        )
    )
    problems = []
    for name, s in result.stats.items():
        triggers = s.reset_failures + s.health_failures + s.discards + s.create_failures + s.leaks
        outcomes = s.recoveries.total() + s.recovery_failures
        if triggers != outcomes:
            problems.append(
                f"{name}: {triggers} triggers (reset {s.reset_failures}, health {s.health_failures}, "
                f"discard {s.discards}, create {s.create_failures}, leak {s.leaks}) != {outcomes} "
                f"outcomes ({dict(s.recoveries.items())}, failed {s.recovery_failures})"
            )
    total = sum(s.recoveries.total() + s.recovery_failures for s in result.stats.values())
    checks.append(
        Check(
            "recoveries counted", not problems, "; ".join(problems) or f"{total} triggers, {total} outcomes"
        )
    )
    if injector is not None:
        out = result.outcomes
        counts = out.counts
        asked = result.injected
        checks.append(
            Check(
                "injected test faults",
                counts[Outcome.INJECTED] == asked.get("raise", 0)
                and counts[Outcome.CANCELLED] == out.cancels_delivered,
                f"{counts[Outcome.INJECTED]}/{asked.get('raise', 0)} raised errors came out unchanged; "
                f"{counts[Outcome.CANCELLED]}/{out.cancels_delivered} cancellations delivered to a "
                f"running test ended it cancelled ({asked.get('cancel', 0)} drawn; the others "
                "finished first)",
            )
        )
        discards = sum(s.discards for s in result.stats.values())
        checks.append(
            Check(
                "discards reached recovery",
                discards == out.discarded,
                f"the pool counted {discards} discards, the tests that passed made {out.discarded} "
                f"({asked.get('discard', 0)} drawn)",
            )
        )
    return checks


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
