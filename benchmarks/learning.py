"""Learning from an earlier run: the same suite twice, with one history file.

Run: ``python benchmarks/learning.py`` (``--tests N``, ``--concurrency C``, ``--seed S``,
``--history PATH``, ``--json PATH``, ``--check``). The history file starts empty (it is deleted
first), so run 1 is cold and run 2 warms from what run 1 recorded.

The suite: ``--tests`` tests (1,199 by default, the seed's count) against the seed's service
graph (:func:`mockpool.services.registry.seed_registry`: plex, youtube, cache, redis, jwt,
database, device_session = redis + jwt + database, dashboard = database + cache + plex), in
modules of 40 to 80 tests. Each module has a main kind of test (a third of its tests are of
other kinds), so demand shifts across services as the run goes on, as in a real suite. Each
test does real work on its doubles (redis writes and reads, SQL inserts and queries, JWT
signing and verification, HTTP calls, device sessions, a dashboard summary), awaits simulated
I/O of 2 to 10 ms, and checks its results. Tests start in collection order, at most
``--concurrency`` at once (like pytest-asyncio-cooperative or the stress runner), each under its
test id, and before each one the runner calls ``pool.expect()`` with the ids of the next tests,
as the pytest plugin does.

Printed per run: the warm-up time (``pool.warmup_s``: creating what history predicts, before
the first test), how many instances it created and destroyed before the pool closed, the hit rate (``PoolStats``: acquisitions served
at once by an idle instance, over all services), the reuse rate (served without a creation: at
once, or by a release while waiting), the misses and the wall time; then, for run 2, predicted
against actual peaks per service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool
from mockpool.lease import lease_owner
from mockpool.report import format_percent, format_share
from mockpool.services.registry import seed_registry

#: Each kind of test and the services it leases (group services hold their members).
KINDS: dict[str, tuple[str, ...]] = {
    "cache": ("cache",),
    "redis": ("redis",),
    "database": ("database",),
    "jwt": ("jwt",),
    "plex": ("plex",),
    "youtube": ("youtube",),
    "device_session": ("device_session",),
    "dashboard": ("dashboard",),
    "login": ("jwt", "redis"),
    "media": ("plex", "youtube", "cache"),
}


@dataclass(frozen=True, slots=True)
class Case:
    test_id: str
    kind: str
    hold_s: float


def make_suite(n: int, seed: int) -> list[Case]:
    """``n`` tests in modules of 40 to 80, each module with a main kind."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    cases: list[Case] = []
    module = 0
    while len(cases) < n:
        main = kinds[module % len(kinds)]
        for i in range(min(rng.randint(40, 80), n - len(cases))):
            kind = main if rng.random() < 2 / 3 else rng.choice(kinds)
            cases.append(
                Case(f"tests/test_{module:02d}_{main}.py::test_{kind}_{i}", kind, rng.uniform(0.002, 0.01))
            )
        module += 1
    return cases


# -- the tests ---------------------------------------------------------------------------------


async def cache_test(d: dict[str, Any], case: Case) -> None:
    cache = d["cache"]
    assert await cache.get("plex:sections") is None  # nobody else's writes
    await cache.set(f"k:{case.test_id}", "v", ex=60)
    await asyncio.sleep(case.hold_s)
    assert await cache.get(f"k:{case.test_id}") == "v"


async def redis_test(d: dict[str, Any], case: Case) -> None:
    redis = d["redis"]
    assert await redis.dbsize() == 0
    await redis.incrby("hits", 3)
    await asyncio.sleep(case.hold_s)
    assert int(await redis.get("hits")) == 3


async def database_test(d: dict[str, Any], case: Case) -> None:
    db = d["database"]
    assert db.execute("select count(*) from users").fetchone() == (3,)
    db.execute("insert into users (id, name) values (?, ?)", (case.test_id, "Test"))
    await asyncio.sleep(case.hold_s)
    assert db.execute("select count(*) from users").fetchone() == (4,)


