"""``sqlalchemy_service()``: a pooled ``AsyncSession`` over an in-memory SQLite database, clean
by construction.

``metadata.create_all`` and the seed run once, into a *template* (on a plain ``sqlite3``
connection, through a sync engine). Each pooled instance is a :class:`SqlAlchemyDouble`: one
aiosqlite connection (:class:`~mockpool.services.aiosqlite.PooledAioConnection`) rebuilt from
the template, an ``AsyncEngine`` whose ``StaticPool`` always hands out that connection, and an
``AsyncSession`` bound to the engine. Tests receive the session; ``session.bind`` is its
engine. What a lease starts from:

- the session is rebuilt: closed (what the test left open rolled back), then constructed
  again, under the same object, with the spec's ``session_options``: a new ``Session`` with
  an empty identity map and no listeners, ``info`` (a deep copy of the configured one),
  ``autoflush``, ``expire_on_commit`` and the rest as configured;
- the ``sqlite3`` connection is rebuilt from the template (see :mod:`mockpool.services.sql`
  and :mod:`mockpool.services.aiosqlite`), with the pragmas of ``pragmas=`` and the functions
  SQLAlchemy registers when it connects (``regexp``) part of it. When the test left no
  transaction open and no call is pending, the whole reset runs at once, without a round trip
  to the worker thread;
- the engine, whose dialect was initialized once, is kept and proven equal: event listeners
  added on the engine, its pool or its dialect are removed; the engine's, the pool's, the
  dialect's and its identifier preparer's attributes (``echo``, execution options, loggers,
  ``insert_returning``, ``_json_serializer``, ``initial_quote``) and the pooled connection
  record's ``info`` are put back. When a dialect or preparer attribute had to be put back,
  or was written during the lease at all (a patch undone within the lease: see
  :func:`_watch`), what SQLAlchemy derived from it goes too: the statements compiled for the
  dialect (the engine's and the ORM's), its type processors and the preparer's quoted names. A pool
  replaced by ``engine.dispose()`` is kept: SQLAlchemy made it from the same configuration
  and listeners; one a test set itself (``engine.pool = ...``) is replaced by one made that
  way.

Connections a test checked out of the engine and left open (``engine.connect()`` without
``async with``, a second session not closed) share the one pooled connection: the reset ends
them, so one kept past its lease raises instead of acting on the next lease's transaction.

Closing the session or disposing the engine inside a test never closes the pooled
connection: the engine's pool opens it again on next use, and only the pool closes it.

The engine is used from whichever event loop the test runs in: aiosqlite makes a future in
the calling loop for each call. The one object of SQLAlchemy's asyncio adaptation bound to a
loop, the connection's execute lock (an ``asyncio.Lock``, bound to the first loop in which two
calls contend for it), is made again on every reset that finds it free.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import re
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ServiceConfigError
from ._common import build_spec, check_name, require
from .aiosqlite import Template, open_pooled_connection, require_aiosqlite

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Engine, MetaData
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
        session_options: Mapping[str, Any] | None = None,
        pragmas: Mapping[str, str] | None = None,
        *,
        service: str = "sqlalchemy",
    ) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        self.conn = conn
        self.engine = engine
        self.service = service
        #: The engine's connections checked out during the lease (SQLAlchemy's pool proxies):
        #: the reset ends those a test left open (see :meth:`_end_kept`).
        self._checked_out: weakref.WeakSet[Any] = weakref.WeakSet()
        self.session_options = dict(session_options or {})
        # Each session gets its own copy of the configured info: Session.__init__ copies the
        # dict but not its values, so a nested value a test changed in place reached every
        # later lease (and the spec's own dict).
        self._info = copy.deepcopy(self.session_options.pop("info", None)) or None
        self.pragmas = dict(pragmas or {})
        self.session = AsyncSession(engine, **self._session_kwargs())
        self._engine_state: _EngineState | None = None
        # The attributes of a session just made: a test's own are the others.
        self._session_keys = (frozenset(vars(self.session)), frozenset(vars(self.session.sync_session)))

    def handle(self) -> AsyncSession:
        return self.session

    async def seal(self) -> None:
        """Connect the engine once (SQLAlchemy initializes its dialect and registers its SQL
        functions on the connection), set ``pragmas=``, and take all of that as what every
        reset rebuilds or puts back."""
        from sqlalchemy import event

        # Before the engine state is taken: the listener is part of the pristine engine, and a
        # pool made by the test's dispose() inherits it.
        event.listen(self.engine.sync_engine.pool, "checkout", self._note_checkout)
        async with self.engine.connect():
            pass
        setup = tuple(f"PRAGMA {name} = {value}" for name, value in self.pragmas.items())
        if setup:
            raw = self.conn._conn
            await self.conn.run(lambda: [raw.execute(sql) for sql in setup])
        await self.conn.seal(self.conn.template.image)
        self._engine_state = _EngineState.take(self.engine.sync_engine)

    async def reset(self) -> None:
        """A new session, the connection rebuilt from the template, the engine put back (see
        the module doc)."""
        await self._rebuild(None)

    def reset_soon(self) -> Coroutine[Any, Any, None] | None:
        """The reset hook: done at once when nothing needs the worker thread (the session holds
        no transaction, no call is pending on the connection), else a coroutine to await."""
        if self.session.sync_session.in_transaction() or not self.conn.load_now_possible():
            return self._rebuild(None)
        self.session.sync_session.close()  # no transaction: nothing to roll back, no I/O
        self._end_kept()
        self._new_session()
        self.conn.load_now()
        return None

    async def _rebuild(self, image: bytes | None) -> None:
        # A query a cancelled task left running would hold up the rollback queued behind it.
        self.conn.interrupt_running()
        await self.session.close()  # rolls back; gives the connection back to the engine's pool
        self._end_kept()
        self._new_session()
        await self.conn.load(image)

    def _note_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        self._checked_out.add(proxy)

    def _end_kept(self) -> None:
        """End the connections a test checked out of the engine and left open
        (``engine.connect()``, ``engine.begin()``, a second session): the engine's one pooled
        connection is shared, so one kept past its lease would act on the next lease's
        transaction (its ``rollback()`` rolling back the next test's work). Each is cut from
        the pooled connection: using it raises, rolling it back or closing it does nothing."""
        checked_out = self._checked_out
        if not checked_out:
            return
        # SQLAlchemy sets a proxy's dbapi_connection to None when it is checked in.
        kept = [proxy for proxy in checked_out if proxy.dbapi_connection is not None]
        checked_out.clear()
        for proxy in kept:
            # Its clean-up when collected would act on the pool's connection record: SQLAlchemy
            # 2.1 runs it from the proxy's finalizer; 2.0 from the record's weak reference to
            # the proxy, which does nothing once the record no longer points at it.
            finalizer = getattr(proxy, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()
            elif proxy._connection_record is not None:
                proxy._connection_record.fairy_ref = None
            proxy._connection_record = None
            proxy.dbapi_connection = _EndedConnection(self.service)

    def _session_kwargs(self) -> dict[str, Any]:
        """``session_options``, with a copy of the configured ``info`` of its own."""
        if self._info is None:
            return self.session_options
        return {**self.session_options, "info": copy.deepcopy(self._info)}

    def _new_session(self) -> None:
        """The session constructed again under the same object (groups and the bind hook hold
        it), and the engine put back."""
        from sqlalchemy.ext.asyncio import AsyncSession

        session = self.session
        vars(session).clear()
        AsyncSession.__init__(session, self.engine, **self._session_kwargs())
        if self._engine_state is not None:
            self._engine_state.restore(self.engine.sync_engine)

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
        await self._rebuild(state["image"])

    async def fingerprint(self) -> dict[str, Any]:
        """The connection's fingerprint, the session's settings, state and listeners, and the
        engine's (see :class:`_EngineState`)."""
        prints = await self.conn.fingerprint()
        prints.update(_session_prints(self.session, *self._session_keys))
        prints.update(_EngineState.prints(self.engine.sync_engine))
        return prints

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


class _EndedConnection:
    """What a connection a test left open past its lease is given instead of the pooled
    connection: rolling back and closing do nothing (there is nothing left to undo), anything
    else raises."""

    __slots__ = ("_service",)

    def __init__(self, service: str) -> None:
        self._service = service

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        from ..errors import MockPoolError

        raise MockPoolError(
            f"service {self._service!r}: this connection was opened from the engine during a lease "
            "that has ended (engine.connect(), engine.begin() or a second session, left open), and "
            "the engine's one pooled connection now serves another lease; open connections inside "
            "the lease that uses them, with 'async with'"
        )


# == the engine: kept, proven equal ==========================================================

#: Engine and pool attributes a reset leaves alone: the pool (a test's ``dispose()`` replaces
#: it, from the same configuration; see :func:`_made_from`), the dispatch (listeners are compared one by one), the
#: pooled connection record (handled apart) and the pool's creator wrapper (made per pool
#: from ``_creator_arg``, which is compared).
_ENGINE_OWN = frozenset({"pool", "dispatch"})
_POOL_OWN = frozenset({"connection", "dispatch", "_invoke_creator"})
#: Dialect and preparer attributes a reset leaves alone: the dispatch (as above) and caches
#: (type processors by type, quoted identifiers), emptied when an attribute was put back.
_DIALECT_OWN = frozenset({"dispatch", "_type_memos"})
_PREPARER_OWN = frozenset({"_strings"})


def _listeners(target: Any) -> dict[str, tuple[Any, ...]]:
    """The listeners added on ``target`` itself (not on its class), by event name."""
    dispatch = target.dispatch
    found = {}
    for name in dispatch._event_names:
        listeners = tuple(getattr(dispatch, name).listeners)
        if listeners:
            found[name] = listeners
    return found


def _drop_listeners(target: Any, keep: Mapping[str, tuple[Any, ...]]) -> None:
    """Remove the listeners of ``target`` that are not in ``keep``."""
    dispatch = target.dispatch
    for name in dispatch._event_names:
        collection = getattr(dispatch, name)
        for listener in [fn for fn in collection.listeners if fn not in keep.get(name, ())]:
            _remove_listener(collection, listener)


def _remove_listener(collection: Any, listener: Any) -> None:
    """What ``event.remove()`` does for the ``listen()`` call that added ``listener``, found
    from the listener: SQLAlchemy keeps the listener (often a wrapper of the function given to
    ``listen()``) but not the function, and ``sqlalchemy.event`` has no way to list listeners.
    Removes it from every collection that call reached (the pool ``dispose()`` made, too)."""
    from sqlalchemy.event import registry

    listener_ref = weakref.ref(listener)
    key = registry._collection_to_key.get(collection.ref, {}).get(listener_ref)
    owners = dict(registry._key_to_collection.pop(key, {})) if key is not None else {}
    owners.setdefault(collection.ref, listener_ref)
    for owner_ref, fn_ref in owners.items():
        owner, fn = owner_ref(), fn_ref()
        if owner is None or fn is None:
            continue
        if fn in owner.listeners:
            owner.listeners.remove(fn)
        owner.propagate.discard(fn)
        registry._collection_to_key.get(owner_ref, {}).pop(fn_ref, None)


def _put_back(
    obj: Any, pristine: Mapping[str, Any], leave: frozenset[str], memoized: frozenset[str] = frozenset()
) -> bool:
    """``obj``'s attributes as in ``pristine``, but for those in ``leave``; whether any had
    changed, but for values memoized under the names in ``memoized`` (dropped too)."""
    attributes = vars(obj)
    changed = False
    for key in [k for k in attributes if k not in pristine and k not in leave]:
        del attributes[key]  # a test's, or a memoized value, which comes back on use
        changed = changed or key not in memoized
    for key, value in pristine.items():
        if key not in leave and attributes.get(key, _MISSING) is not value:
            attributes[key] = value
            changed = True
    return changed


def _memoized(cls: type) -> frozenset[str]:
    """The names under which ``cls`` memoizes values in its instances' ``__dict__``."""
    names = _MEMOIZED.get(cls)
    if names is None:
        from sqlalchemy.util import memoized_property

        found = (
            name
            for klass in cls.__mro__
            for name, value in vars(klass).items()
            if isinstance(value, memoized_property)
        )
        names = _MEMOIZED[cls] = frozenset(found)
    return names


_MEMOIZED: dict[type, frozenset[str]] = {}


def _renew_execute_lock(record: Any) -> None:
    """Give the record's adapted connection a new execute lock: the one it has is bound to the
    first event loop in which two calls contended for it, and would fail in the next test's
    loop. A held lock is kept (replacing it would let two calls share the connection)."""
    adapted: Any = getattr(record, "dbapi_connection", None)
    mutex = getattr(adapted, "_execute_mutex", None)
    if isinstance(mutex, asyncio.Lock) and not mutex.locked():
        adapted._execute_mutex = asyncio.Lock()


#: Dialects and identifier preparers an attribute was set on or deleted from since their
#: engine's last reset (see :func:`_watch`).
_WRITTEN: weakref.WeakSet[Any] = weakref.WeakSet()


def _watch(obj: Any) -> None:
    """Note in :data:`_WRITTEN` each attribute write to ``obj`` from now on. A setting a test
    changed and put back within its lease (``mock.patch.object(dialect, ...)``) is as it was
    when the lease ends, but what SQLAlchemy derived from it meanwhile (compiled statements,
    type processors, quoted names) is cached for the next lease; the reset drops those caches
    when a write was noted. SQLAlchemy memoizes into ``__dict__`` without ``setattr``, so
    ordinary use notes nothing and the caches stay warm."""
    obj.__class__ = _watched(type(obj))


def _watched(cls: type) -> type:
    """A subclass of ``cls`` that notes attribute writes (same name, same layout), made once."""
    if cls.__dict__.get("_mockpool_watched"):
        return cls
    watched = _WATCHED.get(cls)
    if watched is not None:
        return watched

    base: Any = cls  # its unbound methods, called with the instance

    def __setattr__(self: Any, name: str, value: Any) -> None:
        _WRITTEN.add(self)
        base.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        _WRITTEN.add(self)
        base.__delattr__(self, name)

    namespace = {
        "__slots__": (),
        "__setattr__": __setattr__,
        "__delattr__": __delattr__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "_mockpool_watched": True,
    }
    if "supports_statement_cache" in cls.__dict__:  # SQLAlchemy reads it from the class itself
        namespace["supports_statement_cache"] = cls.__dict__["supports_statement_cache"]
    watched = _WATCHED[cls] = type(cls.__name__, (cls,), namespace)
    return watched


_WATCHED: dict[type, type] = {}


def _drop_compiled(engine: Engine) -> None:
    """Forget the statements compiled for ``engine``'s dialect: the engine's compiled cache,
    and the entries for the dialect in the caches the ORM keeps per mapper (for flushes,
    shared by every engine)."""
    from sqlalchemy.orm.mapper import _all_registries

    engine.clear_compiled_cache()
    dialect = engine.dialect
    for registry in _all_registries():
        for mapper in registry.mappers:
            cache = vars(mapper).get("_compiled_cache")  # memoized: made on the first flush
            if cache:
                for key in [k for k in list(cache) if isinstance(k, tuple) and k and k[0] is dialect]:
                    cache.pop(key, None)


_MISSING = object()


@dataclass(frozen=True, slots=True)
class _EngineState:
    """A pristine engine: its attributes, its pool's, its connection record's, its dialect's
    and the dialect's identifier preparer's, and the listeners on the engine, the pool and the
    dialect. Put back on the engine's current pool and record too, when a test's
    ``dispose()`` replaced them (SQLAlchemy made the new ones from the same configuration and
    listeners)."""

    engine: dict[str, Any]
    pool: dict[str, Any]
    record: dict[str, Any]
    dialect: dict[str, Any]
    preparer: dict[str, Any]
    listeners: dict[str, dict[str, tuple[Any, ...]]]

    @classmethod
    def take(cls, engine: Engine) -> _EngineState:
        record = vars(engine.pool).get("connection")
        dialect = engine.dialect
        for obj in (dialect, dialect.identifier_preparer):
            _watch(obj)
            _WRITTEN.discard(obj)
        return cls(
            engine=dict(vars(engine)),
            pool=dict(vars(engine.pool)),
            record={k: copy.copy(v) for k, v in vars(record).items()} if record is not None else {},
            dialect=dict(vars(dialect)),
            preparer=dict(vars(dialect.identifier_preparer)),
            listeners={label: _listeners(target) for label, target in _targets(engine).items()},
        )

    def restore(self, engine: Engine) -> None:
        pristine_pool = self.engine["pool"]
        if engine.pool is not pristine_pool and not _made_from(
            engine.pool, pristine_pool, self.listeners["pool"]
        ):
            # A pool the test set (engine.pool = ...), over a connection of its own: one made
            # as dispose() makes it, from the instance's configuration and listeners.
            engine.pool = pristine_pool.recreate()
        for label, target in _targets(engine).items():
            _drop_listeners(target, self.listeners[label])
        _put_back(engine, self.engine, _ENGINE_OWN)
        _put_back(engine.pool, self.pool, _POOL_OWN)
        record = vars(engine.pool).get("connection")
        if record is not None:  # its info dicts: a test's entries go
            _put_back(record, {k: copy.copy(v) for k, v in self.record.items()}, frozenset())
            _renew_execute_lock(record)
        dialect, preparer = engine.dialect, self.dialect["identifier_preparer"]  # both as taken
        changed = _put_back(dialect, self.dialect, _DIALECT_OWN, _memoized(type(dialect)))
        changed = _put_back(preparer, self.preparer, _PREPARER_OWN, _memoized(type(preparer))) or changed
        if _WRITTEN and (dialect in _WRITTEN or preparer in _WRITTEN):  # changed, maybe put back
            _WRITTEN.discard(dialect)
            _WRITTEN.discard(preparer)
            changed = True
        if changed:
            # Made under the test's settings (a JSON bind processor, SQL quoted its way) and
            # keyed by the same dialect: they would be used again.
            _drop_compiled(engine)
            vars(dialect).pop("_type_memos", None)
            preparer._strings.clear()

    @staticmethod
    def prints(engine: Engine) -> dict[str, Any]:
        """What a test can leave on the engine, for a fingerprint: its attributes, its pool's,
        its dialect's and its identifier preparer's, its connection record's ``info``, and the
        listeners of the engine, the pool and the dialect."""
        pool = engine.pool
        record = vars(pool).get("connection")
        dialect = engine.dialect
        prints: dict[str, Any] = {
            f"engine {key}": value for key, value in vars(engine).items() if key not in _ENGINE_OWN
        }
        prints["pool class"] = type(pool)
        prints.update((f"pool {key}", value) for key, value in vars(pool).items() if key not in _POOL_OWN)
        prints["connection record"] = dict(vars(record)) if record is not None else {}
        # Memoized values are left out: derived, and dropped by every reset.
        for label, obj, own in (
            ("dialect", dialect, _DIALECT_OWN),
            ("preparer", dialect.identifier_preparer, _PREPARER_OWN),
        ):
            leave = own | _memoized(type(obj))
            prints.update((f"{label} {key}", value) for key, value in vars(obj).items() if key not in leave)
        for label, target in _targets(engine).items():
            prints[f"{label} listeners"] = _listeners(target)
        return prints


def _made_from(pool: Any, pristine: Any, listeners: Mapping[str, tuple[Any, ...]]) -> bool:
    """Whether ``pool`` was made from the ``pristine`` pool by SQLAlchemy (``dispose()``, which
    gives the new pool the listeners of the old), not by a test: the same class, with the
    listeners the pristine pool had when the instance was sealed (SQLAlchemy's own connect
    listeners, made for this engine, and the double's)."""
    if type(pool) is not type(pristine):
        return False
    dispatch = pool.dispatch
    return all(fn in getattr(dispatch, name).listeners for name, fns in listeners.items() for fn in fns)


def _added(obj: object, own: frozenset[str]) -> dict[str, Any]:
    """The attributes set on ``obj`` that it did not have when made, but for those ordinary
    use sets over a class attribute of the same name (``info`` and ``dispatch``, memoized on
    first use; a transaction's context manager): a method of the class set on the object (a
    test's patch) is reported."""
    cls = type(obj)
    return {
        k: v
        for k, v in vars(obj).items()
        if k not in own and (not hasattr(cls, k) or inspect.isfunction(inspect.getattr_static(cls, k)))
    }


def _targets(engine: Engine) -> dict[str, Any]:
    return {"engine": engine, "pool": engine.pool, "dialect": engine.dialect}


def _copied(info: dict[Any, Any]) -> dict[Any, Any]:
    """``info`` as it is now, nested values included (a fingerprint compares it later); a
    shallow copy when a value cannot be copied."""
    try:
        return copy.deepcopy(info)
    except Exception:
        return dict(info)


def _session_prints(session: AsyncSession, own: frozenset[str], sync_own: frozenset[str]) -> dict[str, Any]:
    """What a test can leave on the session, for a fingerprint; ``own`` and ``sync_own`` are
    the attributes a new ``AsyncSession`` and ``Session`` have."""
    sync = session.sync_session
    return {
        "session class": type(sync),
        "session objects": len(sync.identity_map) + len(sync.new) + len(sync.deleted),
        "session in_transaction": sync.in_transaction(),
        "session info": _copied(sync.info),
        "session bind": sync.bind,
        "session binds": dict(sync.binds),
        "session settings": {
            name: getattr(sync, name)
            for name in (
                "autoflush",
                "expire_on_commit",
                "autobegin",
                "twophase",
                "join_transaction_mode",
                "_query_cls",
            )
        },
        "session listeners": _listeners(sync),
        "session attributes": _added(sync, sync_own),
        "async session attributes": _added(session, own),
    }


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
    check_name(name, "sqlalchemy_service", metadata="metadata")
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
    if session_kw.get("info"):
        try:
            copy.deepcopy(session_kw["info"])
        except Exception as exc:
            raise ServiceConfigError(
                "session_options",
                session_kw,
                f"has an info that cannot be copied ({exc!r}); each lease's session gets a copy "
                "of it, so a test's change to a nested value stays in its lease: give values "
                "copy.deepcopy() can copy, or set them in the test",
                service=name,
            ) from exc

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
        conn = await open_pooled_connection(template.state, service=name, extra="sqlalchemy")
        try:

            async def creator() -> PooledAioConnection:
                return conn

            engine: AsyncEngine = sa_async.create_async_engine(
                "sqlite+aiosqlite://",
                async_creator=creator,
                poolclass=sa_pool.StaticPool,
                **engine_kw,
            )
            double = SqlAlchemyDouble(conn, engine, session_kw, pragma_sql, service=name)
            await double.seal()
            # A new instance starts the way every lease does: rebuilt.
            await double.reset()
        except BaseException:
            conn.shut()
            raise
        return double

    return build_spec(
        name,
        options,
        factory=factory,
        bind=SqlAlchemyDouble.handle,
        reset=SqlAlchemyDouble.reset_soon,
        health_check=SqlAlchemyDouble.health,
        snapshot=SqlAlchemyDouble.snapshot,
        restore=SqlAlchemyDouble.restore,
        fingerprint=SqlAlchemyDouble.fingerprint,
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
