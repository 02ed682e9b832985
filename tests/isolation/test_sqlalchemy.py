"""Dirtying battery of ``sqlalchemy_service``: whatever a test does to its session, the engine
behind it or the connection below, the next lease of the same instance starts as a new one
(issue 12), and isolation-verify sees every visible case when the reset is weakened."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

import aiosqlite
import pytest
from sqlalchemy import JSON, CursorResult, event, func, insert, literal, select, text
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from mockpool import MockPool, MockPoolError, ServiceConfigError
from mockpool.services import sqlalchemy_service
from mockpool.testing import Dirtier, check_isolation

from ._sqlite_cases import ENDLESS, NAMES, kept_cursors_refuse_writes, signal_start, sql_dirtiers


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


SPEC = sqlalchemy_service(metadata=Base.metadata, seed={"users": [{"name": n} for (n,) in NAMES]})


def _engine(session: AsyncSession) -> AsyncEngine:
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    return engine


async def _run(session: AsyncSession, sql: str) -> Sequence[Sequence[Any]]:
    result = await session.execute(text(sql))
    if isinstance(result, CursorResult) and not result.returns_rows:
        return []
    return list(result.all())


async def _names(session: AsyncSession) -> list[tuple[str]]:
    return [(name,) for name in (await session.scalars(select(User.name).order_by(User.id))).all()]


async def _pristine(session: AsyncSession) -> None:
    assert await _names(session) == NAMES
    # SQLAlchemy's own SQL function, registered when it connected: part of the template.
    assert (await session.scalars(select(User.name).where(User.name.regexp_match("^a")))).all() == ["alice"]
    sync = session.sync_session
    assert not sync.identity_map and not sync.new
    assert (sync.autoflush, sync.expire_on_commit, dict(sync.info)) == (True, True, {})
    assert not _engine(session).echo


# -- listeners: the check asks SQLAlchemy whether the listener is still registered -------------


def _cursor_listener(*args: Any) -> None:
    del args


def _pool_listener(*args: Any) -> None:
    del args


def _skip_every_statement(*args: Any) -> bool:
    return True  # a do_execute listener returning True: SQLAlchemy skips the execution


def _flush_listener(*args: Any) -> None:
    del args


def _listens(target: Any, name: str, fn: Any, **kwargs: Any) -> None:
    event.listen(target, name, fn, **kwargs)


def _no_listener(target_of: Any, name: str, fn: Any) -> Any:
    def gone(session: AsyncSession) -> None:
        assert not event.contains(target_of(session), name, fn), f"{name} listener still registered"

    return gone


def _sync_engine(session: AsyncSession) -> Any:
    return _engine(session).sync_engine


async def _dialect_skips(session: AsyncSession) -> None:
    _listens(_sync_engine(session), "do_execute", _skip_every_statement, retval=True)


async def _statements_run(session: AsyncSession) -> None:
    assert not event.contains(_sync_engine(session), "do_execute", _skip_every_statement)
    assert (await session.execute(select(func.count()).select_from(User))).scalar() == 2


# -- the session ------------------------------------------------------------------------------


async def _commit_a_user(session: AsyncSession) -> None:
    session.add(User(name="mallory"))
    await session.commit()


async def _nested_left_open(session: AsyncSession) -> None:
    await session.begin_nested()
    await session.execute(text("delete from users"))


async def _connection_info(session: AsyncSession) -> None:
    (await session.connection()).info["tenant"] = "t1"


async def _connection_info_gone(session: AsyncSession) -> None:
    assert (await session.connection()).info == {}


async def _swap_bind(session: AsyncSession) -> None:
    other = create_async_engine("sqlite+aiosqlite://")
    session.sync_session.bind = other.sync_engine
    await other.dispose()


async def _driver(session: AsyncSession) -> aiosqlite.Connection:
    """The aiosqlite connection under the session, as code under test reaches it."""
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, aiosqlite.Connection)
    return driver


async def _raw_function(session: AsyncSession) -> None:
    await (await _driver(session)).create_function("tenant", 0, lambda: "t1")


async def _no_raw_function(session: AsyncSession) -> None:
    try:
        await session.execute(text("select tenant()"))
    except Exception as exc:  # SQLAlchemy wraps sqlite3.OperationalError
        assert "no such function" in str(exc), exc
    else:
        raise AssertionError("tenant() from an earlier lease still exists")


async def _drop_regexp(session: AsyncSession) -> None:
    await (await _driver(session)).create_function("regexp", 2, None)  # type: ignore[arg-type]  # None drops it


#: aiosqlite cursors a test kept from the connection under the session, to use later.
_KEPT: list[aiosqlite.Cursor] = []


async def _keep_driver_cursor(session: AsyncSession) -> None:
    _KEPT.append(await (await _driver(session)).cursor())


async def _kept_cursor_cannot_write(session: AsyncSession) -> None:
    """A cursor kept from an earlier lease must not write into this one's database."""
    driver = await _driver(session)
    # Those of this instance (concurrent leases run this check on any).
    await kept_cursors_refuse_writes([cursor for cursor in _KEPT if cursor._conn is driver])
    assert await _names(session) == NAMES


