"""What a lease costs when each test runs in an event loop of its own (pytest-asyncio's default).

Run: ``python benchmarks/loops.py`` (``--leases N`` per round, default 300; ``--rounds N``,
default 3; ``--json PATH``).

Each lease runs in a new ``asyncio.run``, as a function-scoped test does: a session-wide pool
(made once, as the plugin makes it) against a fresh double built and closed in that loop.
Every figure is µs per test, the best of the rounds, ``asyncio.run`` itself included; the
first line is an empty ``asyncio.run``, what a test costs with no double at all. The pool's
per-loop runtime (its supervisors) is included too: ``MockPool(supervise=False)`` leaves it
out (``--no-supervise``).

- **redis**: a lease and one ``GET`` on a seeded key. The pooled client moves to the new loop
  (its locks and idle connections' reply queues made anew, the handshake kept); a fresh one
  is a new ``FakeAsyncRedis``, its handshake and the seed.
- **redis, plugin's path**: the same, after what the pytest plugin does first in each test's
  loop: ``pool.enter_loop()``, which leaves a timer that starts the pool's runtime and its
  supervisors once the loop has lived ``GUEST_SUPERVISE_AFTER_S`` (0.1 s). Before, the
  plugin started a runtime in every test's loop (0.23 ms a test), and before that, six
  supervisors too (0.4-0.6 ms).
- **sql**: a lease and one query on a seeded SQLite connection (not bound to a loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis

from mockpool import MockPool
from mockpool.services import redis_service, sql_service

__all__ = ("main", "measure")

SEED = {f"key:{n}": f"value {n}" for n in range(20)}
SCHEMA = "create table items (id integer primary key, name text not null)"


def _rows(conn: sqlite3.Connection) -> None:
    conn.executemany("insert into items (name) values (?)", [(f"item {n}",) for n in range(200)])


def _per_test(body: Callable[[], Coroutine[Any, Any, None]], leases: int) -> float:
    started = time.perf_counter()
    for _ in range(leases):
        asyncio.run(body())
    return (time.perf_counter() - started) / leases


def measure(*, leases: int = 300, rounds: int = 3, supervise: bool = True) -> dict[str, float]:
    """µs per test of each line, the best of ``rounds`` rounds of ``leases`` tests."""
    pool = MockPool(supervise=supervise)
    pool.register(redis_service(seed=SEED))
    pool.register(sql_service(schema=SCHEMA, seed=_rows))

    async def empty() -> None:
        pass

    async def pooled_redis() -> None:
        async with pool.acquire("redis") as r:
            assert await r.get("key:1") == b"value 1"

    async def plugin_redis() -> None:
        # What the pytest plugin does first in each test's loop, then the lease.
        pool.enter_loop()
        await pooled_redis()

    async def fresh_redis() -> None:
        r = fakeredis.FakeAsyncRedis()
        await r.mset(SEED)
        assert await r.get("key:1") == b"value 1"
        await r.aclose()

    async def pooled_sql() -> None:
        async with pool.acquire("database") as db:
            assert db.execute("select count(*) from items").fetchone() == (200,)

    async def fresh_sql() -> None:
        db = sqlite3.connect(":memory:")
        db.execute(SCHEMA)
        _rows(db)
        assert db.execute("select count(*) from items").fetchone() == (200,)
        db.close()

    lines: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "asyncio.run, empty": empty,
        "redis, pooled": pooled_redis,
        "redis, plugin's path": plugin_redis,
        "redis, fresh": fresh_redis,
        "sql, pooled": pooled_sql,
        "sql, fresh": fresh_sql,
    }
    best = dict.fromkeys(lines, float("inf"))
    for _ in range(rounds):
        for label, body in lines.items():
            best[label] = min(best[label], _per_test(body, leases))
    return {label: 1e6 * seconds for label, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leases", type=int, default=300, metavar="N", help="tests per round (300)")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds; the best counts (3)")
    parser.add_argument("--no-supervise", action="store_true", help="a pool without supervisors")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.leases < 1 or args.rounds < 1:
        parser.error("--leases and --rounds must be >= 1")
    figures = measure(leases=args.leases, rounds=args.rounds, supervise=not args.no_supervise)
    print(f"a test in an event loop of its own, µs (best of {args.rounds} rounds of {args.leases})")
    for label, us in figures.items():
        print(f"  {label:<20} {us:8.0f}")
    for name in ("redis", "sql"):
        pooled, fresh = figures[f"{name}, pooled"], figures[f"{name}, fresh"]
        print(f"  {name}: fresh / pooled {fresh / pooled:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
