"""``aiosqlite_service()``: a pooled ``aiosqlite.Connection`` to an in-memory database, clean
by construction.

The schema and the migrations run once, on a plain ``sqlite3`` connection, into a *template*
(a :class:`~mockpool.services.sql.SqliteTemplate`: the database image plus the connection
settings the schema made). Each pooled instance is an aiosqlite connection (a
:class:`PooledAioConnection`) whose ``sqlite3`` connection, made on aiosqlite's worker thread,
is a :class:`~mockpool.services.sql.PooledConnection`. Each reset:

- rebuilds the ``sqlite3`` connection under the same object from the template (see
  :mod:`mockpool.services.sql`: temp schema, ATTACH, pragmas, functions, callbacks, limits,
  statement cache, open cursors go; data and the template's settings come back). When no
  call is pending, the worker thread waits on its queue and the rebuild runs at once on the
  event loop's thread; else it is queued behind the pending calls;
- puts the aiosqlite ``Connection`` object's own attributes back as they were when it was
  made (a test's additions removed); its worker thread and queue are reused.

Only the pool closes a pooled connection: ``close()`` (and ``async with conn:``) inside a
test leaves it open, so code under test that closes the connection it was given does not
break the next lease. The worker thread is a daemon (as SQLAlchemy makes it), and closing the
pool closes every connection, leaked leases included, so nothing keeps the interpreter alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MockPoolError
from ._common import SqlStep, build_spec, check_name, require, run_sql_step, sql_steps
from .sql import PooledConnection, SqliteTemplate

if TYPE_CHECKING:
    from collections.abc import Coroutine, Generator

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
    """A template built once, on first use, by ``build(conn)`` on a ``sqlite3`` connection
    (a :class:`~mockpool.services.sql.PooledConnection`, so the settings it makes are kept).

    Thread-safe: pooled instances created in parallel (warming) share one build.
    """

    def __init__(self, build: Callable[[sqlite3.Connection], object], *, service: str) -> None:
        self._build = build
        self._service = service
        self._state: SqliteTemplate | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> SqliteTemplate:
        state = self._state
        if state is None:
            with self._lock:
                state = self._state
                if state is None:
                    state = self._state = self._make()
        return state

    @property
    def image(self) -> bytes:
        """The template's database image."""
        return self.state.image

    def _make(self) -> SqliteTemplate:
        conn = sqlite3.connect(":memory:", check_same_thread=False, factory=PooledConnection)
        try:
            self._build(conn)
            return conn.seal()
        finally:
            conn.close()


#: Attributes of the aiosqlite connection the pool itself manages: never put back by a reset.
_MANAGED = frozenset({"_running", "_connection", "_owned", "_pristine", "_calls", "_service"})


class _Calls:
    """Calls queued to a connection's worker thread (counted by the event loop's thread) and
    finished (counted by the worker): one writer each, so no lock."""

    __slots__ = ("done", "queued")

    def __init__(self) -> None:
        self.queued = 0
        self.done = 0

    @property
    def idle(self) -> bool:
        return self.queued == self.done


