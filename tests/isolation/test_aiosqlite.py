"""Dirtying battery of ``aiosqlite_service``: whatever a test does through the aiosqlite
connection, the next lease of the same instance starts from the template (issue 12), and
isolation-verify sees every visible case when the reset is weakened."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from mockpool import MockPool
from mockpool.services import aiosqlite_service
from mockpool.testing import Dirtier, check_isolation

from ._sqlite_cases import (
    ENDLESS,
    NAMES,
    SCHEMA,
    SEED,
    kept_cursors_refuse_writes,
    signal_start,
    sql_dirtiers,
)

SPEC = aiosqlite_service(schema=SCHEMA, seed=SEED)


async def _run(db: aiosqlite.Connection, sql: str) -> Sequence[Sequence[Any]]:
    return list(await db.execute_fetchall(sql))


async def _pristine(db: aiosqlite.Connection) -> None:
    assert list(await db.execute_fetchall("select name from users order by id")) == NAMES
    assert not db.in_transaction
    assert (db.row_factory, db.text_factory, db.isolation_level) == (None, str, "")


async def _fails(db: aiosqlite.Connection, sql: str, match: str) -> None:
    try:
        await db.execute(sql)
    except sqlite3.Error as exc:
        assert match in str(exc), exc
    else:
        raise AssertionError(f"{sql!r} worked")


_TRACED: list[str] = []
_LEFT_OPEN: list[aiosqlite.Cursor] = []


async def _untraced(db: aiosqlite.Connection) -> None:
    # A statement of this lease's own: other leases' callbacks may run meanwhile.
    probe = f"select '{uuid.uuid4().hex}'"
    await db.execute(probe)
    assert probe not in _TRACED, "a trace callback from an earlier lease saw this lease's SQL"


async def _commit_a_row(db: aiosqlite.Connection) -> None:
    await db.execute("insert into users (name) values ('mallory')")
    await db.commit()


async def _left_cursor(db: aiosqlite.Connection) -> None:
    cursor = await db.execute("select name from users")
    await cursor.fetchone()
    _LEFT_OPEN.append(cursor)


_KEPT: list[aiosqlite.Cursor] = []


async def _keep_cursors(db: aiosqlite.Connection) -> None:
    _KEPT.append(await db.cursor())
    _KEPT.append(await db.execute("select name from users"))


async def _kept_cursors_cannot_write(db: aiosqlite.Connection) -> None:
    """A cursor kept from an earlier lease must not write into this one's database."""
    # Those of this instance (concurrent leases run this check on any).
    await kept_cursors_refuse_writes([cursor for cursor in _KEPT if cursor._conn is db])
    await _rows_are(db, "select name from users order by id", NAMES)
    assert not db.in_transaction


async def _close_it(db: aiosqlite.Connection) -> None:
    async with db:  # code under test that closes the connection it was given
        await db.execute("select 1")
    await db.close()


async def _set(db: aiosqlite.Connection, name: str, value: object) -> None:
    setattr(db, name, value)