async def jwt_test(d: dict[str, Any], case: Case) -> None:
    jwt = d["jwt"]
    token = jwt.sign({"sub": case.test_id}, expires_in=60)
    await asyncio.sleep(case.hold_s)
    assert jwt.verify(token)["sub"] == case.test_id


async def plex_test(d: dict[str, Any], case: Case) -> None:
    plex = d["plex"]
    response = await plex.get("/library/sections")
    await asyncio.sleep(case.hold_s)
    assert response.json()["MediaContainer"]["size"] == 2
    assert len(plex.calls) == 1


async def youtube_test(d: dict[str, Any], case: Case) -> None:
    youtube = d["youtube"]
    response = await youtube.get("/videos/abc")
    await asyncio.sleep(case.hold_s)
    assert response.json()["id"] == "abc"
    assert len(youtube.calls) == 1


async def device_session_test(d: dict[str, Any], case: Case) -> None:
    sessions = d["device_session"]
    assert await sessions.active_sessions("u1") == []
    session = await sessions.create_session("u1", "tv")
    await asyncio.sleep(case.hold_s)
    assert (await sessions.validate(session.token)) is not None
    assert await sessions.revoke(session.session_id)


async def dashboard_test(d: dict[str, Any], case: Case) -> None:
    summary = await d["dashboard"].summary("u1")
    await asyncio.sleep(case.hold_s)
    assert summary["user"] == "Alice"
    assert summary["sections"] == ["Movies", "TV Shows"]


async def login_test(d: dict[str, Any], case: Case) -> None:
    token = d["jwt"].sign({"sub": "u2"}, expires_in=60)
    await d["redis"].set(f"session:{token[-12:]}", "u2")
    await asyncio.sleep(case.hold_s)
    assert await d["redis"].dbsize() == 1


async def media_test(d: dict[str, Any], case: Case) -> None:
    sections = (await d["plex"].get("/library/sections")).json()
    video = (await d["youtube"].get("/videos/xyz")).json()
    await d["cache"].set("media", json.dumps([sections["MediaContainer"]["size"], video["id"]]))
    await asyncio.sleep(case.hold_s)
    assert json.loads(await d["cache"].get("media")) == [2, "xyz"]


TESTS: dict[str, Callable[[dict[str, Any], Case], Awaitable[None]]] = {
    "cache": cache_test,
    "redis": redis_test,
    "database": database_test,
    "jwt": jwt_test,
    "plex": plex_test,
    "youtube": youtube_test,
    "device_session": device_session_test,
    "dashboard": dashboard_test,
    "login": login_test,
    "media": media_test,
}


# -- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunResult:
    warmup_ms: float
    warmed: int
    acquisitions: int
    hits: int
    reuses: int
    misses: int
    hit_rate: float
    reuse_rate: float
    created: int
    #: Instances destroyed before the pool closed (churn: issue 14 asks for at most 5 % of created).
    destroyed: int
    wall_s: float
    failed: int
    learning: dict[str, dict[str, Any]]