if TYPE_CHECKING:
    # For the type checker: the class made at run time by _pooled_class() subclasses this.
    class PooledAioConnection(aiosqlite.Connection):
        """An ``aiosqlite.Connection`` that only the pool closes (see the module doc)."""

        template: SqliteTemplate
        _conn: PooledConnection
        _pristine: dict[str, Any]
        _calls: _Calls
        _thread_bound: bool
        _service: str | None

        async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def seal(self, image: bytes | None = None) -> SqliteTemplate: ...
        def load_now_possible(self) -> bool: ...
        def load_now(self, image: bytes | None = None) -> bool: ...
        async def load(self, image: bytes | None = None) -> None: ...
        def interrupt_running(self) -> None: ...
        async def reset(self) -> None: ...
        def reset_soon(self) -> Coroutine[Any, Any, None] | None: ...
        async def snapshot(self) -> dict[str, Any]: ...
        async def restore(self, state: dict[str, Any]) -> None: ...
        async def fingerprint(self) -> dict[str, Any]: ...
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

        _owned = True
        _connection: PooledConnection | None  # set by aiosqlite.Connection.__init__
        _calls: _Calls
        #: Made with ``check_same_thread=True``: only the worker thread may use the connection.
        _thread_bound = False
        #: The object's attributes when it was made (and sealed): what a reset puts back.
        _pristine: dict[str, Any]

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

        async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            # aiosqlite's, counting the calls (every aiosqlite method queues through here).
            if not self._running or not self._connection:
                raise ValueError("Connection closed")
            calls = self._calls
            function = functools.partial(fn, *args, **kwargs)

            def counted() -> Any:
                try:
                    return function()
                finally:
                    calls.done += 1

            future = asyncio.get_running_loop().create_future()
            calls.queued += 1
            self._tx.put_nowait((future, counted))
            return await future

        async def seal(self, image: bytes | None = None) -> SqliteTemplate:
            """Take the connection as it is now (with ``image`` as its data, if given) as what
            every reset rebuilds, and this object's attributes as what a reset puts back.

            :raises MockPoolError: the pool's factory sealed it already (a leased connection).
            """
            service = getattr(self, "_service", None)
            if service is not None:
                # A test sealing its own rows would hand them to every later lease.
                raise MockPoolError(
                    f"service {service!r}: await db.seal() would make this lease's data and "
                    "settings the template every later lease starts from; the pool sealed this "
                    "connection when it made it. Rows and settings every test needs go in "
                    f"aiosqlite_service({service!r}, schema=..., seed=...); what a test sets up "
                    "for itself needs no seal (it lasts until the lease ends)"
                )
            template: SqliteTemplate = await self.run(self._conn.seal, image)
            self.template = template
            self._pristine = {k: v for k, v in self.__dict__.items() if k not in _MANAGED}
            return template

        def load_now_possible(self) -> bool:
            # Not once shut: the close is queued to the worker thread outside the counted
            # calls, and a rebuild here while the worker closes the same connection crashes
            # the interpreter (seen in CI: a recovery's restore against a destroy's close).
            return self._owned and bool(self._running) and not self._thread_bound and self._calls.idle

        def load_now(self, image: bytes | None = None) -> bool:
            """Rebuild the ``sqlite3`` connection from the template (with ``image`` as its data,
            if given) on this thread, and put this object's attributes back, if no call is
            queued or running: the worker thread then waits on its queue, and only this thread
            queues work, so nothing runs meanwhile. Spares a round trip to the worker. False
            (nothing done) if a call is pending or the connection is bound to its thread."""
            if not self.load_now_possible():
                return False
            self._conn.rebuild(image)
            self._put_back()
            return True

        async def load(self, image: bytes | None = None) -> None:
            """:meth:`load_now`, or the same queued behind the pending calls, the statement
            running on the worker thread interrupted first (see :meth:`interrupt_running`)."""
            if not self.load_now(image):
                self.interrupt_running()
                await self.run(self._conn.rebuild, image)
                self._put_back()

        def interrupt_running(self) -> None:
            """Interrupt the statement the worker thread is running, if any: it fails with
            ``OperationalError: interrupted``. The lease that started it has ended, and
            cancelling the task that awaited it never reaches the thread: a long query ran on,
            and the reset or close queued behind it timed out. Calls queued after it still run.
            ``sqlite3``'s ``interrupt()`` is the one method safe from another thread."""
            raw = self._connection
            if raw is not None and self._owned:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
                    raw.interrupt()

        def _put_back(self) -> None:
            attributes = self.__dict__
            for key in [k for k in attributes if k not in self._pristine and k not in _MANAGED]:
                del attributes[key]
            attributes.update(self._pristine)

        async def reset(self) -> None:
            await self.load()

        def reset_soon(self) -> Coroutine[Any, Any, None] | None:
            """The reset hook: done at once when it can be (:meth:`load_now`), else a
            coroutine to await."""
            return None if self.load_now() else self.load()

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

        async def fingerprint(self) -> dict[str, Any]:
            """The ``sqlite3`` connection's fingerprint (taken on the worker thread) and the
            attributes of this object."""
            if not self.open:
                return {"open": False}
            prints: dict[str, Any] = await self.run(self._conn.fingerprint)
            prints["open"] = True
            prints.update(
                (f"aiosqlite attribute {key}", value)
                for key, value in vars(self).items()
                if key != "_pristine"
            )
            return prints

        async def health(self) -> bool:
            if not self.open:
                return False
            return bool(await self.run(self._conn.health))

        def shut(self) -> asyncio.Future[Any] | None:
            """Close for good: queue the close on the worker thread, which then ends. Returns
            a future done when the thread has closed the connection (None if already shut).

            Sync on purpose: the close is queued even if the caller is cancelled right after,
            and a future left unawaited warns about nothing (a coroutine would)."""
            if not self._owned:
                return None  # already shut
            self.interrupt_running()  # else the close waits behind a query left running
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
    template: SqliteTemplate, *, service: str, extra: str = "aiosqlite", **connect_options: Any
) -> PooledAioConnection:
    """A new :class:`PooledAioConnection` to an in-memory database rebuilt from ``template``.

    Its worker thread is a daemon. If opening fails or is cancelled, the thread is stopped.
    The caller seals it (:meth:`PooledAioConnection.seal`) once it is set up.
    """
    aiosqlite_mod = require("aiosqlite", extra=extra, service=service)
    cls = _pooled_class(aiosqlite_mod)
    options = {"check_same_thread": False, **connect_options}

    def connector() -> PooledConnection:
        raw: PooledConnection = sqlite3.connect(":memory:", factory=PooledConnection, **options)
        raw.adopt(template)
        return raw

    conn = cls(connector, 64)
    conn._thread = threading.Thread(
        target=_worker,
        args=(conn._tx, aiosqlite_mod.core),
        name=f"mockpool[{service}] aiosqlite",
        daemon=True,
    )
    conn.template = template
    conn._pristine = {}
    conn._calls = _Calls()
    if options["check_same_thread"]:
        conn._thread_bound = True
    try:
        await conn
    except BaseException:
        conn.shut()
        raise
    return conn


