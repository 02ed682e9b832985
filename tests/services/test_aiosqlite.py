from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import aiosqlite
import pytest

from mockpool import MockPoolError
from mockpool.services import MissingExtraError, aiosqlite_service, sqlalchemy_service

from ._helpers import pool_of

SCHEMA = "create table users (id integer primary key, name text not null);"
MIGRATIONS = (
    "alter table users add column email text;",
    "insert into users (name, email) values ('alice', 'a@example.com');",
)


@pytest.mark.asyncio
async def test_a_later_lease_sees_the_template_with_migrations_applied() -> None:
    async with pool_of(aiosqlite_service(schema=SCHEMA, migrations=MIGRATIONS, max_size=1)) as pool:
        async with pool.acquire("aiosqlite") as db:
            assert isinstance(db, aiosqlite.Connection)
            assert list(await db.execute_fetchall("pragma user_version")) == [(2,)]
            await db.execute("insert into users (name) values ('bob')")
            await db.commit()
            await db.execute("delete from users")  # left uncommitted
            await db.execute("create table scratch (x)")
            db.row_factory = sqlite3.Row
            first = db
        async with pool.acquire("aiosqlite") as db:
            assert db is first
            assert db.row_factory is None
            assert not db.in_transaction
            rows = await db.execute_fetchall("select name, email from users")
            assert list(rows) == [("alice", "a@example.com")]
            tables = await db.execute_fetchall("select name from sqlite_master where type = 'table'")
            assert list(tables) == [("users",)]
        assert pool.stats("aiosqlite").created == 1


@pytest.mark.asyncio
async def test_closing_the_connection_in_a_test_does_not_close_the_pooled_one() -> None:
    async with pool_of(aiosqlite_service(schema=SCHEMA, max_size=1)) as pool:
        async with pool.acquire("aiosqlite") as db:
            await db.close()
            async with db:  # code under test that manages the connection it was given
                await db.execute("insert into users (name) values ('x')")
            assert list(await db.execute_fetchall("select count(*) from users")) == [(1,)]
        async with pool.acquire("aiosqlite") as db:
            assert list(await db.execute_fetchall("select count(*) from users")) == [(0,)]
        stats = pool.stats("aiosqlite")
        assert (stats.created, stats.reset_failures, stats.recoveries.total()) == (1, 0, 0)


@pytest.mark.asyncio
async def test_closing_the_pool_closes_every_connection_and_ends_its_thread() -> None:
    seen: list[Any] = []
    spec = aiosqlite_service(schema=SCHEMA, min_size=2)
    async with pool_of(spec) as pool, pool.acquire("aiosqlite") as a, pool.acquire("aiosqlite") as b:
        seen += [a, b]
        assert all(conn._thread.daemon and conn._thread.is_alive() for conn in seen)
    for conn in seen:
        conn._thread.join(timeout=30)
        assert not conn._thread.is_alive()
        assert conn._connection is None


@pytest.mark.asyncio
async def test_the_template_is_built_once() -> None:
    builds = []

    def schema(conn: sqlite3.Connection) -> None:
        builds.append(threading.get_ident())
        conn.execute("create table t (x)")

    async with pool_of(aiosqlite_service(schema=schema, min_size=3)) as pool:
        assert pool.stats("aiosqlite").size == 3
    assert len(builds) == 1


@pytest.mark.parametrize("make", [aiosqlite_service, sqlalchemy_service], ids=["aiosqlite", "sqlalchemy"])
def test_an_aiosqlite_older_than_supported_is_refused_at_registration(
    monkeypatch: pytest.MonkeyPatch, make: Callable[..., object]
) -> None:
    """aiosqlite 0.19 (pinned by many projects) used to fail in every factory call with "no
    attribute '_thread' ... Fix the factory"; the spec now says which version is needed."""
    monkeypatch.setattr(aiosqlite, "__version__", "0.19.0")
    with pytest.raises(
        MissingExtraError, match=r"needs aiosqlite >= 0\.22\.1, and aiosqlite 0\.19\.0 is installed"
    ):
        make()
    monkeypatch.setattr(aiosqlite, "__version__", "0.22.1")
    make()