async def run_suite(cases: list[Case], history: Path, concurrency: int, lookahead: int) -> RunResult:
    pool = MockPool(name="learning", history=history, track_leases=True)
    seed_registry(pool)
    asked = failed = 0
    started = time.perf_counter()
    async with pool:
        warmup_ms = (pool.warmup_s or 0.0) * 1e3
        warmed = sum(s.size for s in pool.stats().values())
        slots = asyncio.Semaphore(concurrency)

        async def run_one(case: Case) -> None:
            nonlocal asked, failed
            token = lease_owner.set(case.test_id)
            try:
                async with AsyncExitStack() as stack:
                    doubles: dict[str, Any] = {}
                    for name in KINDS[case.kind]:
                        asked += 1
                        doubles[name] = await stack.enter_async_context(pool.acquire(name))
                    await TESTS[case.kind](doubles, case)
            except Exception as exc:
                failed += 1
                print(f"FAILED {case.test_id}: {exc!r}", file=sys.stderr)
            finally:
                lease_owner.reset(token)
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for i, case in enumerate(cases):
                await slots.acquire()
                # What the pytest plugin does: warm ahead of the tests that come next.
                pool.expect([c.test_id for c in cases[i : i + lookahead]])
                tg.create_task(run_one(case))
        wall_s = time.perf_counter() - started
        stats = pool.stats()
        learning: dict[str, dict[str, Any]] = pool.report().to_dict()["learning"]
        pool.check_invariants()
    hits = sum(s.hits for s in stats.values())
    reuses = sum(s.reuses for s in stats.values())
    served = sum(s.served for s in stats.values())
    return RunResult(
        warmup_ms=warmup_ms,
        warmed=warmed,
        acquisitions=asked,
        hits=hits,
        reuses=reuses,
        misses=served - reuses,
        hit_rate=hits / served if served else 0.0,
        reuse_rate=reuses / served if served else 0.0,
        created=sum(s.created for s in stats.values()),
        destroyed=sum(s.destroyed for s in stats.values()),
        wall_s=wall_s,
        failed=failed,
        learning=learning,
    )


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{format_share(rate)}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=1199)
    parser.add_argument("--concurrency", type=int, default=32, help="tests running at once")
    parser.add_argument("--lookahead", type=int, default=2, help="tests ahead passed to pool.expect()")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history", type=Path, help="history file (deleted first; default: a temp file)")
    parser.add_argument("--json", type=Path, help="write both runs' results here")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless run 2's reuse rate (served without waiting for a creation) >= 95%% and warm-up <= 250 ms",
    )
    args = parser.parse_args()
    cases = make_suite(args.tests, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        history: Path = args.history or Path(tmp) / "history.json"
        history.unlink(missing_ok=True)
        results = [asyncio.run(run_suite(cases, history, args.concurrency, args.lookahead)) for _ in range(2)]
    print(
        f"{len(cases)} tests, {args.concurrency} at once, seed {args.seed}, "
        f"{sys.version.split()[0]}, one history file for both runs"
    )
    header = (
        "run",
        "warm-up",
        "warmed",
        "acquired",
        "hit rate",
        "reuse rate",
        "misses",
        "created",
        "destroyed",
        "wall",
    )
    rows = [header]
    for label, r in zip(("1 (cold)", "2 (from history)"), results, strict=True):
        rows.append(
            (
                label,
                f"{r.warmup_ms:.1f} ms",
                str(r.warmed),
                str(r.acquisitions),
                f"{format_percent(r.hits, r.misses + r.reuses)} %",
                f"{format_percent(r.reuses, r.misses + r.reuses)} %",
                str(r.misses),
                str(r.created),
                str(r.destroyed),
                f"{r.wall_s:.2f} s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print("\nrun 2, per service: predicted (history) against actual")
    print(
        f"  {'service':<15}{'size pred.':>11}{'warmed':>8}{'size':>6}{'peak':>6}{'acq. pred.':>12}{'acq.':>6}"
        f"{'hit rate':>10}{'reuse rate':>12}"
    )
    for name, d in results[1].learning.items():
        # A figure of nothing (no history, nothing served) is a dash, not a prediction of 0 or
        # a rate of 0 %.
        print(
            f"  {name:<15}{_figure(d['predicted_size'], '.1f'):>11}{d['warmed']:>8}{d['actual_size']:>6}"
            f"{d['actual_peak']:>6}"
            f"{_figure(d['predicted_acquisitions'], '.1f'):>12}{d['actual_acquisitions']:>6}"
            f"{_percent(d['hit_rate']):>10}{_percent(d['reuse_rate']):>12}"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    failed = sum(r.failed for r in results)
    if failed:
        print(f"{failed} tests failed", file=sys.stderr)
        sys.exit(1)
    # Issue 5's target: 95 % of run 2's acquisitions served "without waiting for a creation",
    # what the reuse rate counts since hits (served at once) and reuses were told apart.
    if args.check and not (results[1].reuse_rate >= 0.95 and results[1].warmup_ms <= 250):
        print("targets missed: run 2 needs reuse rate >= 95 % and warm-up <= 250 ms", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
