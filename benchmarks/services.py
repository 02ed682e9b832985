"""Per-lease cost of each built-in fake: pooled (acquire + write + release, which resets)
against fresh (create + write + destroy), as a ratio from one run.

Run: ``python benchmarks/services.py`` (``--quick`` for a short run). Each figure is the best of
several rounds of the mean cost per lease, so a noisy neighbour inflates none of them.

Targets: autospec of a 60-method class >= 50x, sql (4 tables + 1,000 rows) >= 10x, redis with
200 seeded keys >= 20x, http >= 20x against what a respx test without a pool builds (a patched
router and a client with its own SSL context); the second http line compares the lease with the
double's own factory, which builds no SSL context. With ``--empty`` (tests that do nothing: the
lease itself against building the double), sql, aiosqlite and sqlalchemy >= 20x. The aiosqlite
and sqlalchemy lines compare a pooled connection / ``AsyncSession`` (rebuilt from the template
per lease) with what a test without a pool pays: a new aiosqlite connection (and, for
sqlalchemy, an engine, ``create_all`` and a session), the schema, the seed, the write and the
close.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool, ServiceSpec
from mockpool.services import (
    DEVICE_SESSION_SCHEMA,
    aiosqlite_service,
    autospec_service,
    device_session_service,
    http_service,
    jwt_service,
    redis_service,
    sql_service,
    sqlalchemy_service,
)


def _client_class(methods: int) -> type:
    """A class with ``methods`` methods of a few typed parameters each, like an API client."""
    namespace: dict[str, Any] = {}
    for i in range(methods):
        exec(  # noqa: S102 - a real signature per method, as create_autospec sees in a hand-written client
            f"def method_{i}(self, resource_id: str, payload: dict | None = None, *, timeout: float = 5.0)"
            " -> dict:\n    raise NotImplementedError\n",
            namespace,
        )
    return type("ApiClient", (), {k: v for k, v in namespace.items() if k.startswith("method_")})


def _sql_seed(conn: sqlite3.Connection) -> None:
    for table in ("users", "devices", "sessions_log", "events"):
        conn.executemany(
            f"insert into {table} (name, value) values (?, ?)", [(f"{table}-{i}", i) for i in range(250)]
        )


async def _sql_fresh(write: Write) -> None:
    """A test without a pool: a plain sqlite3 connection, the schema, the seed, the write."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SQL_SCHEMA)
        _sql_seed(conn)
        conn.commit()
        await _call(write, conn)
    finally:
        conn.close()


SQL_SCHEMA = "".join(
    f"create table {t} (id integer primary key, name text not null, value integer);"
    for t in ("users", "devices", "sessions_log", "events")
)
REDIS_SEED = {f"key:{i}": f"value-{i}" for i in range(200)}

Write = Callable[[Any], Awaitable[object] | object]


@dataclass(frozen=True)
class Case:
    label: str
    spec: ServiceSpec
    write: Write
    members: tuple[ServiceSpec, ...] = ()
    target: float | None = None
    #: The target with ``--empty``: a lease against building the double.
    empty_target: float | None = None
    #: What a test without a pool pays, given the test's write, when the spec's factory does
    #: not show it (a factory that loads a template built once).
    fresh: Callable[[Write], Awaitable[None]] | None = None


def _sa_metadata() -> Any:
    from sqlalchemy import Column, Integer, MetaData, String, Table

    metadata = MetaData()
    for name in ("users", "devices", "sessions_log", "events"):
        Table(
            name,
            metadata,
            Column("id", Integer, primary_key=True),
            Column("name", String, nullable=False),
            Column("value", Integer),
        )
    return metadata


SA_METADATA = _sa_metadata()
SA_SEED = {
    table: [{"name": f"{table}-{i}", "value": i} for i in range(250)]
    for table in ("users", "devices", "sessions_log", "events")
}


async def _sa_write(session: Any) -> None:
    from sqlalchemy import insert

    await session.execute(insert(SA_METADATA.tables["users"]).values(name="x", value=1))
    await session.commit()


async def _sa_fresh(write: Write) -> None:
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.pool import StaticPool

    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as conn:
        await conn.run_sync(SA_METADATA.create_all)
        for table, rows in SA_SEED.items():
            await conn.execute(insert(SA_METADATA.tables[table]), rows)
    async with AsyncSession(engine) as session:
        await _call(write, session)
    await engine.dispose()


async def _aio_write(db: Any) -> None:
    await db.execute("insert into users (name, value) values ('x', 1)")
    await db.commit()


async def _aio_fresh(write: Write) -> None:
    import aiosqlite

    async with aiosqlite.connect(":memory:") as db:
        await db.executescript(SQL_SCHEMA)
        for table in ("users", "devices", "sessions_log", "events"):
            await db.executemany(
                f"insert into {table} (name, value) values (?, ?)", [(f"{table}-{i}", i) for i in range(250)]
            )
        await db.commit()
        await _call(write, db)


async def _redis_write(r: Any) -> None:
    await r.set("key:0", "changed")


async def _http_write(api: Any) -> None:
    await api.get("/items")


async def _http_fresh(write: Write) -> None:
    """What a respx test pays without a pool: the route on a new respx router, patched in and
    out, and a new ``httpx.AsyncClient`` (with its own SSL context) for the code under test
    (which sends the test's request: ``write`` is the pooled test's equivalent)."""
    import httpx
    import respx

    del write
    async with respx.mock(base_url="http://testserver", assert_all_called=False) as router:
        router.get("/items").respond(json=[{"id": 1}])
        async with httpx.AsyncClient(base_url="http://testserver") as client:
            await client.get("/items")


