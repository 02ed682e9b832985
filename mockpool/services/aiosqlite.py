"""``aiosqlite_service()``: a pooled ``aiosqlite.Connection`` to an in-memory database.

The schema and the migrations run once, on a plain ``sqlite3`` connection, into a *template*
image (``Connection.serialize()``). Each pooled instance is an aiosqlite connection (a
:class:`PooledAioConnection`) whose database is loaded from that template; reset rolls back
what the test left open and loads the template again with ``deserialize()``, on aiosqlite's
worker thread, where the connection lives.

Only the pool closes a pooled connection: ``close()`` (and ``async with conn:``) inside a
test leaves it open, so code under test that closes the connection it was given does not
break the next lease. The worker thread is a daemon (as SQLAlchemy makes it), and closing the
pool closes every connection, leaked leases included, so nothing keeps the interpreter alive.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._common import SqlStep, build_spec, require, run_sql_step, sql_steps

if TYPE_CHECKING:
    from collections.abc import Generator

    import aiosqlite

    from ..spec import ServiceSpec

__all__ = (
    "AIOSQLITE_MIN_VERSION",
    "PooledAioConnection",
    "Template",
    "aiosqlite_service",
    "open_pooled_connection",
    "require_aiosqlite",
)

#: The oldest aiosqlite the pooled connection works with (what the extras ask for). Before
#: 0.22 ``aiosqlite.Connection`` was itself the worker ``Thread``; the pooled class builds on
#: the ``_thread`` it has since.
AIOSQLITE_MIN_VERSION = "0.22.1"


def require_aiosqlite(*, extra: str, service: str) -> Any:
    """aiosqlite, checked when a spec is built: missing or older than
    :data:`AIOSQLITE_MIN_VERSION` raises :class:`~mockpool.services.MissingExtraError`."""
    return require(
        "aiosqlite",
        extra=extra,
        service=service,
        min_version=AIOSQLITE_MIN_VERSION,
        why="its Connection was the worker Thread before 0.22; the pooled connection needs the "
        "'_thread' it has since",
    )


class Template:
    """A database image built once, on first use, by ``build(conn)`` on a ``sqlite3`` connection.

    Thread-safe: pooled instances created in parallel (warming) share one build.
    """

    def __init__(self, build: Callable[[sqlite3.Connection], object], *, service: str) -> None:
        self._build = build
        self._service = service
        self._image: bytes | None = None
        self._lock = threading.Lock()

    @property
    def image(self) -> bytes:
        image = self._image
        if image is None:
            with self._lock:
                image = self._image
                if image is None:
                    image = self._image = self._make()
        return image

    def _make(self) -> bytes:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._build(conn)
            conn.commit()
            # A database nothing was written to has no page yet and cannot be serialized;
            # writing the user version back unchanged writes the header page.
            (version,) = conn.execute("pragma user_version").fetchone()
            conn.execute(f"pragma user_version = {int(version)}")
            return conn.serialize()
        finally:
            conn.close()


if TYPE_CHECKING:
    # For the type checker: the class made at run time by _pooled_class() subclasses this.
    class PooledAioConnection(aiosqlite.Connection):
        """An ``aiosqlite.Connection`` that only the pool closes (see the module doc)."""

        template: bytes
        setup: tuple[str, ...]
        _settings: tuple[Any, Any, Any]
        _conn: sqlite3.Connection

        async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def load(self, image: bytes) -> None: ...
        async def reset(self) -> None: ...
        async def snapshot(self) -> dict[str, Any]: ...
        async def restore(self, state: dict[str, Any]) -> None: ...
        async def health(self) -> bool: ...
        def shut(self) -> asyncio.Future[Any] | None: ...
        @property
        def open(self) -> bool: ...

else:

    def __getattr__(name: str) -> Any:
        if name == "PooledAioConnection":
            return _pooled_class(require("aiosqlite", extra="aiosqlite", service="aiosqlite"))
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _pooled_class(aiosqlite_mod: Any) -> type[PooledAioConnection]:
    """The pooled connection class, made once per aiosqlite module (imported lazily)."""
    base: Any = aiosqlite_mod.Connection

    class PooledAioConnection(base):  # type: ignore[misc]
        __doc__ = "An ``aiosqlite.Connection`` that only the pool closes (see the module doc)."

        template: bytes = b""
        #: SQL run after every load, in the same call on the worker thread (connection-level
        #: settings such as pragmas, which the image does not carry).
        setup: tuple[str, ...] = ()
        _settings: tuple[Any, Any, Any] = (None, str, "")
        _owned = True
        _connection: sqlite3.Connection | None  # set by aiosqlite.Connection.__init__

        # -- what a test may call: closing is the pool's job -----------------------------

        async def close(self) -> None:
            # A test (or SQLAlchemy's pool) closing it: the pool keeps it open. Once the pool
            # shut it, closing again has nothing left to do.
            return

        def stop(self) -> asyncio.Future[Any] | None:
            if self._owned or not self._running:
                return None  # SQLAlchemy's terminate(), a test, or already stopping
            return super().stop()  # type: ignore[no-any-return]

        def __await__(self) -> Generator[Any, None, PooledAioConnection]:
            # ``async with conn:`` awaits the connection, which starts its thread: only once.
            if not self._thread.is_alive():
                self._thread.start()
            return self._connect().__await__()  # type: ignore[no-any-return]

        def __del__(self) -> None:
            self._owned = False  # collected unclosed: let aiosqlite warn and stop the thread
            super().__del__()

        # -- the pool's side ---------------------------------------------------------------

        @property
        def open(self) -> bool:
            return self._connection is not None and bool(self._running)

        async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
            """Run ``fn(*args)`` on the connection's worker thread."""
            return await self._execute(fn, *args)

        async def load(self, image: bytes) -> None:
            """Roll back what is open and load ``image`` (``deserialize``), on the worker thread."""

            def load() -> None:
                conn = self._conn
                if conn.in_transaction:
                    conn.rollback()
                conn.deserialize(image)
                conn.row_factory, conn.text_factory, conn.isolation_level = self._settings
                for sql in self.setup:
                    conn.execute(sql)

            await self.run(load)

        async def reset(self) -> None:
            await self.load(self.template)

        async def snapshot(self) -> dict[str, Any]:
            def take() -> dict[str, Any]:
                conn = self._conn
                return {
                    "image": conn.serialize(),
                    "in_transaction": conn.in_transaction,
                    "settings": (conn.row_factory, conn.text_factory, conn.isolation_level),
                }

            return await self.run(take)  # type: ignore[no-any-return]

        async def restore(self, state: dict[str, Any]) -> None:
            await self.load(state["image"])

        async def health(self) -> bool:
            if not self.open:
                return False
            return bool(await self.run(lambda: self._conn.execute("select 1").fetchone() == (1,)))

        def shut(self) -> asyncio.Future[Any] | None:
            """Close for good: queue the close on the worker thread, which then ends. Returns
            a future done when the thread has closed the connection (None if already shut).

            Sync on purpose: the close is queued even if the caller is cancelled right after,
            and a future left unawaited warns about nothing (a coroutine would)."""
            if not self._owned:
                return None  # already shut
            self._owned = False
            if asyncio._get_running_loop() is None:
                # No loop to make a future in (aiosqlite would call get_event_loop()).
                self._running = False
                self._tx.put_nowait((None, self._close_and_stop))
                return None
            return super().stop()  # type: ignore[no-any-return]

        def _close_and_stop(self) -> object:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            return aiosqlite_mod.core._STOP_RUNNING_SENTINEL

    PooledAioConnection.__qualname__ = PooledAioConnection.__name__
    PooledAioConnection.__module__ = __name__
    return PooledAioConnection


