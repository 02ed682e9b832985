"""What a test can do to a SQLite database with SQL alone, shared by the sql, aiosqlite and
SQLAlchemy batteries: each case is statements run in one lease and a query whose rows, in the
next lease, must be those of a new connection."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mockpool.testing import Dirtier

#: Every battery's database: this table and these rows.
SCHEMA = "create table users (id integer primary key, name text not null);"
SEED = "insert into users (name) values ('alice'), ('bob');"
NAMES = [("alice",), ("bob",)]


@dataclass(frozen=True)
class SqlCase:
    name: str
    dirty: tuple[str, ...]
    check: str
    #: The rows ``check`` must return in the next lease; None: those of a new connection.
    expect: list[tuple[Any, ...]] | None = None


def _pragma(name: str, value: str, check: str | None = None) -> SqlCase:
    return SqlCase(f"pragma {name}", (f"pragma {name} = {value}",), check or f"pragma {name}")


CASES: tuple[SqlCase, ...] = (
    _pragma("foreign_keys", "on"),
    _pragma("case_sensitive_like", "on", "select 'a' like 'A'"),
    _pragma("recursive_triggers", "on"),
    _pragma("journal_mode", "off"),
    _pragma("temp_store", "memory"),
    _pragma("cache_size", "10"),
    _pragma("synchronous", "off"),
    _pragma("busy_timeout", "1"),
    _pragma("ignore_check_constraints", "on"),
    _pragma("reverse_unordered_selects", "on"),
    _pragma("legacy_alter_table", "on"),
    _pragma("trusted_schema", "off"),
    _pragma("automatic_index", "off"),
    _pragma("cell_size_check", "on"),
    _pragma("read_uncommitted", "on"),
    _pragma("cache_spill", "off"),
    _pragma("locking_mode", "exclusive"),
    _pragma("max_page_count", "1000"),
    _pragma("threads", "2"),
    _pragma("analysis_limit", "10"),
    _pragma("user_version", "42"),
    _pragma("application_id", "7"),
    SqlCase("temp table", ("create temp table scratch (x)",), "select name from temp.sqlite_master", []),
    SqlCase(
        "temp trigger rewriting inserts",
        (
            (
                "create temp trigger hijack after insert on users "
                "begin update users set name = 'hijacked' where id = new.id; end"
            ),
        ),
        "select name from temp.sqlite_master",
        [],
    ),
    SqlCase("temp view", ("create temp view two as select 2",), "select name from temp.sqlite_master", []),
    SqlCase(
        "attached database",
        ("attach database ':memory:' as aux", "create table aux.t (x)"),
        "select name from pragma_database_list where name not in ('main', 'temp')",
        [],
    ),
    SqlCase(
        "schema change",
        ("create table scratch (x)", "create index users_by_name on users (name)"),
        "select type, name from sqlite_master order by name",
        [("table", "users")],
    ),
    SqlCase("pragma query_only", ("pragma query_only = on",), "pragma query_only"),
    # Last: its check creates the table again (the failure was that the second
    # lease could not), and a check run after it in the same lease would see it.
    SqlCase(
        "create table if not exists",
        ("create table if not exists audit (msg text)",),
        "create table if not exists audit (msg text)",
        [],
    ),
)


def _new_connection_rows(query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA + SEED)
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def expected(case: SqlCase) -> list[tuple[Any, ...]]:
    return case.expect if case.expect is not None else _new_connection_rows(case.check)


#: ``(handle, sql) -> rows``: how a fake's handle runs one statement.
Run = Callable[[Any, str], Awaitable[Sequence[Sequence[Any]]]]


def sql_dirtiers(run: Run, cases: Sequence[SqlCase] = CASES) -> list[Dirtier]:
    """One Dirtier per case, running SQL through ``run``."""
    return [_dirtier(case, run) for case in cases]


def _dirtier(case: SqlCase, run: Run) -> Dirtier:
    want = expected(case)

    async def dirty(handle: Any) -> None:
        for sql in case.dirty:
            await run(handle, sql)

    async def gone(handle: Any) -> None:
        rows = [tuple(row) for row in await run(handle, case.check)]
        assert rows == want, f"{case.check!r} returned {rows}, a new connection {want}"

    return Dirtier(case.name, dirty, gone=gone)


#: A query that runs for hours, and calls ``started()`` once when it has begun.
ENDLESS = (
    "with recursive c(x) as (select started() union all select x + 1 from c where x < 1e12) "
    "select count(*) from c"
)


def signal_start(event: threading.Event) -> Any:
    """An SQL function that sets ``event``: the query calling it has begun."""

    def started() -> int:
        event.set()
        return 1

    return started


async def kept_cursors_refuse_writes(cursors: Sequence[Any]) -> None:
    """aiosqlite cursors kept from an earlier lease (``cursors``: those of the instance under
    check) must raise, not write into this lease's database."""
    for cursor in cursors:
        try:
            await cursor.execute("insert into users (name) values ('ghost')")
        except sqlite3.ProgrammingError as exc:
            assert "closed cursor" in str(exc), exc
        else:
            raise AssertionError("a cursor kept from an earlier lease wrote into this one")
