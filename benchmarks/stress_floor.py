"""What bounds the stress suite's speedup: the tests' own work, apart from the doubles.

Run: ``python benchmarks/stress_floor.py`` (``--rounds N`` tests of each kind, default 40;
``--tests N`` for the mix, default 1,199; ``--json PATH``).

Every kind of the stress suite's tests runs one at a time, in one event loop, ``--rounds`` times
on a warm default pool and as many times on fresh doubles (what ``python -m stress --baseline``
does per test). Each run is cut in two, with ``perf_counter`` around the body of the
``async with`` (from the lease given to the block's end):

- **body**: the test's own work on the double (fakeredis commands, SQLite, PyJWT, autospec
  calls). The suite cannot be faster than the sum of its bodies: it runs on one CPU-bound loop;
- **double**: everything else: acquire, release and reset for the pool; build, bind and destroy
  for fresh doubles.

Then, for the suite's mix of ``--tests`` tests (``stress.scenario.make_cases``), the sums: the
pooled suite's floor (its bodies alone), the pool's own share, the same for fresh doubles, and
the **ceiling**: fresh total over the pooled bodies, the speedup a pool that cost nothing would
reach. Serial and uncontended, so the sums leave out what running 1,199 tasks at once adds
(scheduling, waiting, creations while tests wait); ``python -m stress --baseline`` measures that.

Then, unless ``--serial-only``, the **concurrent floor**: the mix run as ``python -m stress``
runs it (every test at once, one task each, in one loop), each ``use(name)`` given a double of
its own built beforehand: no pool, no creation, no reset, no wait. What is left is what the
tests themselves cost at that concurrency, and the speedup a pool that cost nothing would get
with one double per test: that wall plus the fresh doubles' cost, over that wall. Compare it
with the wall ``python -m stress`` prints for the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from types import TracebackType
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool
from stress.baseline import FreshDouble, FreshUse
from stress.cli import GC_THRESHOLDS, HOLD_S
from stress.graph import register_graph, stress_specs
from stress.runner import Outcome, PoolUse, run_cases
from stress.scenario import KINDS, SERVICES, Case, Held, make_cases, run_case

__all__ = ("KindCost", "PrebuiltUse", "SplitUse", "concurrent_floor", "main", "measure", "totals")


class SplitUse:
    """A test's ``use`` that counts the time spent inside its blocks in ``body_s``, and the
    rest (entering and leaving them) not: with nested blocks (``watch_party``), the inner
    block's acquire and release are not body."""

    def __init__(self, use: Callable[[str], AbstractAsyncContextManager[Held]]) -> None:
        self._use = use
        self.body_s = 0.0
        self._depth = 0
        self._since: float | None = None  # when the body's clock started, if it runs

    def __call__(self, name: str) -> _Block:
        return _Block(self, self._use(name))

    def _stop(self) -> None:
        if self._since is not None:
            self.body_s += perf_counter() - self._since
            self._since = None

    def _start(self) -> None:
        if self._depth > 0:
            self._since = perf_counter()


class _Block:
    """One ``async with use(name)``: the clock stops while the double is given or taken back."""

    __slots__ = ("_cm", "_split")

    def __init__(self, split: SplitUse, cm: AbstractAsyncContextManager[Held]) -> None:
        self._split = split
        self._cm = cm

    async def __aenter__(self) -> Held:
        split = self._split
        split._stop()
        held = await self._cm.__aenter__()
        split._depth += 1
        split._start()
        return held

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        split = self._split
        split._stop()
        split._depth -= 1
        try:
            return await self._cm.__aexit__(exc_type, exc, tb)
        finally:
            split._start()


@dataclass(frozen=True, slots=True)
class KindCost:
    """Seconds per test of one kind: its body and the rest, pooled and fresh."""

    kind: str
    pooled_body_s: float
    pooled_double_s: float
    fresh_body_s: float
    fresh_double_s: float


async def _per_test(use: SplitUse, kind: str, rounds: int) -> tuple[float, float]:
    """Mean seconds per test of ``kind``: (body, everything else)."""
    use.body_s = 0.0
    started = perf_counter()
    for i in range(rounds):
        await run_case(use, Case(i, kind, 0.0))
    total = perf_counter() - started
    return use.body_s / rounds, (total - use.body_s) / rounds


async def measure(rounds: int) -> list[KindCost]:
    """Each kind ``rounds`` times on a warm default pool, then on fresh doubles."""
    pool = MockPool(name="floor")
    register_graph(pool, stress_specs())
    costs = []
    async with pool:
        pooled, fresh = SplitUse(PoolUse(pool)), SplitUse(FreshUse(stress_specs()))
        for kind in KINDS:
            await _per_test(pooled, kind, 2)  # warm: the pool makes its instances here
            p_body, p_double = await _per_test(pooled, kind, rounds)
            f_body, f_double = await _per_test(fresh, kind, rounds)
            costs.append(KindCost(kind, p_body, p_double, f_body, f_double))
    return costs


