"""``sqlalchemy_service()``: a pooled ``AsyncSession`` over an in-memory SQLite database.

``metadata.create_all`` and the seed run once, into a *template* image (on a plain ``sqlite3``
connection, through a sync engine). Each pooled instance is a :class:`SqlAlchemyDouble`: one
aiosqlite connection (:class:`~mockpool.services.aiosqlite.PooledAioConnection`) loaded from
the template, an ``AsyncEngine`` whose ``StaticPool`` always hands out that connection, and an
``AsyncSession`` bound to the engine. Tests receive the session; ``session.bind`` is its
engine.

Reset closes the session (rolling back what the test left open, emptying the identity map)
and loads the template back with ``deserialize()`` on aiosqlite's worker thread: microseconds
where ``create_all`` plus a seed costs milliseconds. Closing the session or disposing the
engine inside a test never closes the pooled connection: the engine's pool opens it again on
next use, and only the pool closes it for good.

The engine is used from whichever event loop the test runs in: aiosqlite makes a future in
the calling loop for each call, and SQLAlchemy's asyncio adaptation keeps nothing bound to a
loop unless one connection is used concurrently (its execute lock).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ServiceConfigError
from ._common import build_spec, require
from .aiosqlite import Template, open_pooled_connection, require_aiosqlite

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from ..spec import ServiceSpec
    from .aiosqlite import PooledAioConnection

__all__ = ("SqlAlchemyDouble", "sqlalchemy_service")

logger = logging.getLogger("mockpool")

#: The seed: rows by table name (``{"users": [{"name": "alice"}]}``), or a sync callable given a
#: ``sqlalchemy.orm.Session`` on the template (the seed is committed after it returns).
Seed = Mapping[str, Sequence[Mapping[str, Any]]] | Callable[["Session"], object]


class SqlAlchemyDouble:
    """One pooled database: its aiosqlite connection, an engine over it and a session."""

    def __init__(
        self,
        conn: PooledAioConnection,
        engine: AsyncEngine,
        session: AsyncSession,
        pragmas: Mapping[str, str] | None = None,
    ) -> None:
        self.conn = conn
        self.engine = engine
        self.session = session
        self.pragmas = dict(pragmas or {})
        self._session_info = dict(session.info)

    def handle(self) -> AsyncSession:
        return self.session

    async def apply_pragmas(self) -> None:
        """Set the connection's pragmas (``sqlalchemy_service(pragmas=)``): they live on the
        connection, not in the database image, so the template cannot carry them. Every later
        load of the template (reset, restore) sets them again in the same worker-thread call."""
        setup = tuple(f"PRAGMA {name} = {value}" for name, value in self.pragmas.items())
        self.conn.setup = setup
        if setup:
            raw = self.conn._conn
            await self.conn.run(lambda: [raw.execute(sql) for sql in setup])

    async def reset(self) -> None:
        """Close the session (rollback, identity map emptied), reload the template (and the
        pragmas: a test may have changed one)."""
        await self._reset_session()
        await self.conn.reset()

    async def _reset_session(self) -> None:
        session = self.session
        await session.close()
        if session.info != self._session_info:
            session.info.clear()
            session.info.update(self._session_info)

    async def snapshot(self) -> dict[str, Any]:
        """The database image, whether a transaction is open, and the session's state."""
        state = await self.conn.snapshot()
        session = self.session
        state["pragmas"] = {
            name: (await self.conn.execute_fetchall(f"PRAGMA {name}")) for name in self.pragmas
        }
        state["session"] = {
            "objects": len(session.identity_map) + len(session.new) + len(session.deleted),
            "in_transaction": session.in_transaction(),
            "info": dict(session.info),
        }
        return state

    async def restore(self, state: dict[str, Any]) -> None:
        await self._reset_session()
        await self.conn.restore(state)

    async def health(self) -> bool:
        return await self.conn.health()

    async def aclose(self) -> None:
        """Close for good: the session, the engine's pool, then the connection (its close is
        queued even if this is cancelled)."""
        done = None
        try:
            await self.session.close()
            await self.engine.dispose()
        except Exception as exc:  # a leaked lease may have left anything open
            logger.debug("closing %r: %r; closing its connection anyway", self, exc)
        finally:
            done = self.conn.shut()
        if done is not None:
            await done

    def __repr__(self) -> str:
        return f"<SqlAlchemyDouble {self.engine.url!s}>"


