"""``sql_service()``: an in-memory SQLite database per pooled instance.

The instance (and what tests receive) is a :class:`PooledConnection`, a ``sqlite3.Connection``
made with ``check_same_thread=False`` so any thread or event loop may use it. Its state right
after the schema and seed ran is kept as ``Connection.serialize()`` bytes; reset loads them
back with ``deserialize()``, which costs microseconds where rebuilding costs milliseconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..spec import ServiceSpec
from ._common import SqlStep, build_spec, run_sql_step, sql_steps

__all__ = ("PooledConnection", "SqlSetup", "sql_service")

#: A schema or seed step: SQL text run with ``executescript``, or a callable given the connection.
SqlSetup = SqlStep


class PooledConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that remembers its pristine image and connection settings."""

    pristine: bytes = b""
    _settings: tuple[Any, Any, Any] = (None, str, "")

    def reset(self) -> None:
        """Back to the pristine database: open transaction rolled back, image reloaded,
        ``row_factory``, ``text_factory`` and ``isolation_level`` as they were."""
        if self.in_transaction:
            self.rollback()
        self.deserialize(self.pristine)
        self.row_factory, self.text_factory, self.isolation_level = self._settings

    def snapshot(self) -> dict[str, Any]:
        """The whole database as bytes (``serialize()``) and whether a transaction is open (a
        database loaded by ``deserialize`` serializes without its uncommitted changes)."""
        return {"image": self.serialize(), "in_transaction": self.in_transaction}

    def restore(self, state: Mapping[str, Any]) -> None:
        if self.in_transaction:
            self.rollback()
        self.deserialize(state["image"])

    def health(self) -> bool:
        return bool(self.execute("select 1").fetchone() == (1,))


def sql_service(
    name: str = "database",
    *,
    schema: SqlSetup | Sequence[SqlSetup] | None = None,
    seed: SqlSetup | Sequence[SqlSetup] | None = None,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """An in-memory SQLite database, built from ``schema`` then ``seed`` and reset to that.

    :param schema: SQL (``executescript``) or a callable ``(connection) -> None``, or a
        sequence of those, run in order.
    :param seed: the same, run after ``schema``: the rows every test starts with.
    :param options: other :class:`~mockpool.ServiceSpec` fields.
    """
    steps = sql_steps("schema", schema, name) + sql_steps("seed", seed, name)

    def factory() -> PooledConnection:
        conn = sqlite3.connect(":memory:", check_same_thread=False, factory=PooledConnection)
        try:
            for step in steps:
                run_sql_step(conn, step)
            conn.commit()
            # A database nothing was written to has no page yet, and serialize() fails on it;
            # writing the user version back unchanged writes the header page.
            (version,) = conn.execute("pragma user_version").fetchone()
            conn.execute(f"pragma user_version = {int(version)}")
            conn.pristine = conn.serialize()
            conn._settings = (conn.row_factory, conn.text_factory, conn.isolation_level)
        except BaseException:
            conn.close()
            raise
        return conn

    return build_spec(
        name,
        options,
        factory=factory,
        reset=PooledConnection.reset,
        health_check=PooledConnection.health,
        snapshot=PooledConnection.snapshot,
        restore=PooledConnection.restore,
        destroy=PooledConnection.close,
        min_size=min_size,
        max_size=max_size,
    )
