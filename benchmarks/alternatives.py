"""mockpool against the best alternative: the same small app-like suite, three ways.

The app under test has five SQLAlchemy tables (SQLite through aiosqlite), a redis cache, an
``httpx.AsyncClient`` for an external rates API, and JWT sign/verify. Each test signs and
verifies a token, adds a user, reads a product, gets an exchange rate (cache, else the API,
then the cache), adds an order, commits, and checks that it sees the seed's orders plus its
own: nobody else's. The suite is run three ways, each with the fixtures people write:

* **naive**: per test, a new engine, ``create_all`` of the five tables and the seed, a new
  fakeredis client, a new ``httpx.AsyncClient`` (which builds an SSL context), all torn down
  after the test;
* **rollback**: the best hand-written alternative. The schema and seed are built once per
  session, each test runs in a transaction rolled back at its end (SQLAlchemy's "join the
  session into an external transaction" recipe, savepoints for the test's commits), one
  fakeredis server flushed after each test, one ``httpx.AsyncClient`` for the run;
* **mockpool**: ``sqlalchemy_service``, ``redis_service``, ``http_service`` and ``jwt_service``
  with their default pool sizes; each test leases what it uses.

and two ways of scheduling: **sequential** (one test after the other, as pytest runs them) and
**concurrent** (every test at once in one event loop, as pytest-asyncio-cooperative or the
stress suite runs them). The rollback pattern shares one connection, one transaction at a time,
and one redis server that each test flushes: its concurrent run serializes the tests behind a
lock, which is what such a suite must do to stay correct.

Measured: the wall time of the whole suite, one-time set-up included (the session fixtures'
schema and seed, the pool's start), best of ``--rounds``; each round runs every strategy, so
that a busy spell of a shared machine does not fall on one of them only. Also measured: what an
``httpx.AsyncClient()`` costs to make, against one over a ``MockTransport``, and a pooled
client's lease (docs/recipes.md, "Pool the expensive client").

Run: ``python benchmarks/alternatives.py`` (``--tests N``, ``--rounds N``, ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import jwt
from sqlalchemy import ForeignKey, String, event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool, ServiceSpec
from mockpool.services import http_service, jwt_service, redis_service, sqlalchemy_service

# == the app ====================================================================================


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    price: Mapped[float]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    total: Mapped[float]


class OrderItem(Base):
    __tablename__ = "order_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    stars: Mapped[int]


SEED: dict[str, list[dict[str, Any]]] = {
    "users": [{"id": i, "name": f"seed-{i}"} for i in range(1, 21)],
    "products": [{"id": i, "name": f"product {i}", "price": 10.0 * i} for i in range(1, 51)],
    "orders": [{"id": i, "user_id": 1 + i % 20, "total": 10.0 * i} for i in range(1, 31)],
    "order_items": [{"id": i, "order_id": i, "product_id": 1 + i % 50, "quantity": 1} for i in range(1, 31)],
    "reviews": [{"id": i, "product_id": 1 + i % 50, "stars": 1 + i % 5} for i in range(1, 41)],
}
API = "https://rates.example.com"
SECRET = "app-secret-of-at-least-thirty-two-bytes"


#: How long the rates API takes to answer (``--latency``): 0, or what a slow dependency (a
#: service the test waits for, a worker's poll) would cost; where concurrency pays.
LATENCY_S = 0.0


async def rates(request: httpx.Request) -> httpx.Response:
    if LATENCY_S:
        await asyncio.sleep(LATENCY_S)
    return httpx.Response(200, json={"currency": request.url.path.rsplit("/", 1)[-1], "rate": 1.1})


def enable_foreign_keys(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.execute("pragma foreign_keys = on")


def _no_driver_begin(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None


@dataclass
class Deps:
    """What one test gets from its fixtures."""

    db: AsyncSession
    cache: Any  # a redis.asyncio client
    http: httpx.AsyncClient
    sign: Callable[[dict[str, Any]], str]
    verify: Callable[[str], dict[str, Any]]


async def app_test(i: int, deps: Deps) -> None:
    """One test of the app: every fixture used, and a check that no other test's rows show."""
    claims = deps.verify(deps.sign({"sub": f"user-{i}"}))
    user = User(name=claims["sub"])
    deps.db.add(user)
    await deps.db.flush()
    product = await deps.db.get(Product, 1 + i % 50)
    assert product is not None
    rate = await deps.cache.get("rate:EUR")
    if rate is None:
        response = await deps.http.get("/rates/EUR")
        rate = response.json()["rate"]
        await deps.cache.set("rate:EUR", rate, ex=60)
    deps.db.add(Order(user_id=user.id, total=product.price * float(rate)))
    await deps.db.commit()
    orders = await deps.db.scalar(select(func.count()).select_from(Order))
    assert orders == len(SEED["orders"]) + 1, f"test {i} sees {orders} orders: isolation broken"