async def _dispose(session: AsyncSession) -> None:
    await session.close()
    await _engine(session).dispose()


def _test_pool(session: AsyncSession) -> None:
    # The test's own pool, over a database of its own: SQLAlchemy's StaticPool, the class of
    # the pooled engine's, and no listener of it.
    database: Any = sqlite3.connect(":memory:", check_same_thread=False)
    _sync_engine(session).pool = StaticPool(lambda: database)


async def _pool_is_the_instances(session: AsyncSession) -> None:
    pool = _sync_engine(session).pool
    assert isinstance(pool, StaticPool)
    # The double's own listener, which ends the connections a test leaves open.
    assert any("_note_checkout" in repr(fn) for fn in pool.dispatch.checkout.listeners)
    session.add(User(name="carol"))
    await session.flush()
    assert await _names(session) == [*NAMES, ("carol",)]
    await session.rollback()


#: Streamed results a test left unconsumed (kept alive, as a test's local would be).
_STREAMS: list[Any] = []


async def _stream_left_unconsumed(session: AsyncSession) -> None:
    result = await session.stream_scalars(select(User.name))
    await anext(result)  # one row read, the server-side cursor left open
    _STREAMS.append(result)


async def _autocommit_insert(session: AsyncSession) -> None:
    await session.rollback()  # the pristine check began a transaction
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    await session.execute(text("insert into users (name) values ('mallory')"))


async def _invalidate(session: AsyncSession) -> None:
    await (await session.connection()).invalidate()


async def _writes_work(session: AsyncSession) -> None:
    session.add(User(name="carol"))
    await session.flush()
    assert await _names(session) == [*NAMES, ("carol",)]
    await session.rollback()