def totals(costs: list[KindCost], tests: int, concurrent_s: float | None = None) -> dict[str, float]:
    """Seconds for the stress mix of ``tests`` tests, and the ceiling; with ``concurrent_s``
    (the concurrent floor's wall), the ceiling with one double per test at that concurrency."""
    mix = Counter(case.kind for case in make_cases(tests))
    by_kind = {c.kind: c for c in costs}

    def total(field: str) -> float:
        return float(sum(n * getattr(by_kind[kind], field) for kind, n in mix.items()))

    out = {
        "pooled_body_s": total("pooled_body_s"),
        "pooled_double_s": total("pooled_double_s"),
        "fresh_body_s": total("fresh_body_s"),
        "fresh_double_s": total("fresh_double_s"),
    }
    fresh = out["fresh_body_s"] + out["fresh_double_s"]
    out["ceiling"] = fresh / out["pooled_body_s"]
    out["serial_speedup"] = fresh / (out["pooled_body_s"] + out["pooled_double_s"])
    if concurrent_s is not None:
        out["concurrent_floor_s"] = concurrent_s
        out["concurrent_ceiling"] = (concurrent_s + out["fresh_double_s"]) / concurrent_s
    return out


class _Given(FreshDouble):
    """A double built before the run: entering and leaving it cost nothing."""

    __slots__ = ()

    def __init__(self, use: FreshUse, name: str, built: Any) -> None:
        super().__init__(use, name)
        self._built = built

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class PrebuiltUse:
    """The tests' ``use`` for the concurrent floor: each call takes a double built beforehand
    (:meth:`stock`) and never gives it back."""

    def __init__(self, fresh: FreshUse) -> None:
        self._fresh = fresh
        self._stock: dict[str, list[Any]] = {}

    async def stock(self, cases: list[Case]) -> None:
        """Build a double for every ``use(name)`` the cases make (members with their group)."""
        for case in cases:
            for name in SERVICES[case.kind]:
                self._stock.setdefault(name, []).append(await self._fresh.build(name))

    def __call__(self, name: str) -> _Given:
        stock = self._stock.get(name)
        if not stock:
            raise RuntimeError(f"no double of {name!r} was built for this run: stock() first")
        return _Given(self._fresh, name, stock.pop())


async def concurrent_floor(tests: int) -> tuple[float, int]:
    """Wall seconds of ``tests`` stress tests at once, each on doubles built beforehand, and
    how many failed (0, or the figure means nothing)."""
    cases = make_cases(tests, hold_s=HOLD_S)
    use = PrebuiltUse(FreshUse(stress_specs()))
    await use.stock(cases)
    # As ``python -m stress`` runs: what exists before the run is frozen, and collections are
    # rarer (the thousands of doubles built here would otherwise be walked at each one).
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        out = await run_cases(cases, use)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    return out.wall_s, out.total - out.counts[Outcome.PASSED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40, help="tests of each kind, each way (40)")
    parser.add_argument("--tests", type=int, default=1199, help="tests in the mix (1,199)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serial-only", action="store_true", help="skip the concurrent floor")
    args = parser.parse_args(argv)
    logging.getLogger("mockpool").setLevel(logging.ERROR)
    costs = asyncio.run(measure(args.rounds))
    concurrent: tuple[float, int] | None = None
    if not args.serial_only:
        concurrent = asyncio.run(concurrent_floor(args.tests))
        if concurrent[1]:
            print(f"concurrent floor: {concurrent[1]} test(s) failed; no figure")
            return 1
    sums = totals(costs, args.tests, None if concurrent is None else concurrent[0])
    print(f"the stress suite's tests, one at a time, {args.rounds} of each kind (µs per test)")
    print(f"{'kind':<16}{'pooled body':>12}{'pool':>8}{'fresh body':>12}{'fresh double':>14}")
    for c in costs:
        print(
            f"{c.kind:<16}{1e6 * c.pooled_body_s:>12.0f}{1e6 * c.pooled_double_s:>8.0f}"
            f"{1e6 * c.fresh_body_s:>12.0f}{1e6 * c.fresh_double_s:>14.0f}"
        )
    print(
        f"{args.tests} tests: pooled {sums['pooled_body_s']:.2f} s of bodies + "
        f"{sums['pooled_double_s']:.2f} s of pool; fresh {sums['fresh_body_s']:.2f} s of bodies + "
        f"{sums['fresh_double_s']:.2f} s of doubles"
    )
    print(
        f"speedup, serial: {sums['serial_speedup']:.1f}x; ceiling (a pool that cost nothing): "
        f"{sums['ceiling']:.1f}x"
    )
    if concurrent is not None:
        print(
            f"{args.tests} tests at once, each on doubles of its own built beforehand (no pool, "
            f"creation, reset or wait): {sums['concurrent_floor_s']:.2f} s; ceiling with one "
            f"double per test: {sums['concurrent_ceiling']:.1f}x (compare the pooled wall of "
            "python -m stress)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"kinds": [asdict(c) for c in costs], "totals": sums}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