def _worker(tx: Any, core: Any) -> None:
    """aiosqlite's worker loop, but a call whose event loop closed while it ran (a reset or a
    recovery cancelled at the end of a test's loop) ends quietly: aiosqlite's own loop raises
    "Event loop is closed" out of the thread, which kills it and leaves the connection
    unusable for the next loop."""
    while True:
        future, function = tx.get()
        try:
            result, setter = function(), core.set_result
        except BaseException as exc:  # handed to the caller, as aiosqlite does
            result, setter = exc, core.set_exception
        if future is not None:
            try:
                future.get_loop().call_soon_threadsafe(setter, future, result)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this result
        if result is core._STOP_RUNNING_SENTINEL:
            break


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
    check_name(name, "aiosqlite_service", sql="schema")
    require_aiosqlite(extra="aiosqlite", service=name)
    schema_steps = sql_steps("schema", schema, name)
    migration_steps = sql_steps("migrations", list(migrations), name)
    seed_steps = sql_steps("seed", seed, name)
    connect = dict(connect_options or {})

    def build(conn: sqlite3.Connection) -> None:
        for step in schema_steps:
            run_sql_step(conn, step, service=name, label="schema")
        for step in migration_steps:
            run_sql_step(conn, step, service=name, label="migrations")
        if migration_steps:
            conn.commit()
            conn.execute(f"pragma user_version = {len(migration_steps)}")
        for step in seed_steps:
            run_sql_step(conn, step, service=name, label="seed")

    template = Template(build, service=name)

    async def factory() -> PooledAioConnection:
        conn = await open_pooled_connection(template.state, service=name, **connect)
        try:
            await conn.seal(template.state.image)
        except BaseException:
            conn.shut()
            raise
        conn._service = name  # sealed: from now on seal() refuses
        return conn

    return build_spec(
        name,
        options,
        factory=factory,
        reset=_reset,
        health_check=_health,
        snapshot=_snapshot,
        restore=_restore,
        fingerprint=_fingerprint,
        destroy=_destroy,
        min_size=min_size,
        max_size=max_size,
    )


def _reset(conn: PooledAioConnection) -> Coroutine[Any, Any, None] | None:
    return conn.reset_soon()


async def _health(conn: PooledAioConnection) -> bool:
    return await conn.health()


async def _snapshot(conn: PooledAioConnection) -> dict[str, Any]:
    return await conn.snapshot()


async def _restore(conn: PooledAioConnection, state: dict[str, Any]) -> None:
    await conn.restore(state)


async def _fingerprint(conn: PooledAioConnection) -> dict[str, Any]:
    return await conn.fingerprint()


def _destroy(conn: PooledAioConnection) -> asyncio.Future[Any] | None:
    return conn.shut()