def _patched_method(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a method a test patched on the session in an earlier lease")


def _set(target_of: Any, name: str, value: object) -> Any:
    return lambda session: setattr(target_of(session), name, value)


# -- the dialect: its settings, and what SQLAlchemy derives from them (compiled statements, type
# processors, quoted names), which are keyed by the same dialect object ------------------------


def _dialect(session: AsyncSession) -> Any:
    return _sync_engine(session).dialect


def _compiles(statement: Any) -> Any:
    return lambda session: bool(str(statement.compile(_sync_engine(session))))


LABEL = "Display Name"  # quoted: it has a space


async def _bracket_quotes(session: AsyncSession) -> None:
    preparer = _dialect(session).identifier_preparer
    preparer.initial_quote, preparer.final_quote = "[", "]"  # SQLite accepts both
    await session.execute(select(User.name.label(LABEL)))  # caches the name quoted that way


def _double_quotes(session: AsyncSession) -> None:
    assert f'AS "{LABEL}"' in str(select(User.name.label(LABEL)).compile(_sync_engine(session)))


def _tagging(value: Any) -> str:
    return json.dumps({"tagged": value})


async def _select_json(session: AsyncSession) -> Any:
    return (await session.execute(select(literal({"a": 1}, JSON)))).scalar_one()


async def _json_tagged(session: AsyncSession) -> None:
    _dialect(session)._json_serializer = _tagging
    # Compiled and cached with the serializer, unless an earlier lease cached it (concurrent
    # leases share instances): a warm cache outlives the lease, made with the dialect as new.
    await _select_json(session)


async def _json_tagged_for_a_while(session: AsyncSession) -> None:
    # Patched and put back within the lease: nothing differs when it ends, but what was
    # compiled and cached meanwhile was made with the test's serializer (unless an earlier
    # lease cached it: concurrent leases share instances).
    with patch.object(_dialect(session), "_json_serializer", _tagging):
        await _select_json(session)


async def _bracket_quotes_for_a_while(session: AsyncSession) -> None:
    preparer = _dialect(session).identifier_preparer
    with patch.object(preparer, "initial_quote", "["), patch.object(preparer, "final_quote", "]"):
        await session.execute(select(User.name.label(LABEL)))


async def _json_plain(session: AsyncSession) -> None:
    assert await _select_json(session) == {"a": 1}


API_DIRTIERS = [
    Dirtier("committed rows", _commit_a_user),
    Dirtier("pending objects", lambda session: session.add(User(name="pending"))),
    Dirtier("savepoint left open", _nested_left_open),
    Dirtier(
        "engine listener",
        lambda s: _listens(_sync_engine(s), "before_cursor_execute", _cursor_listener),
        gone=_no_listener(_sync_engine, "before_cursor_execute", _cursor_listener),
    ),
    Dirtier(
        "engine listener with retval, once",
        lambda s: _listens(
            _sync_engine(s), "before_cursor_execute", _skip_every_statement, retval=True, once=True
        ),
        gone=_no_listener(_sync_engine, "before_cursor_execute", _skip_every_statement),
    ),
    Dirtier(
        "pool listener through the engine",
        lambda s: _listens(_sync_engine(s), "checkout", _pool_listener),
        gone=_no_listener(_sync_engine, "checkout", _pool_listener),
    ),
    Dirtier(
        "pool listener on the pool",
        lambda s: _listens(_sync_engine(s).pool, "connect", _pool_listener),
        gone=_no_listener(lambda s: _sync_engine(s).pool, "connect", _pool_listener),
    ),
    Dirtier("dialect listener skipping every statement", _dialect_skips, gone=_statements_run),
    Dirtier(
        "session listener",
        lambda s: _listens(s.sync_session, "before_flush", _flush_listener),
        gone=_no_listener(lambda s: s.sync_session, "before_flush", _flush_listener),
    ),
    Dirtier("engine.echo", _set(_engine, "echo", True)),
    Dirtier(
        "pool echo",
        _set(lambda s: _sync_engine(s).pool, "echo", True),
        gone=lambda s: not _sync_engine(s).pool.echo,
    ),
    Dirtier(
        "engine execution options",
        lambda s: _sync_engine(s).update_execution_options(isolation_level="AUTOCOMMIT"),
        gone=lambda s: _sync_engine(s).get_execution_options() == {},
    ),
    Dirtier("session autoflush", _set(lambda s: s.sync_session, "autoflush", False)),
    Dirtier("session expire_on_commit", _set(lambda s: s.sync_session, "expire_on_commit", False)),
    Dirtier("session.info", lambda s: s.info.update(tenant="t1")),
    Dirtier("session bind swapped", _swap_bind, gone=lambda s: s.sync_session.bind is _sync_engine(s)),
    Dirtier(
        "attribute set on the session",
        _set(lambda s: s, "tenant", "t1"),
        gone=lambda s: not hasattr(s, "tenant"),
    ),
    Dirtier(
        "method patched on the session",
        _set(lambda s: s, "scalars", _patched_method),
        gone=lambda s: "scalars" not in vars(s),
    ),
    Dirtier(
        "method patched on the sync session",
        _set(lambda s: s.sync_session, "get_bind", _patched_method),
        gone=lambda s: "get_bind" not in vars(s.sync_session),
    ),
    Dirtier(
        "attribute set on the engine",
        _set(_sync_engine, "tenant", "t1"),
        gone=lambda s: not hasattr(_sync_engine(s), "tenant"),
    ),
    Dirtier("connection info", _connection_info, gone=_connection_info_gone),
    Dirtier(
        "dialect insert_returning off",
        _set(_dialect, "insert_returning", False),
        gone=_compiles(insert(User).values(name="x").returning(User.id)),
    ),
    Dirtier(
        "dialect supports_multivalues_insert off",
        _set(_dialect, "supports_multivalues_insert", False),
        gone=_compiles(insert(User).values([{"name": "x"}, {"name": "y"}])),
    ),
    Dirtier(
        "dialect default_schema_name",
        _set(_dialect, "default_schema_name", "other"),
        gone=lambda s: _dialect(s).default_schema_name == "main",
    ),
    Dirtier("dialect JSON serializer, with a statement compiled", _json_tagged, gone=_json_plain),
    Dirtier(
        "attribute set on the dialect",
        _set(_dialect, "tenant", "t1"),
        gone=lambda s: not hasattr(_dialect(s), "tenant"),
    ),
    Dirtier("identifier preparer quotes, with a name quoted", _bracket_quotes, gone=_double_quotes),
    # Put back by the test itself: only the caches built meanwhile differ, which no fingerprint
    # compares (they are warm from one lease to the next).
    Dirtier(
        "dialect JSON serializer patched within the lease",
        _json_tagged_for_a_while,
        gone=_json_plain,
        visible=False,
    ),
    Dirtier(
        "identifier preparer quotes patched within the lease",
        _bracket_quotes_for_a_while,
        gone=_double_quotes,
        visible=False,
    ),
    Dirtier("function on the raw connection", _raw_function, gone=_no_raw_function),
    Dirtier("SQLAlchemy's regexp function dropped", _drop_regexp),
    # The rebuild closes it: nothing left for a fingerprint to see.
    Dirtier(
        "cursor of the driver connection kept past the lease",
        _keep_driver_cursor,
        gone=_kept_cursor_cannot_write,
        visible=False,
    ),
    # dispose() replaces the pool with one SQLAlchemy makes from the same configuration and
    # listeners, over the same pooled connection: nothing a fingerprint could tell apart.
    Dirtier("engine disposed by the test", _dispose, visible=False),
    Dirtier("engine pool replaced by the test's own", _test_pool, gone=_pool_is_the_instances),
    # A read, in the transaction the pristine check began: nothing for a fingerprint to see.
    Dirtier("streamed result left unconsumed", _stream_left_unconsumed, visible=False),
    Dirtier("rows inserted in autocommit mode", _autocommit_insert),
    # SQLAlchemy connects again through the engine's creator: the same pooled connection.
    Dirtier("connection invalidated", _invalidate, gone=_writes_work, visible=False),
]

DIRTIERS = [*sql_dirtiers(_run), *API_DIRTIERS]


@pytest.mark.asyncio
@pytest.mark.parametrize("verify", [False, True], ids=["verify-off", "verify-on"])
async def test_every_dirtier_is_undone_by_the_reset_and_seen_by_the_fingerprint(verify: bool) -> None:
    report = await check_isolation(SPEC, DIRTIERS, pristine=_pristine, isolation_verify=verify, strict=True)
    assert {case.outcome for case in report.cases} == {"reset"}
    assert len(report.cases) == len(DIRTIERS)


@pytest.mark.asyncio
async def test_many_concurrent_leases_over_few_instances_stay_isolated() -> None:
    report = await check_isolation(
        SPEC,
        DIRTIERS,
        pristine=_pristine,
        isolation_verify=True,
        strict=True,
        tasks=len(DIRTIERS) + 8,
        instances=3,
    )
    assert report.cases[-1].outcome == "reset"


@pytest.mark.asyncio
async def test_with_the_reset_weakened_isolation_verify_catches_every_visible_dirtier() -> None:
    visible = [d for d in DIRTIERS if d.visible]

    async def no_op(double: object) -> None:
        del double

    for weak in (dataclasses.replace(SPEC, reset=None), dataclasses.replace(SPEC, reset=no_op)):
        report = await check_isolation(weak, visible, pristine=_pristine, isolation_verify=True)
        assert {case.name: case.outcome for case in report.cases} == {d.name: "caught" for d in visible}


@pytest.mark.asyncio
async def test_pragmas_come_back_after_a_test_turns_them_off() -> None:
    spec = sqlalchemy_service(
        metadata=Base.metadata, seed={"users": [{"name": "alice"}]}, pragmas={"foreign_keys": "ON"}
    )

    async def on(session: AsyncSession) -> None:
        assert (await session.execute(text("pragma foreign_keys"))).scalar() == 1

    off = Dirtier("foreign_keys off", lambda s: s.execute(text("pragma foreign_keys = off")), gone=on)
    await check_isolation(spec, [off], pristine=on, isolation_verify=True, strict=True)


class JsonBase(DeclarativeBase):
    pass


class Doc(JsonBase):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


async def _stored_json(session: AsyncSession) -> str:
    session.add(Doc(body={"a": 1}))
    await session.flush()
    stored: str = (await session.execute(text("select body from docs"))).scalar_one()
    return stored


@pytest.mark.asyncio
async def test_an_orm_flush_after_the_lease_uses_the_dialect_as_new() -> None:
    """The ORM caches the statements of a flush per mapper, for every engine, keyed by the
    dialect: those compiled with a test's JSON serializer must not be used again."""

    async def tagged(session: AsyncSession) -> None:
        _dialect(session)._json_serializer = _tagging
        assert await _stored_json(session) == '{"tagged": {"a": 1}}'

    async def plain(session: AsyncSession) -> None:
        assert await _stored_json(session) == '{"a": 1}'

    spec = sqlalchemy_service(metadata=JsonBase.metadata)
    dirtier = Dirtier("dialect JSON serializer, with a flush", tagged, gone=plain)
    await check_isolation(spec, [dirtier], isolation_verify=True, strict=True)


def test_leases_of_one_instance_from_successive_event_loops_can_each_contend_for_the_connection() -> None:
    """SQLAlchemy's execute lock on the pooled connection is bound to the first loop in which
    two calls contend for it (an ordinary gather); pytest-asyncio gives each test its own loop."""
    pool = MockPool()
    pool.register(dataclasses.replace(SPEC, max_size=1))

    async def one_test() -> tuple[AsyncSession, list[int]]:
        async with pool.acquire("sqlalchemy") as session:
            engine = _engine(session)

            async def count() -> int:
                async with engine.connect() as conn:
                    counted: int = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
                    return counted

            return session, list(await asyncio.gather(count(), count(), count()))

    try:
        first, first_counts = asyncio.run(one_test())
        second, second_counts = asyncio.run(one_test())
    finally:
        pool.close()
    assert second is first
    assert first_counts == second_counts == [2, 2, 2]


@pytest.mark.asyncio
async def test_a_connection_or_session_left_open_past_its_lease_cannot_touch_the_next() -> None:
    """The engine's one pooled connection is shared by whatever is checked out of it: a
    connection or a second session a test left open (no ``async with``) would act on the next
    lease's transaction, its ``rollback()`` undoing the next test's work. They are ended."""
    pool = MockPool(supervise=False)
    pool.register(dataclasses.replace(SPEC, max_size=1))
    async with pool:
        async with pool.acquire("sqlalchemy") as session:
            kept = await _engine(session).connect()
            await kept.execute(insert(User).values(name="mallory"))
            other = async_sessionmaker(_engine(session))()
            other.add(User(name="eve"))
            await other.flush()
        async with pool.acquire("sqlalchemy") as session:
            session.add(User(name="carol"))
            await session.flush()
            await kept.rollback()  # nothing left to undo: the next test's work stays
            assert await _names(session) == [*NAMES, ("carol",)]
            for left in (kept, other):
                # SQLAlchemy wraps it when a statement was compiled (a session's execute).
                with pytest.raises((MockPoolError, StatementError), match="during a lease that has ended"):
                    await left.execute(select(User.name))
            await other.rollback()
            await kept.close()
            await other.close()
            assert await _names(session) == [*NAMES, ("carol",)]
            await session.commit()
            assert await _names(session) == [*NAMES, ("carol",)]
        async with pool.acquire("sqlalchemy") as session:
            assert await _names(session) == NAMES


@pytest.mark.asyncio
@pytest.mark.parametrize("cancelled", [True, False], ids=["task-cancelled", "task-left-awaiting"])
async def test_a_query_left_running_is_interrupted_by_the_reset(cancelled: bool) -> None:
    """A query still running on aiosqlite's worker thread when the lease ends (cancelling the
    task that awaits it does not reach the thread): the reset's rollback and rebuild, queued
    behind it, timed out, then the destroy did. The reset interrupts it, so the same double
    serves the next lease."""
    pool = MockPool(supervise=False, default_timeout=10.0)
    pool.register(dataclasses.replace(SPEC, max_size=1, reset_timeout=5.0))
    started = threading.Event()
    async with pool:
        async with pool.acquire(SPEC.name) as session:
            raw = await (await session.connection()).get_raw_connection()
            await raw.driver_connection.create_function("started", 0, signal_start(started))
            query = asyncio.ensure_future(session.execute(text(ENDLESS)))
            assert await asyncio.to_thread(started.wait, 10)
            if cancelled:
                query.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await query
        async with pool.acquire(SPEC.name) as again:
            await _pristine(again)
        if not cancelled:
            with pytest.raises(OperationalError, match="interrupted"):
                await query
        stats = pool.stats(SPEC.name)
        assert (stats.reset_failures, stats.destroyed) == (0, 0)
        pool.check_invariants()


#: ``session_options={"info": ...}`` with nested values: a test that changes one in place
#: changed the spec's own dict, so every later lease (and every new instance) started with it.
INFO = {"tenant": {"id": 1}, "seen": []}


def _nested_info(session: AsyncSession) -> None:
    session.info["tenant"]["id"] = 2
    session.info["seen"].append("lease 1")


def _info_as_configured(session: AsyncSession) -> None:
    assert session.info == {"tenant": {"id": 1}, "seen": []}, session.info


@pytest.mark.asyncio
async def test_a_nested_value_of_the_configured_session_info_changed_in_place_is_new_again() -> None:
    spec = sqlalchemy_service(metadata=Base.metadata, session_options={"info": INFO})
    dirtier = Dirtier("nested session.info value changed in place", _nested_info, gone=_info_as_configured)
    report = await check_isolation(
        spec, [dirtier], pristine=_info_as_configured, isolation_verify=True, strict=True
    )
    assert [case.outcome for case in report.cases] == ["reset"]

    # With the reset weakened, the fingerprint sees it (it compares the values, not the dict).
    weak = dataclasses.replace(spec, reset=None)
    report = await check_isolation(weak, [dirtier], pristine=_info_as_configured, isolation_verify=True)
    assert [case.outcome for case in report.cases] == ["caught"]
    assert INFO == {"tenant": {"id": 1}, "seen": []}  # the spec's own dict is untouched


def test_session_info_that_cannot_be_copied_is_refused_when_the_spec_is_made() -> None:
    with pytest.raises(ServiceConfigError, match=r"session_options.*copy"):
        sqlalchemy_service(session_options={"info": {"lock": threading.Lock()}})
