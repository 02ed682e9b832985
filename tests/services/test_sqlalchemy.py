from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from sqlalchemy import ForeignKey, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mockpool import MockPool
from mockpool.services import MissingExtraError, SqlAlchemyDouble, sqlalchemy_service

from ._helpers import pool_of


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


SEED = {"users": [{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}]}


async def _names(session: AsyncSession) -> list[str]:
    return list((await session.scalars(select(User.name).order_by(User.id))).all())


@pytest.mark.asyncio
async def test_each_lease_gets_a_session_over_the_seeded_template() -> None:
    async with pool_of(sqlalchemy_service(metadata=Base.metadata, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("sqlalchemy") as session:
            assert isinstance(session, AsyncSession)
            assert isinstance(session.bind, AsyncEngine)
            assert await _names(session) == ["alice", "bob"]
            session.add(User(id=3, name="carol"))
            await session.commit()
            await session.execute(text("delete from users where id = 1"))  # left uncommitted
            session.info["tenant"] = "t1"
            first = session
        async with pool.acquire("sqlalchemy") as session:
            assert session is first
            assert not session.in_transaction()
            assert session.info == {}
            assert await _names(session) == ["alice", "bob"]
        assert pool.stats("sqlalchemy").created == 1


@pytest.mark.asyncio
async def test_closing_the_session_or_disposing_the_engine_keeps_the_pooled_connection() -> None:
    async with pool_of(sqlalchemy_service(metadata=Base.metadata, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("sqlalchemy") as session:
            engine = session.bind
            assert isinstance(engine, AsyncEngine)
            conn: Any = (await (await session.connection()).get_raw_connection()).driver_connection
            await session.close()
            await engine.dispose()
            async with engine.begin() as c:  # the engine opens "a new" connection: the same one
                await c.execute(text("insert into users (id, name) values (9, 'zed')"))
                raw = (await c.get_raw_connection()).driver_connection
            assert id(raw) == id(conn)  # the very same connection
            assert await _names(session) == ["alice", "bob", "zed"]
        async with pool.acquire("sqlalchemy") as session:
            assert await _names(session) == ["alice", "bob"]
        stats = pool.stats("sqlalchemy")
        assert (stats.created, stats.reset_failures, stats.recoveries.total()) == (1, 0, 0)
        assert conn.open


@pytest.mark.asyncio
async def test_schema_changes_and_foreign_keys_are_undone() -> None:
    async with pool_of(sqlalchemy_service(metadata=Base.metadata, seed=SEED, max_size=1)) as pool:
        async with pool.acquire("sqlalchemy") as session:
            await session.execute(text("drop table devices"))
            await session.execute(text("create table scratch (x)"))
            await session.commit()
        async with pool.acquire("sqlalchemy") as session:
            tables = await session.scalars(text("select name from sqlite_master where type = 'table'"))
            assert sorted(tables) == ["devices", "users"]
            session.add(Device(id=1, user_id=1))
            await session.commit()
            count = await session.scalar(select(func.count()).select_from(Device))
            assert count == 1


@pytest.mark.asyncio
async def test_a_callable_seed_runs_once_into_the_template() -> None:
    calls = []

    def seed(session: Session) -> None:
        calls.append(1)
        session.add(User(id=7, name="seeded"))

    spec = sqlalchemy_service(metadata=Base.metadata, seed=seed, min_size=3)
    async with pool_of(spec) as pool, pool.acquire("sqlalchemy") as a, pool.acquire("sqlalchemy") as b:
        assert await _names(a) == await _names(b) == ["seeded"]
    assert calls == [1]


def test_one_instance_serves_successive_event_loops() -> None:
    """pytest-asyncio gives each test its own loop: the pooled engine works in each."""
    spec = sqlalchemy_service(metadata=Base.metadata, seed=SEED)

    async def make() -> Any:
        return await spec.factory()

    async def use(double: SqlAlchemyDouble, name: str) -> list[str]:
        session = double.handle()
        session.add(User(name=name))
        await session.commit()
        names = await _names(session)
        await double.reset()
        return names

    double = asyncio.run(make())
    try:
        assert asyncio.run(use(double, "x")) == ["alice", "bob", "x"]
        assert asyncio.run(use(double, "y")) == ["alice", "bob", "y"]
    finally:
        asyncio.run(double.aclose())
    assert not double.conn.open


def test_options_are_checked_and_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="seed= must map table names to rows or be a callable"):
        sqlalchemy_service(metadata=Base.metadata, seed=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs metadata="):
        sqlalchemy_service(seed=SEED)
    monkeypatch.setitem(sys.modules, "sqlalchemy.ext.asyncio", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mockpool\[sqlalchemy\]'"):
        sqlalchemy_service(metadata=Base.metadata)


@pytest.mark.asyncio
async def test_pragmas_are_set_on_the_pooled_connection_and_again_at_each_reset() -> None:
    """``PRAGMA foreign_keys`` lives on the connection, not in the template: without
    ``pragmas=`` a test that turned it off left it off for the next lease."""
    spec = sqlalchemy_service(metadata=Base.metadata, seed=SEED, pragmas={"foreign_keys": "ON"}, max_size=1)
    pool = MockPool(supervise=False, isolation_verify=True)
    pool.register(spec)
    async with pool:
        async with pool.acquire("sqlalchemy") as session:
            assert (await session.execute(text("pragma foreign_keys"))).scalar() == 1
            session.add(Device(id=1, user_id=99))
            with pytest.raises(Exception, match="FOREIGN KEY"):
                await session.commit()
            await session.rollback()
            await session.execute(text("pragma foreign_keys = OFF"))
        async with pool.acquire("sqlalchemy") as session:
            assert (await session.execute(text("pragma foreign_keys"))).scalar() == 1
        assert pool.stats("sqlalchemy").isolation_failures == 0


def test_pragmas_are_checked() -> None:
    with pytest.raises(ValueError, match=r"pragmas='foreign keys' is not a pragma name"):
        sqlalchemy_service(pragmas={"foreign keys": "ON"})
    with pytest.raises(ValueError, match=r"is not a value for PRAGMA journal_mode"):
        sqlalchemy_service(pragmas={"journal_mode": "wal; drop table users"})


@pytest.mark.asyncio
async def test_the_reset_runs_at_once_unless_a_transaction_is_left_to_roll_back() -> None:
    """A session with no transaction open needs no I/O to close: the reset is done at once.
    One the test left open is rolled back through the worker thread first."""
    double = await sqlalchemy_service(metadata=Base.metadata, seed=SEED).factory()
    try:
        session = double.handle()
        session.add(User(id=3, name="carol"))
        await session.commit()
        assert double.reset_soon() is None
        await session.execute(text("delete from users"))  # left open
        pending = double.reset_soon()
        assert pending is not None
        await pending
        assert double.handle() is session
        assert await _names(session) == ["alice", "bob"]
    finally:
        await double.aclose()


@pytest.mark.asyncio
async def test_ordinary_use_keeps_the_compiled_statements_warm_from_one_lease_to_the_next() -> None:
    """The reset drops what SQLAlchemy compiled only when a test wrote an attribute of the
    dialect or its identifier preparer: queries, flushes and commits write none."""
    async with pool_of(sqlalchemy_service(metadata=Base.metadata, seed=SEED, max_size=1)) as pool:
        for user_id in (3, 4):
            async with pool.acquire("sqlalchemy") as session:
                session.add(User(id=user_id, name="carol"))
                await session.commit()
                assert await _names(session) == ["alice", "bob", "carol"]
                engine = session.bind
                assert isinstance(engine, AsyncEngine)
        cache = engine.sync_engine._compiled_cache
        assert cache is not None and len(cache) > 0
        async with pool.acquire("sqlalchemy"):
            dialect = engine.sync_engine.dialect
            dialect.insert_returning = dialect.insert_returning  # the same value, written
        assert len(cache) == 0