async def open_pooled_connection(
    template: bytes, *, service: str, extra: str = "aiosqlite", **connect_options: Any
) -> PooledAioConnection:
    """A new :class:`PooledAioConnection` to an in-memory database loaded from ``template``.

    Its worker thread is a daemon. If opening fails or is cancelled, the thread is stopped.
    """
    aiosqlite_mod = require("aiosqlite", extra=extra, service=service)
    cls = _pooled_class(aiosqlite_mod)
    options = {"check_same_thread": False, **connect_options}

    def connector() -> sqlite3.Connection:
        raw: sqlite3.Connection = sqlite3.connect(":memory:", **options)
        return raw

    conn = cls(connector, 64)
    conn._thread.daemon = True
    conn._thread.name = f"mockpool[{service}] aiosqlite"
    conn.template = template
    try:
        await conn
        await conn.load(template)

        def settings() -> tuple[Any, Any, Any]:
            c = conn._conn
            return (c.row_factory, c.text_factory, c.isolation_level)

        conn._settings = await conn.run(settings)
    except BaseException:
        conn.shut()
        raise
    return conn


def aiosqlite_service(
    name: str = "aiosqlite",
    *,
    schema: SqlStep | Sequence[SqlStep] | None = None,
    migrations: Sequence[SqlStep] = (),
    seed: SqlStep | Sequence[SqlStep] | None = None,
    connect_options: dict[str, Any] | None = None,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """A pooled ``aiosqlite.Connection`` to an in-memory database built from a template.

    The template is built once (on first use) from ``schema``, then each of ``migrations`` in
    order (``pragma user_version`` is then set to the number of migrations, as a migration
    tool would record it), then ``seed``. Each step is SQL text (``executescript``) or a
    callable given a ``sqlite3.Connection``.

    :param connect_options: keywords for ``sqlite3.connect`` (``check_same_thread=False`` is
        the default, so a thread-backed wrapper may use the connection).
    :param options: other :class:`~mockpool.ServiceSpec` fields.
    :raises MissingExtraError: aiosqlite is not installed (``pip install 'mockpool[aiosqlite]'``),
        or is older than :data:`AIOSQLITE_MIN_VERSION`.
    """
    require_aiosqlite(extra="aiosqlite", service=name)
    schema_steps = sql_steps("schema", schema, name)
    migration_steps = sql_steps("migrations", list(migrations), name)
    seed_steps = sql_steps("seed", seed, name)
    connect = dict(connect_options or {})

    def build(conn: sqlite3.Connection) -> None:
        for step in schema_steps:
            run_sql_step(conn, step)
        for step in migration_steps:
            run_sql_step(conn, step)
        if migration_steps:
            conn.commit()
            conn.execute(f"pragma user_version = {len(migration_steps)}")
        for step in seed_steps:
            run_sql_step(conn, step)

    template = Template(build, service=name)

    async def factory() -> PooledAioConnection:
        return await open_pooled_connection(template.image, service=name, **connect)

    return build_spec(
        name,
        options,
        factory=factory,
        reset=_reset,
        health_check=_health,
        snapshot=_snapshot,
        restore=_restore,
        destroy=_destroy,
        min_size=min_size,
        max_size=max_size,
    )


async def _reset(conn: PooledAioConnection) -> None:
    await conn.reset()


async def _health(conn: PooledAioConnection) -> bool:
    return await conn.health()


async def _snapshot(conn: PooledAioConnection) -> dict[str, Any]:
    return await conn.snapshot()


async def _restore(conn: PooledAioConnection, state: dict[str, Any]) -> None:
    await conn.restore(state)


def _destroy(conn: PooledAioConnection) -> asyncio.Future[Any] | None:
    return conn.shut()