def hs256() -> tuple[Callable[[dict[str, Any]], str], Callable[[str], dict[str, Any]]]:
    def sign(claims: dict[str, Any]) -> str:
        return jwt.encode(claims, SECRET, algorithm="HS256")

    def verify(token: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
        return claims

    return sign, verify


def app_client() -> httpx.AsyncClient:
    """The client the app makes: a real one (SSL context and all), its API host mounted on a
    mock transport, as a test would mount it."""
    return httpx.AsyncClient(base_url=API, mounts={API: httpx.MockTransport(rates)})


async def seeded_engine(*, savepoints: bool = False) -> AsyncEngine:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    event.listen(engine.sync_engine, "connect", enable_foreign_keys)
    if savepoints:
        # SQLAlchemy's documented fix for SQLite: the driver's own transaction handling breaks
        # SAVEPOINT, so the rollback pattern's test commits would be real commits. Let
        # SQLAlchemy emit BEGIN itself.
        event.listen(engine.sync_engine, "connect", _no_driver_begin)
        event.listen(engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        for table, rows in SEED.items():
            await conn.execute(Base.metadata.tables[table].insert(), rows)
    return engine


# == the three fixture styles ===================================================================

#: A strategy: ``setup()`` once per suite gives a per-test fixture factory and a teardown.
Fixture = Callable[[], AbstractAsyncContextManager[Deps]]
Strategy = Callable[[], AbstractAsyncContextManager[tuple[Fixture, asyncio.Lock | None]]]


@asynccontextmanager
async def naive() -> AsyncIterator[tuple[Fixture, asyncio.Lock | None]]:
    sign, verify = hs256()

    @asynccontextmanager
    async def fixture() -> AsyncIterator[Deps]:
        engine = await seeded_engine()
        cache = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        http = app_client()
        try:
            async with AsyncSession(engine, expire_on_commit=False) as db:
                yield Deps(db, cache, http, sign, verify)
        finally:
            await http.aclose()
            await cache.aclose()
            await engine.dispose()

    yield fixture, None


@asynccontextmanager
async def rollback() -> AsyncIterator[tuple[Fixture, asyncio.Lock | None]]:
    sign, verify = hs256()
    engine = await seeded_engine(savepoints=True)
    server = fakeredis.FakeServer()
    cache = fakeredis.FakeAsyncRedis(server=server)
    http = app_client()

    @asynccontextmanager
    async def fixture() -> AsyncIterator[Deps]:
        conn: AsyncConnection = await engine.connect()
        outer = await conn.begin()
        try:
            # The test's commits become savepoints of the outer transaction.
            async with AsyncSession(
                bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
            ) as db:
                yield Deps(db, cache, http, sign, verify)
        finally:
            await outer.rollback()
            await conn.close()
            await cache.flushall()

    try:
        # One connection, one outer transaction and one flushed server: one test at a time.
        yield fixture, asyncio.Lock()
    finally:
        await http.aclose()
        await cache.aclose()
        await engine.dispose()


@asynccontextmanager
async def pooled() -> AsyncIterator[tuple[Fixture, asyncio.Lock | None]]:
    pool = MockPool(supervise=True)
    pool.register(
        sqlalchemy_service(
            "db",
            metadata=Base.metadata,
            seed=SEED,
            session_options={"expire_on_commit": False},
            pragmas={"foreign_keys": "ON"},
        )
    )
    pool.register(redis_service("cache"))
    pool.register(http_service("rates", routes={"GET /rates/{currency}": rates}, base_url=API))
    pool.register(jwt_service(secret=SECRET))

    @asynccontextmanager
    async def fixture() -> AsyncIterator[Deps]:
        async with (
            pool.acquire("db") as db,
            pool.acquire("cache") as cache,
            pool.acquire("rates") as http,
            pool.acquire("jwt") as tokens,
        ):
            yield Deps(db, cache, http, tokens.sign, tokens.verify)

    async with pool:
        yield fixture, None


STRATEGIES: dict[str, Strategy] = {"naive": naive, "rollback": rollback, "mockpool": pooled}


async def run_suite(strategy: Strategy, tests: int, *, concurrent: bool) -> float:
    """The whole suite's wall time: the strategy's one-time set-up, every test, the teardown."""
    start = time.perf_counter()
    async with strategy() as (fixture, lock):

        async def one(i: int) -> None:
            if lock is None:
                async with fixture() as deps:
                    await app_test(i, deps)
                return
            async with lock, fixture() as deps:
                await app_test(i, deps)

        if concurrent:
            await asyncio.gather(*(one(i) for i in range(tests)))
        else:
            for i in range(tests):
                await one(i)
    return time.perf_counter() - start


# == the expensive client ========================================================================


async def client_costs(rounds: int) -> dict[str, float]:
    """Median seconds: make and close a real client, one over a MockTransport, a pooled
    lease of a real client (the recipe)."""

    async def real() -> None:
        await app_client().aclose()

    async def mock_only() -> None:
        await httpx.AsyncClient(transport=httpx.MockTransport(rates)).aclose()

    async def close(client: httpx.AsyncClient) -> None:
        await client.aclose()

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="api", factory=app_client, destroy=close))

    async def lease() -> None:
        async with pool.acquire("api"):
            pass

    out: dict[str, float] = {}
    async with pool:
        for name, make in (
            ("real client", real),
            ("MockTransport client", mock_only),
            ("pooled lease", lease),
        ):
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await make()
                samples.append(time.perf_counter() - t0)
            out[name] = statistics.median(samples)
            out[name + " min"] = min(samples)
    return out


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms" if seconds >= 0.001 else f"{1e6 * seconds:.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=100, help="tests in the suite (100)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best is kept (3)")
    parser.add_argument(
        "--latency", default="0,20", help="rates API latencies to run, ms, comma-separated (0,20)"
    )
    parser.add_argument("--quick", action="store_true", help="30 tests, one round")
    args = parser.parse_args()
    tests, rounds = (30, 1) if args.quick else (args.tests, args.rounds)
    latencies = [float(ms) / 1000 for ms in args.latency.split(",")]

    costs = asyncio.run(client_costs(5 if args.quick else 30))
    print("an httpx.AsyncClient, made and closed (median / min):")
    for name in ("real client", "MockTransport client", "pooled lease"):
        print(f"    {name:>22}: {_ms(costs[name])} / {_ms(costs[name + ' min'])}")

    global LATENCY_S
    for LATENCY_S in latencies:
        print(
            f"the app suite, {tests} tests, rates API answering in {_ms(LATENCY_S) if LATENCY_S else '0'}; "
            f"wall time including one-time set-up (best of {rounds}):"
        )
        print(f"    {'':>10}{'sequential':>14}{'per test':>11}{'concurrent':>14}{'per test':>11}")
        # Rounds interleave the strategies, so that a busy spell of the machine hits all three.
        samples: dict[tuple[str, bool], list[float]] = {}
        for _ in range(rounds):
            for name, strategy in STRATEGIES.items():
                for concurrent in (False, True):
                    took = asyncio.run(run_suite(strategy, tests, concurrent=concurrent))
                    samples.setdefault((name, concurrent), []).append(took)
        results = {key: min(values) for key, values in samples.items()}
        for name in STRATEGIES:
            row = f"    {name:>10}"
            for concurrent in (False, True):
                best = results[name, concurrent]
                row += f"{best:>12.2f} s{_ms(best / tests):>11}"
            print(row)
        for concurrent in (False, True):
            mode = "concurrent" if concurrent else "sequential"
            base = results["mockpool", concurrent]
            ratios = ", ".join(f"{name} {results[name, concurrent] / base:.2f}x" for name in STRATEGIES)
            print(f"    {mode}: time relative to mockpool: {ratios}")


if __name__ == "__main__":
    main()