async def _rows_are(db: aiosqlite.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    assert list(await db.execute_fetchall(sql)) == rows


async def _counts(db: aiosqlite.Connection) -> None:
    await _rows_are(db, "select count(*) from users", [(2,)])


async def _backup_into_it(db: aiosqlite.Connection) -> None:
    # Another database's pages copied over the pooled one's (aiosqlite's backup(target)).
    async with aiosqlite.connect(":memory:") as other:
        await other.executescript("create table other (x); insert into other values (1);")
        await other.backup(db)


async def _only_users(db: aiosqlite.Connection) -> None:
    await _rows_are(db, "select name from sqlite_master where name = 'other'", [])
    await _counts(db)


async def _no_changes_yet(db: aiosqlite.Connection) -> None:
    # Concurrent leases check before they write: a new connection has counted nothing.
    assert db.total_changes == 0, db.total_changes


API_DIRTIERS = [
    Dirtier("committed rows", _commit_a_row),
    Dirtier("uncommitted rows", lambda db: db.execute("delete from users")),
    Dirtier(
        "user function",
        lambda db: db.create_function("tenant", 0, lambda: "t1"),
        gone=lambda db: _fails(db, "select tenant()", "no such function"),
    ),
    Dirtier(
        "function shadowing a built-in",
        lambda db: db.create_function("upper", 1, lambda s: "hijacked"),
        gone=lambda db: _rows_are(db, "select upper('a')", [("A",)]),
    ),
    Dirtier("trace callback", lambda db: db.set_trace_callback(_TRACED.append), gone=_untraced),
    Dirtier(
        "progress handler aborting every statement",
        lambda db: db.set_progress_handler(lambda: 1, 1),
        gone=_counts,
    ),
    Dirtier(
        "authorizer denying reads",
        lambda db: db.set_authorizer(lambda *args: sqlite3.SQLITE_DENY),
        gone=_counts,
    ),
    Dirtier("row_factory", lambda db: _set(db, "row_factory", aiosqlite.Row)),
    Dirtier("text_factory", lambda db: _set(db, "text_factory", bytes)),
    Dirtier("isolation_level", lambda db: _set(db, "isolation_level", None)),
    Dirtier(
        "attribute set on the aiosqlite connection",
        lambda db: _set(db, "tenant", "t1"),
        gone=lambda db: not hasattr(db, "tenant"),
    ),
    Dirtier("database overwritten by backup()", _backup_into_it, gone=_only_users),
    Dirtier("total_changes counted", _commit_a_row, gone=_no_changes_yet),
    Dirtier(
        "iter_chunk_size",
        lambda db: _set(db, "iter_chunk_size", 1),
        gone=lambda db: db._iter_chunk_size == 64,
    ),
    # Closing is the pool's job: close() in a test changes nothing, so there is nothing to see.
    Dirtier("closed by the code under test", _close_it, gone=_counts, visible=False),
    # No API lists a connection's open statements: no fingerprint sees a cursor left
    # mid-iteration. The rebuild leaves it on the old database, where it ends harmlessly.
    Dirtier("cursor left mid-iteration", _left_cursor, visible=False),
    # Neither: the rebuild closes them, so one used after its lease raises.
    Dirtier("cursors kept past the lease", _keep_cursors, gone=_kept_cursors_cannot_write, visible=False),
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

    async def no_op(db: aiosqlite.Connection) -> None:
        del db

    for weak in (dataclasses.replace(SPEC, reset=None), dataclasses.replace(SPEC, reset=no_op)):
        report = await check_isolation(weak, visible, pristine=_pristine, isolation_verify=True)
        assert {case.name: case.outcome for case in report.cases} == {d.name: "caught" for d in visible}


@pytest.mark.asyncio
async def test_a_schema_that_sets_pragmas_and_functions_keeps_them_in_every_lease() -> None:
    def schema(conn: sqlite3.Connection) -> None:
        conn.executescript("pragma foreign_keys = on;" + SCHEMA)
        conn.execute("create table devices (user integer not null references users (id))")
        conn.create_function("shout", 1, lambda s: s.upper() + "!")

    spec = aiosqlite_service(schema=schema, seed=SEED, max_size=1)
    checks = [
        Dirtier(
            "foreign keys off, function dropped",
            lambda db: _undo(db),
            gone=lambda db: _has_the_schema_settings(db),
        )
    ]
    await check_isolation(spec, checks, pristine=_has_the_schema_settings, isolation_verify=True, strict=True)


async def _undo(db: aiosqlite.Connection) -> None:
    await db.execute("pragma foreign_keys = off")
    await db.create_function("shout", 1, None)  # type: ignore[arg-type]  # None removes it


async def _has_the_schema_settings(db: aiosqlite.Connection) -> None:
    assert list(await db.execute_fetchall("pragma foreign_keys")) == [(1,)]
    assert list(await db.execute_fetchall("select shout(name) from users where id = 1")) == [("ALICE!",)]
    await _fails(db, "insert into devices values (99)", "FOREIGN KEY")


@pytest.mark.asyncio
async def test_a_connection_bound_to_its_thread_is_rebuilt_on_that_thread() -> None:
    """``check_same_thread=True``: only the worker thread may touch the connection, so every
    rebuild is queued to it. (aiosqlite's ``row_factory``, ``in_transaction``... properties
    touch it from the caller's thread: they fail in this mode, so no case uses them.)"""

    async def names(db: aiosqlite.Connection) -> None:
        assert list(await db.execute_fetchall("select name from users order by id")) == NAMES

    spec = aiosqlite_service(schema=SCHEMA, seed=SEED, connect_options={"check_same_thread": True})
    usable = [d for d in DIRTIERS if d.name not in {"row_factory", "text_factory", "isolation_level"}]
    report = await check_isolation(spec, usable, pristine=names, isolation_verify=True, strict=True)
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
@pytest.mark.parametrize("cancelled", [True, False], ids=["task-cancelled", "task-left-awaiting"])
async def test_a_query_left_running_is_interrupted_by_the_reset(cancelled: bool) -> None:
    """A query still running on aiosqlite's worker thread when the lease ends (cancelling the
    task that awaits it does not reach the thread): the reset, queued behind it, timed out,
    then the destroy did, and the thread ran the query for the rest of the session. The reset
    interrupts it, so the same connection serves the next lease, pristine."""
    pool = MockPool(supervise=False, default_timeout=10.0)
    pool.register(aiosqlite_service(schema=SCHEMA, seed=SEED, max_size=1, reset_timeout=5.0))
    started = threading.Event()
    async with pool:
        async with pool.acquire("aiosqlite") as db:
            await db.create_function("started", 0, signal_start(started))
            query = asyncio.ensure_future(db.execute(ENDLESS))
            assert await asyncio.to_thread(started.wait, 10)
            if cancelled:
                query.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await query
        async with pool.acquire("aiosqlite") as again:
            assert again is db  # reset, not rebuilt by a recovery
            await _pristine(again)
        if not cancelled:
            with pytest.raises(sqlite3.OperationalError, match="interrupted"):
                await query
        assert pool.stats("aiosqlite").reset_failures == 0
        pool.check_invariants()


async def _lookup_is_the_templates(db: aiosqlite.Connection) -> None:
    await _rows_are(db, "select name from lookup.colours order by name", [("blue",), ("red",)])
    await _rows_are(db, "select name from lookup.sqlite_master", [("colours",)])


@pytest.mark.asyncio
async def test_an_in_memory_database_the_schema_attached_keeps_its_rows_in_every_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pooled connection is sealed again over the template it was loaded from, where an
    attached in-memory database, loaded with ``deserialize()``, is listed with the file name
    ``x``: the template then attached a *file* ``x`` in the working directory at every reset,
    empty, and shared by every lease and instance."""
    monkeypatch.chdir(tmp_path)

    def schema(conn: sqlite3.Connection) -> None:
        conn.executescript(
            SCHEMA
            + """
            attach database ':memory:' as lookup;
            create table lookup.colours (name text);
            insert into lookup.colours values ('red'), ('blue');
            """
        )

    spec = aiosqlite_service(schema=schema, seed=SEED)
    dirtiers = [
        Dirtier(
            "table made in the attached database",
            lambda db: db.execute("create table lookup.scratch (x)"),
            gone=_lookup_is_the_templates,
        ),
        Dirtier(
            "rows deleted from the attached database",
            _delete_colours,
            gone=_lookup_is_the_templates,
        ),
    ]
    report = await check_isolation(
        spec, dirtiers, pristine=_lookup_is_the_templates, isolation_verify=True, strict=True, tasks=6
    )
    assert {case.outcome for case in report.cases} == {"reset"}
    assert os.listdir(tmp_path) == []  # no file "x"


async def _delete_colours(db: aiosqlite.Connection) -> None:
    await db.execute("delete from lookup.colours")
    await db.commit()