def sqlalchemy_service(
    name: str = "sqlalchemy",
    *,
    metadata: MetaData | None = None,
    seed: Seed | None = None,
    engine_options: Mapping[str, Any] | None = None,
    session_options: Mapping[str, Any] | None = None,
    pragmas: Mapping[str, str | int | bool] | None = None,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """Pooled ``AsyncSession`` objects over in-memory SQLite (aiosqlite), reset from a template.

    :param metadata: the tables (``Base.metadata``); ``create_all`` runs once, into the template.
    :param seed: rows by table name, or a sync callable ``(Session) -> None``; run once, after
        ``create_all``, into the template.
    :param engine_options: more keywords for ``create_async_engine`` (e.g. ``echo=True``).
    :param session_options: keywords for ``AsyncSession`` (e.g. ``expire_on_commit=False``).
    :param pragmas: SQLite pragmas of the pooled connection (``{"foreign_keys": "ON"}``), set
        when it is made and again on every reset, and part of its snapshot: what a classic
        fixture does in a ``connect`` event listener.
    :param options: other :class:`~mockpool.ServiceSpec` fields.
    :raises MissingExtraError: SQLAlchemy or aiosqlite is not installed
        (``pip install 'mockpool[sqlalchemy]'``), or aiosqlite is older than 0.22.1.
    """
    sa = require("sqlalchemy", extra="sqlalchemy", service=name)
    sa_async = require("sqlalchemy.ext.asyncio", extra="sqlalchemy", service=name)
    sa_orm = require("sqlalchemy.orm", extra="sqlalchemy", service=name)
    sa_pool = require("sqlalchemy.pool", extra="sqlalchemy", service=name)
    require_aiosqlite(extra="sqlalchemy", service=name)
    if seed is not None and not isinstance(seed, Mapping) and not callable(seed):
        raise TypeError(
            f"service {name!r}: seed= must map table names to rows or be a callable(session), "
            f"not {type(seed).__name__}"
        )
    if seed is not None and isinstance(seed, Mapping) and metadata is None:
        raise TypeError(f"service {name!r}: seed= by table name needs metadata= to find the tables")
    engine_kw = dict(engine_options or {})
    session_kw = dict(session_options or {})
    pragma_sql = _pragmas(name, pragmas or {})

    def build(raw: sqlite3.Connection) -> None:
        engine = sa.create_engine("sqlite://", creator=lambda: raw, poolclass=sa_pool.StaticPool)
        try:
            if metadata is not None:
                metadata.create_all(engine)
            if seed is not None:
                with sa_orm.Session(engine) as session:
                    if isinstance(seed, Mapping):
                        assert metadata is not None
                        for table_name, rows in seed.items():
                            if rows:
                                session.execute(sa.insert(metadata.tables[table_name]), list(rows))
                    else:
                        result = seed(session)
                        if inspect.isawaitable(result):
                            if inspect.iscoroutine(result):
                                result.close()
                            raise TypeError(
                                f"service {name!r}: the seed callable must be sync; it is given a "
                                "sqlalchemy.orm.Session on the template"
                            )
                    session.commit()
        finally:
            engine.dispose(close=False)  # the template connection is closed by Template

    template = Template(build, service=name)

    async def factory() -> SqlAlchemyDouble:
        conn = await open_pooled_connection(template.image, service=name, extra="sqlalchemy")
        try:

            async def creator() -> PooledAioConnection:
                return conn

            engine: AsyncEngine = sa_async.create_async_engine(
                "sqlite+aiosqlite://",
                async_creator=creator,
                poolclass=sa_pool.StaticPool,
                **engine_kw,
            )
            session: AsyncSession = sa_async.AsyncSession(engine, **session_kw)
            double = SqlAlchemyDouble(conn, engine, session, pragma_sql)
            await double.apply_pragmas()
        except BaseException:
            conn.shut()
            raise
        return double

    return build_spec(
        name,
        options,
        factory=factory,
        bind=SqlAlchemyDouble.handle,
        reset=SqlAlchemyDouble.reset,
        health_check=SqlAlchemyDouble.health,
        snapshot=SqlAlchemyDouble.snapshot,
        restore=SqlAlchemyDouble.restore,
        destroy=_destroy,
        min_size=min_size,
        max_size=max_size,
    )


_PRAGMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PRAGMA_VALUE = re.compile(r"-?[A-Za-z0-9_]+")


def _pragmas(service: str, pragmas: Mapping[Any, object]) -> dict[str, str]:
    """Validated pragma names and values, rendered for ``PRAGMA name = value`` (no quoting:
    only names, keywords and numbers are accepted)."""
    out = {}
    for key, value in pragmas.items():
        rendered = str(int(value)) if isinstance(value, bool | int) else value
        if not isinstance(key, str) or not _PRAGMA_NAME.fullmatch(key):
            raise ServiceConfigError("pragmas", key, "is not a pragma name", service=service)
        if not isinstance(rendered, str) or not _PRAGMA_VALUE.fullmatch(rendered):
            raise ServiceConfigError(
                "pragmas", value, f"is not a value for PRAGMA {key} (a keyword or a number)", service=service
            )
        out[key] = rendered
    return out


def _destroy(double: SqlAlchemyDouble) -> asyncio.Future[None] | None:
    """Sync, returning a task: the connection's close is queued at once and the rest runs
    even if the caller is cancelled (a coroutine left unawaited would warn)."""
    loop = asyncio._get_running_loop()
    if loop is None:
        double.conn.shut()
        return None
    # Shielded: a destroy timeout stops the wait, not the close.
    return asyncio.shield(loop.create_task(double.aclose(), name=f"mockpool: close {double!r}"))