async def _session_write(sessions: Any) -> None:
    await sessions.create_session("u1", "phone")


def _cases() -> list[Case]:
    return [
        Case(
            "autospec, 60-method class",
            autospec_service(_client_class(60)),
            lambda m: m.method_0("r1"),
            target=50,
        ),
        Case(
            "sql, 4 tables + 1,000 rows",
            sql_service(schema=SQL_SCHEMA, seed=_sql_seed),
            lambda db: db.execute("insert into users (name, value) values ('x', 1)"),
            fresh=_sql_fresh,
            # 50x before each lease got a new connection (issue 12): opening it, and SQLite
            # reading the schema again at the test's first statement, cost tens of
            # microseconds. The bar (20x) is on the lease itself: --empty.
            target=10,
            empty_target=20,
        ),
        Case(
            "aiosqlite, 4 tables + 1,000 rows",
            aiosqlite_service(schema=SQL_SCHEMA, seed=_sql_seed),
            _aio_write,
            fresh=_aio_fresh,
            empty_target=20,
        ),
        Case(
            "sqlalchemy AsyncSession, 4 tables + 1,000 rows",
            sqlalchemy_service(metadata=SA_METADATA, seed=SA_SEED),
            _sa_write,
            fresh=_sa_fresh,
            empty_target=20,
        ),
        Case("redis, 200 seeded keys", redis_service(seed=REDIS_SEED), _redis_write, target=20),
        Case("jwt (HS256)", jwt_service(), lambda j: j.revoke(j.sign({"sub": "u1"}))),
        Case(
            "http, 1 route (fresh: respx.mock + httpx.AsyncClient())",
            http_service(routes={"GET /items": [{"id": 1}]}),
            _http_write,
            target=20,
            fresh=_http_fresh,
        ),
        Case(
            "http, 1 route (fresh: the double's own factory, no SSL context)",
            http_service(routes={"GET /items": [{"id": 1}]}),
            _http_write,
        ),
        Case(
            "device_session (redis+jwt+sql)",
            device_session_service(),
            _session_write,
            members=(redis_service(), jwt_service(), sql_service(schema=DEVICE_SESSION_SCHEMA)),
        ),
    ]


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _fresh_once(spec: ServiceSpec, members: tuple[ServiceSpec, ...], write: Write) -> None:
    """What a test without a pool pays: build (members too), bind, write, close."""
    built: list[tuple[ServiceSpec, Any, Any]] = []
    for member in members:
        instance = await _call(member.factory)
        handle = await _call(member.bind, instance) if member.bind is not None else instance
        built.append((member, instance, handle))
    instance = await _call(spec.factory, *(handle for _, _, handle in built))
    handle = await _call(spec.bind, instance) if spec.bind is not None else instance
    await _call(write, handle)
    for owner, item, item_handle in [(spec, instance, handle), *reversed(built)]:
        if item_handle is not item and hasattr(item_handle, "aclose"):
            await item_handle.aclose()  # a loop-bound client made for this one test
        if owner.destroy is not None:
            await _call(owner.destroy, item)


async def _rounds(body: Callable[[], Awaitable[None]], *, rounds: int, budget: float) -> float:
    """Best over ``rounds`` of the mean seconds per call, each round at least ``budget`` long."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        count, started = 0, time.perf_counter()
        while True:
            await body()
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= budget and count >= 3:
                break
        best = min(best, elapsed / count)
    return best


def _nothing(handle: object) -> None:
    del handle


async def _measure(case: Case, *, rounds: int, budget: float, empty: bool) -> tuple[float, float]:
    pool = MockPool(supervise=False)
    for member in case.members:
        pool.register(member)
    pool.register(case.spec)
    name = case.spec.name
    async with pool:
        await pool.warm({name: 1})

        write = _nothing if empty else case.write

        async def pooled() -> None:
            async with pool.acquire(name) as handle:
                await _call(write, handle)

        await pooled()  # binds the handle for this loop once
        pooled_s = await _rounds(pooled, rounds=rounds, budget=budget)
    build = case.fresh

    async def fresh() -> None:
        if build is not None:
            await build(write)
        else:
            await _fresh_once(case.spec, case.members, write)

    fresh_s = await _rounds(fresh, rounds=rounds, budget=budget)
    return pooled_s, fresh_s


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter rounds (noisier figures)")
    parser.add_argument("--only", metavar="TEXT", help="run only the fakes whose label contains TEXT")
    parser.add_argument(
        "--empty",
        action="store_true",
        help="tests that do nothing: a lease (acquire, reset) against building the double and closing it",
    )
    args = parser.parse_args(argv)
    rounds, budget = (2, 0.1) if args.quick else (3, 0.4)
    rows = []
    missed = []
    for case in _cases():
        if args.only and args.only not in case.label:
            continue
        pooled_s, fresh_s = await _measure(case, rounds=rounds, budget=budget, empty=args.empty)
        ratio = fresh_s / pooled_s
        goal = case.empty_target if args.empty else case.target
        target = f">= {goal:g}x" if goal else ""
        if goal and ratio < goal:
            missed.append(case.label)
            target += " MISSED"
        rows.append((case.label, _us(fresh_s), _us(pooled_s), f"{ratio:,.0f}x", target))
    header = ("fake", "fresh per test", "pooled per lease", "ratio", "target")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    mode = "tests that do nothing" if args.empty else "tests that write once"
    print(f"Python {sys.version.split()[0]}, {sys.platform}; best of {rounds} rounds; {mode}")
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if missed:
        print(f"below target: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