def test_bad_steps_are_refused_and_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="migrations= must be SQL text or a callable"):
        aiosqlite_service(migrations=[42])  # type: ignore[list-item]
    monkeypatch.setitem(__import__("sys").modules, "aiosqlite", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mockpool\[aiosqlite\]'"):
        aiosqlite_service()


def test_a_call_cut_short_by_the_end_of_its_loop_leaves_the_connection_usable() -> None:
    """A reset or recovery still running on the worker thread when its test's loop closes
    (pytest-asyncio closes one per test): the call ends quietly, the thread lives on, and the
    next loop can use the connection. aiosqlite's own worker raised "Event loop is closed" out
    of the thread, which then died with every later call queued behind it."""
    spec = aiosqlite_service(schema=SCHEMA)
    started, release = threading.Event(), threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(timeout=30)

    async def make() -> Any:
        return await spec.factory()

    async def cut_short(conn: Any) -> None:
        asyncio.get_running_loop().create_task(conn.run(blocked))  # cancelled when the loop ends
        await asyncio.to_thread(started.wait, 30)

    async def use(conn: Any) -> bool:
        healthy = await asyncio.wait_for(conn.health(), timeout=30)
        await conn.shut()
        return bool(healthy)

    conn = asyncio.run(make())
    asyncio.run(cut_short(conn))
    release.set()  # the worker finishes the call after its loop closed
    assert asyncio.run(use(conn))
    conn._thread.join(timeout=30)
    assert not conn._thread.is_alive()


@pytest.mark.asyncio
async def test_the_reset_runs_at_once_when_the_worker_is_idle_and_queues_behind_pending_calls() -> None:
    """An idle worker thread waits on its queue, so the reset rebuilds the connection on the
    loop's thread, sparing a round trip; a call still pending (a task the test left behind)
    runs first, then the rebuild, so its write does not reach the next lease."""
    conn = await aiosqlite_service(schema=SCHEMA).factory()
    try:
        await conn.execute("insert into users (name) values ('a')")
        assert conn.reset_soon() is None  # done at once
        assert list(await conn.execute_fetchall("select count(*) from users")) == [(0,)]

        started, release = threading.Event(), threading.Event()

        def blocked() -> None:
            started.set()
            release.wait(timeout=30)

        busy = asyncio.ensure_future(conn.run(blocked))
        left = asyncio.ensure_future(conn.execute("insert into users (name) values ('late')"))
        await asyncio.to_thread(started.wait, 30)
        pending = conn.reset_soon()
        assert pending is not None  # the worker is busy: the rebuild waits its turn
        release.set()
        await asyncio.gather(busy, left, pending)
        assert list(await conn.execute_fetchall("select count(*) from users")) == [(0,)]
    finally:
        done = conn.shut()
        if done is not None:
            await done


@pytest.mark.asyncio
async def test_a_shut_connection_is_never_rebuilt_on_the_loops_thread() -> None:
    """Its close is queued to the worker thread outside the counted calls: a rebuild on the
    loop's thread meanwhile would touch the connection the worker is closing (CI crashed so,
    a recovery's restore against a destroy's close). Loading one now refuses; queued, it fails
    cleanly."""
    conn = await aiosqlite_service(schema=SCHEMA).factory()
    assert conn.load_now_possible()
    done = conn.shut()
    assert not conn.load_now_possible()
    assert conn.load_now() is False
    with pytest.raises(ValueError, match="Connection closed"):
        await conn.load()
    if done is not None:
        await done


@pytest.mark.asyncio
async def test_seal_refuses_on_a_pooled_connection_and_says_where_shared_rows_go() -> None:
    """A test that sealed its own rows made them every later lease's template."""
    async with pool_of(aiosqlite_service(schema=SCHEMA, max_size=1)) as pool:
        async with pool.acquire("aiosqlite") as db:
            await db.execute("insert into users (name) values ('from the first test')")
            with pytest.raises(
                MockPoolError, match=r"aiosqlite_service\('aiosqlite', schema=\.\.\., seed=\.\.\.\)"
            ):
                await db.seal()
        async with pool.acquire("aiosqlite") as db:
            assert await (await db.execute("select count(*) from users")).fetchall() == [(0,)]
            with pytest.raises(MockPoolError):  # still refused after a reset
                await db.seal()
        assert pool.stats("aiosqlite").isolation_failures == 0
