from __future__ import annotations

import sqlite3
import threading

import pytest

from mockpool import MockPoolError
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


@pytest.mark.asyncio
async def test_settings_the_schema_made_come_back_at_every_lease() -> None:
    """Pragmas, functions, collations, ``row_factory`` and attached databases the schema set
    are part of the template: a test that changes them does not change the next lease's."""

    def schema(conn: sqlite3.Connection) -> None:
        conn.execute("pragma foreign_keys = on")
        conn.create_function("slug", 1, lambda s: s.lower().replace(" ", "-"), deterministic=True)
        conn.create_collation("nocase_rev", lambda a, b: (a.lower() < b.lower()) - (a.lower() > b.lower()))
        conn.executescript(
            """
            create table teams (id integer primary key, name text not null, slug text);
            create table members (team integer not null references teams (id));
            create trigger teams_slug after insert on teams
                begin update teams set slug = slug(new.name) where id = new.id; end;
            attach database ':memory:' as lookup;
            create table lookup.colours (name text);
            insert into lookup.colours values ('red'), ('blue');
            """
        )
        conn.row_factory = sqlite3.Row

    async with pool_of(sql_service(schema=schema, max_size=1)) as pool:
        for lease in range(2):
            async with pool.acquire("database") as db:
                assert db.row_factory is sqlite3.Row
                assert db.execute("pragma foreign_keys").fetchone()[0] == 1
                with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
                    db.execute("insert into members values (99)")
                db.execute("insert into teams (name) values ('Night Owls')")
                assert db.execute("select slug from teams").fetchone()[0] == "night-owls"
                colours = db.execute("select name from lookup.colours order by name collate nocase_rev")
                assert [row[0] for row in colours] == ["red", "blue"]
                if lease == 0:  # undo all of it; the next lease gets it back
                    db.execute("pragma foreign_keys = off")
                    db.create_function("slug", 1, None)
                    db.create_collation("nocase_rev", None)
                    db.execute("delete from lookup.colours")
                    db.commit()
                    db.execute("detach database lookup")
                    db.row_factory = None
        assert pool.stats("database").created == 1


def test_a_new_instance_starts_rebuilt_from_its_template() -> None:
    """The factory hands out the connection as every reset leaves it: counters at zero, no
    statement prepared, equal fingerprints."""
    spec = sql_service(schema=SCHEMA, seed=SEED)
    conn = spec.factory()
    try:
        assert conn.total_changes == 0
        pristine = conn.fingerprint()
        conn.execute("insert into users (name) values ('x')")
        conn.commit()
        conn.reset()
        assert conn.fingerprint() == pristine
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_an_empty_database_the_schema_attached_is_attached_empty_again() -> None:
    """SQLite cannot serialize a database nothing was written to; the template attaches it
    again, empty, and a test's tables in it are gone."""
    spec = sql_service(schema="attach database ':memory:' as scratch; create table t (x);", max_size=1)
    async with pool_of(spec) as pool:
        async with pool.acquire("database") as db:
            assert isinstance(db, PooledConnection)
            empty = db.fingerprint()
            db.execute("create table scratch.notes (x)")
            assert db.fingerprint() != empty
        async with pool.acquire("database") as db:
            assert isinstance(db, PooledConnection)
            names = [row[1] for row in db.execute("pragma database_list")]
            assert names == ["main", "scratch"]
            assert db.execute("select count(*) from scratch.sqlite_master").fetchone() == (0,)
            assert db.fingerprint() == empty


@pytest.mark.asyncio
async def test_seal_and_adopt_refuse_on_a_pooled_connection_and_say_where_shared_rows_go() -> None:
    """The pool sealed the template every lease starts from: a test that sealed its own rows
    into it, or adopted another template, would hand them to every later test."""
    async with pool_of(sql_service(schema=SCHEMA, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("database") as db:
            assert isinstance(db, PooledConnection)
            db.execute("insert into users (name) values ('mallory')")
            fix = r"sql_service\('database', schema=\.\.\., seed=\.\.\.\)"
            with pytest.raises(MockPoolError, match=rf"^service 'database': db\.seal\(\) would make .*{fix}"):
                db.seal()
            other = sql_service(schema="create table other (x)").factory()
            with pytest.raises(MockPoolError, match=rf"^service 'database': db\.adopt\(template\) .*{fix}"):
                db.adopt(other.template)
            other.close()
            assert db.execute("select count(*) from users").fetchone() == (3,)  # left as it was
        async with pool.acquire("database") as db:
            assert db.execute("select name from users order by id").fetchall() == [("alice",), ("bob",)]
            with pytest.raises(MockPoolError):
                db.seal()  # still refused after a reset
        assert pool.stats("database").isolation_failures == 0


def test_a_connection_no_pool_sealed_may_seal_and_adopt() -> None:
    """What aiosqlite_service does with its connections: seal one, adopt its template in another."""
    conn = sqlite3.connect(":memory:", factory=PooledConnection)
    copy = sqlite3.connect(":memory:", factory=PooledConnection)
    try:
        conn.executescript(SCHEMA + SEED)
        copy.adopt(conn.seal())
        assert copy.execute("select count(*) from users").fetchone() == (2,)
        copy.execute("delete from users")
        copy.seal()
        copy.rebuild()
        assert copy.execute("select count(*) from users").fetchone() == (0,)
    finally:
        conn.close()
        copy.close()


@pytest.mark.parametrize("label", ["schema", "seed"])
def test_sql_that_fails_names_the_service_the_parameter_and_the_sql(label: str) -> None:
    """sqlite's own message named neither the service nor which SQL: the first acquire raised
    ``RecoveryFailedError ... OperationalError: near "creat": syntax error``. The same error
    class comes out of the factory (code that catches sqlite3 errors still does), with both,
    and sqlite's error code."""
    good = "create table users (id integer primary key);"
    bad = "creat table orders (id integer);\n  insert into orders values (1);"
    spec = sql_service(
        "shop", **({"schema": [good, bad]} if label == "schema" else {"schema": good, "seed": bad})
    )
    with pytest.raises(sqlite3.OperationalError) as caught:
        spec.factory()
    message = str(caught.value)
    assert message.startswith(
        f"service 'shop': the SQL passed as {label}= failed: near \"creat\": syntax error"
    )
    # the start of the SQL, whitespace folded, cut at 60 characters
    assert "(in 'creat table orders (id integer); insert into orders value...')" in message
    assert caught.value.sqlite_errorname == "SQLITE_ERROR"
