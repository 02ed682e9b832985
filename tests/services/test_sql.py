from __future__ import annotations

import sqlite3
import threading

import pytest

from mockpool.services import PooledConnection, sql_service

from ._helpers import pool_of

SCHEMA = "create table users (id integer primary key, name text not null);"
SEED = "insert into users (name) values ('alice'), ('bob');"


@pytest.mark.asyncio
async def test_a_later_lease_sees_the_pristine_database() -> None:
    async with pool_of(sql_service(schema=SCHEMA, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("database") as db:
            assert isinstance(db, sqlite3.Connection)
            db.execute("insert into users (name) values ('carol')")
            db.commit()
            db.execute("delete from users where name = 'alice'")  # left uncommitted
            db.execute("create table scratch (x)")
            db.row_factory = sqlite3.Row
            first = db
        async with pool.acquire("database") as db:
            assert db is first
            assert db.row_factory is None
            assert not db.in_transaction
            assert db.execute("select name from users order by id").fetchall() == [("alice",), ("bob",)]
            tables = db.execute("select name from sqlite_master where type = 'table'").fetchall()
            assert tables == [("users",)]
        assert pool.stats("database").created == 1


@pytest.mark.asyncio
async def test_schema_and_seed_may_be_callables() -> None:
    def schema(conn: sqlite3.Connection) -> None:
        conn.execute("create table t (x integer)")

    def seed(conn: sqlite3.Connection) -> None:
        conn.executemany("insert into t values (?)", [(i,) for i in range(10)])

    async with pool_of(sql_service("numbers", schema=schema, seed=seed, max_size=1)) as pool:
        async with pool.acquire("numbers") as db:
            assert db.execute("select count(*) from t").fetchone() == (10,)
            db.execute("delete from t")
            db.commit()
        async with pool.acquire("numbers") as db:
            assert db.execute("select sum(x) from t").fetchone() == (45,)


@pytest.mark.asyncio
async def test_schema_and_seed_may_be_sequences_of_steps() -> None:
    """A schema kept as one statement per table is passed as it is: a list, run in order."""

    def more_users(conn: sqlite3.Connection) -> None:
        conn.execute("insert into users (name) values ('carol')")

    schema = [SCHEMA, "create table orders (id integer primary key, user_id integer references users)"]
    spec = sql_service(schema=schema, seed=(SEED, more_users), max_size=1)
    async with pool_of(spec) as pool, pool.acquire("database") as db:
        tables = db.execute("select name from sqlite_master where type = 'table' order by name")
        assert tables.fetchall() == [("orders",), ("users",)]
        assert db.execute("select count(*) from users").fetchone() == (3,)


def test_a_step_of_the_wrong_type_in_a_sequence_is_refused() -> None:
    with pytest.raises(
        TypeError, match=r"service 'database': seed= must be .* or a sequence of those, not int"
    ):
        sql_service(schema=[SCHEMA], seed=[SEED, 42])  # type: ignore[list-item]


def test_the_connection_works_from_another_thread() -> None:
    conn = sql_service(schema=SCHEMA, seed=SEED).factory()
    rows: list[object] = []
    worker = threading.Thread(
        target=lambda: rows.extend(conn.execute("select count(*) from users").fetchall())
    )
    worker.start()
    worker.join()
    assert rows == [(2,)]
    conn.close()


def test_hooks_snapshot_restore_health() -> None:
    conn = sql_service(schema=SCHEMA, seed=SEED).factory()
    assert isinstance(conn, PooledConnection)
    assert conn.health()
    pristine = conn.snapshot()
    conn.execute("insert into users (name) values ('x')")
    dirty = conn.snapshot()
    assert dirty != pristine and dirty["in_transaction"]
    conn.restore(pristine)
    assert conn.snapshot() == pristine
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.health()


def test_a_failing_schema_closes_the_connection_and_raises() -> None:
    spec = sql_service(schema="create table broken (")
    with pytest.raises(sqlite3.OperationalError):
        spec.factory()


def test_schema_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"service 'database': schema= must be SQL text or a callable"):
        sql_service(schema=42)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_thread_backed_wrapper_can_use_the_leased_connection() -> None:
    """Wrappers such as aiosqlite run every call on a worker thread: the pooled connection
    (made with check_same_thread=False) works there, and reset still works after."""
    import asyncio

    async with pool_of(sql_service(schema=SCHEMA, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("database") as db:

            def write() -> int:
                db.execute("insert into users (name) values ('from-thread')")
                return int(db.execute("select count(*) from users").fetchone()[0])

            assert await asyncio.to_thread(write) == 3
            assert db.execute("select count(*) from users").fetchone() == (3,)
        async with pool.acquire("database") as db:
            count = await asyncio.to_thread(lambda: db.execute("select count(*) from users").fetchone())
            assert count == (2,)
