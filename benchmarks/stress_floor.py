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
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool
from stress.baseline import FreshUse
from stress.graph import register_graph, stress_specs
from stress.runner import PoolUse
from stress.scenario import KINDS, Case, Held, make_cases, run_case

__all__ = ("KindCost", "SplitUse", "main", "measure", "totals")


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


def totals(costs: list[KindCost], tests: int) -> dict[str, float]:
    """Seconds for the stress mix of ``tests`` tests, and the ceiling."""
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
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40, help="tests of each kind, each way (40)")
    parser.add_argument("--tests", type=int, default=1199, help="tests in the mix (1,199)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.getLogger("mockpool").setLevel(logging.ERROR)
    costs = asyncio.run(measure(args.rounds))
    sums = totals(costs, args.tests)
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
    if args.json is not None:
        args.json.write_text(json.dumps({"kinds": [asdict(c) for c in costs], "totals": sums}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
