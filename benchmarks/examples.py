"""The example suite before and after mockpool: the whole suite, and the fixture alone.

``tests/examples/`` runs the same test bodies (``cases.py``: a 17-table SQLAlchemy model, a
fastcrud-like CRUD layer) twice: ``before/`` on the classic per-test schema fixture (a new
``sqlite+aiosqlite`` engine, ``create_all``, the seed, dispose), ``after/`` on a pooled session
(``sqlalchemy_service``, registered through the pytest plugin). This script measures:

* **the fixture alone**, in-process: one setup + teardown of each fixture (what
  ``tests/examples/db.py`` gives the conftests), many times in one event loop, best of rounds;
* **the whole suite**: ``python -m pytest tests/examples/<suite> -q -p no:randomly`` in a
  subprocess, best of rounds: pytest's session time (collection and tests: the "in N s" that
  pytest prints), the wall time of the process (with interpreter start and plugin imports), and
  per test the setup, call and teardown phases (this module doubles as the pytest plugin that
  records them: ``-p benchmarks.examples``).

Targets: the fixture alone >= 30x, the whole suite (session time) >= 3x.

Run: ``python benchmarks/examples.py`` (``--rounds``, ``--cycles``; ``--json`` for the figures
as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("before", "after")
FIXTURE_TARGET = 30.0
SUITE_TARGET = 3.0
_ENV = "MOCKPOOL_EXAMPLES_TIMING"


# == the pytest side: phase timings, written as JSON to $MOCKPOOL_EXAMPLES_TIMING ===============

_phases: dict[str, float] = {"setup": 0.0, "call": 0.0, "teardown": 0.0}
_session: dict[str, float] = {}


def _timed(phase: str) -> Callable[..., Generator[None, object, object]]:
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def hook(item: pytest.Item, *args: Any) -> Generator[None, object, object]:
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            _phases[phase] += time.perf_counter() - start

    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")


def pytest_sessionstart(session: pytest.Session) -> None:
    _session["start"] = time.perf_counter()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get(_ENV)
    if not out:
        return
    data = {
        "session_s": time.perf_counter() - _session["start"],
        "tests": session.testscollected,
        "failed": session.testsfailed,
        **{f"{phase}_s": total for phase, total in _phases.items()},
    }
    Path(out).write_text(json.dumps(data), encoding="utf-8")


# == the measurements ===========================================================================


def run_suite(suite: str, *, collect_only: bool = False) -> dict[str, Any]:
    """One run of a suite in a subprocess: its wall time and what the plugin above recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timing.json"
        cmd = [sys.executable, "-m", "pytest", f"tests/examples/{suite}", "-q", "-p", "no:randomly"]
        cmd += ["-p", "benchmarks.examples"]
        if collect_only:
            cmd.append("--collect-only")
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, _ENV: str(out)}, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    data["wall_s"] = wall
    return data


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the best (lowest) of the rounds: a noisy neighbour inflates none of them."""
    return {key: min(run[key] for run in runs) for key in runs[0]}


async def _cycles(make: Callable[[], AbstractAsyncContextManager[Any]], cycles: int) -> float:
    for _ in range(3):  # warm: imports, SQLAlchemy's compiled-statement cache, the template
        async with make():
            pass
    start = time.perf_counter()
    for _ in range(cycles):
        async with make():
            pass
    return (time.perf_counter() - start) / cycles


async def fixture_alone(cycles: int, rounds: int) -> dict[str, float]:
    """Seconds per fixture setup + teardown, before and after (best of ``rounds``)."""
    # Imported as pytest imports it (rootdir-relative: tests/ is the base of the package).
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from examples.db import fresh_session, pooled_session, shop_db_service

    from mockpool import MockPool

    pool = MockPool()
    # Default sizes: one cycle at a time, so the pool keeps one instance, and every cycle pays
    # the previous lease's reset (the template reload).
    pool.register(shop_db_service())

    def pooled() -> AbstractAsyncContextManager[Any]:
        return pooled_session(pool)

    before: list[float] = []
    after: list[float] = []
    async with pool:
        for _ in range(rounds):
            before.append(await _cycles(fresh_session, cycles))
            after.append(await _cycles(pooled, cycles * 10))
        size = pool.stats("shop_db").size
    if size != 1:
        raise AssertionError(f"one cycle at a time made {size} instances on default sizes, not 1")
    return {"before_s": min(before), "after_s": min(after)}


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f} ms"


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.1f}x (target >= {target:g}x: {'met' if ratio >= target else 'MISSED'})"


def report(fixture: dict[str, float], suites: dict[str, dict[str, Any]], startup: dict[str, Any]) -> str:
    b, a = suites["before"], suites["after"]
    n = b["tests"]
    lines = [
        "fixture alone (in-process, setup + teardown, best of rounds):",
        f"  before: new engine + create_all (17 tables) + seed + dispose  {_ms(fixture['before_s'])}",
        f"  after:  pooled session (acquire, reset on release)             {_ms(fixture['after_s'])}",
        f"  ratio: {_verdict(fixture['before_s'] / fixture['after_s'], FIXTURE_TARGET)}",
        "",
        f"whole suite ({n} tests each; python -m pytest tests/examples/<suite> -q -p no:randomly):",
        f"  {'':28}{'before':>10}{'after':>10}{'ratio':>8}",
    ]

    def row(label: str, before: float, after: float, unit: str = "s") -> None:
        scale, fmt = (1.0, "{:.2f} s") if unit == "s" else (1000.0 / n, "{:.2f} ms")
        lines.append(
            f"  {label:28}{fmt.format(before * scale):>10}{fmt.format(after * scale):>10}"
            f"{before / after:>7.1f}x"
        )

    row("pytest session time", b["session_s"], a["session_s"])
    row("wall time of the process", b["wall_s"], a["wall_s"])
    row("per test: setup", b["setup_s"], a["setup_s"], "ms")
    row("per test: call (the body)", b["call_s"], a["call_s"], "ms")
    row("per test: teardown", b["teardown_s"], a["teardown_s"], "ms")
    row(
        "per test: all phases",
        b["setup_s"] + b["call_s"] + b["teardown_s"],
        a["setup_s"] + a["call_s"] + a["teardown_s"],
        "ms",
    )
    lines += [
        f"  session time ratio: {_verdict(b['session_s'] / a['session_s'], SUITE_TARGET)}",
        (
            "  process start + imports + collection (--collect-only wall): "
            f"before {startup['before']['wall_s']:.2f} s, after {startup['after']['wall_s']:.2f} s; "
            "the same for both suites, it dilutes the wall-time ratio"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; the best is kept (3)")
    parser.add_argument(
        "--cycles", type=int, default=40, help="fixture cycles per round before (x10 after) (40)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    fixture = asyncio.run(fixture_alone(args.cycles, args.rounds))
    runs: dict[str, list[dict[str, Any]]] = {suite: [] for suite in SUITES}
    for i in range(args.rounds):
        # Alternate the order, so a slow spell of the machine does not hit one suite only.
        for suite in SUITES if i % 2 == 0 else SUITES[::-1]:
            runs[suite].append(run_suite(suite))
    suites = {suite: best(r) for suite, r in runs.items()}
    startup = {
        suite: best([run_suite(suite, collect_only=True) for _ in range(args.rounds)]) for suite in SUITES
    }
    if args.json:
        print(json.dumps({"fixture": fixture, "suites": suites, "startup": startup}, indent=2))
    else:
        print(report(fixture, suites, startup))


if __name__ == "__main__":
    main()
