"""``sql_service()``: an in-memory SQLite database per pooled instance, clean by construction.

The instance (and what tests receive) is a :class:`PooledConnection`, a ``sqlite3.Connection``
made with ``check_same_thread=False`` so any thread or event loop may use it. After the schema
and seed ran, the connection is *sealed* into a :class:`SqliteTemplate`: the database image
(``serialize()``) plus the connection settings the schema made, and from then on ``seal()``
and ``adopt()`` refuse (a test sealing its own rows would hand them to every later lease).
Each reset then rebuilds the connection from that template, under the same Python object:

- the connection itself: ``Connection.__init__`` runs again on the object (CPython 3.11+ closes
  the old database and clears what hangs on the object), so temp tables and triggers, ATTACHed
  databases, user functions, aggregates and collations, trace, progress and authorizer
  callbacks, limits, the statement cache (whose stale plans broke ``create table if not
  exists`` after a plain ``deserialize()``), open blobs and savepoints, and attributes set on
  the object all go with the old database; the cursors made on it are closed first (one kept
  past its lease ran its next statement on the new database);
- the data: ``deserialize()`` of the template image, into the new database (never under open
  statements: that crashes the interpreter), and of each database the schema attached, in
  memory (one attached from a file is copied when sealed: the file is never written);
- the settings: ``row_factory``, ``text_factory``, ``isolation_level``, every connection PRAGMA
  the schema changed, and the functions, collations, callbacks and limits the schema set
  (recorded as they were made), applied again.

:meth:`PooledConnection.fingerprint` proves the result equal to a new instance: data, pragmas,
temp schema, ``database_list``, functions, collations, limits, callbacks and attributes.
"""

from __future__ import annotations

import functools
import sqlite3
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import MockPoolError
from ..spec import ServiceSpec
from ._common import SqlStep, build_spec, check_name, run_sql_step, sql_steps

__all__ = (
    "CONNECTION_PRAGMAS",
    "PooledConnection",
    "SqlSetup",
    "SqliteTemplate",
    "connection_pragmas",
    "sql_service",
)

#: A schema or seed step: SQL text run with ``executescript``, or a callable given the connection.
SqlSetup = SqlStep

#: Connection settings a PRAGMA can change. The database's own (``user_version``,
#: ``page_size``...) travel in the image; process-wide ones (``soft_heap_limit``,
#: ``hard_heap_limit``) are left out, since no connection can take them back.
CONNECTION_PRAGMAS = (
    "analysis_limit",
    "automatic_index",
    "busy_timeout",
    "cache_size",
    "cache_spill",
    "cell_size_check",
    "checkpoint_fullfsync",
    "count_changes",
    "defer_foreign_keys",
    "empty_result_callbacks",
    "foreign_keys",
    "full_column_names",
    "fullfsync",
    "ignore_check_constraints",
    "journal_mode",
    "journal_size_limit",
    "legacy_alter_table",
    "locking_mode",
    "max_page_count",
    "mmap_size",
    "query_only",
    "read_uncommitted",
    "recursive_triggers",
    "reverse_unordered_selects",
    "secure_delete",
    "short_column_names",
    "synchronous",
    "temp_store",
    "threads",
    "trusted_schema",
    "wal_autocheckpoint",
    "writable_schema",
)

#: The ``sqlite3.Connection`` attributes a test may set, kept in the template (``autocommit``
#: exists from Python 3.12).
_SETTINGS = ("row_factory", "text_factory", "isolation_level") + (
    ("autocommit",) if hasattr(sqlite3.Connection, "autocommit") else ()
)

_LIMITS = {
    name[len("SQLITE_LIMIT_") :]: getattr(sqlite3, name)
    for name in dir(sqlite3)
    if name.startswith("SQLITE_LIMIT_")
}

#: What PooledConnection keeps in its ``__dict__`` for itself; the rest is the test's.
_INTERNAL = frozenset({"_template", "_connect", "_hooks", "_service", "_cursors", "_forget"})

#: Callbacks lifted while the connection's state is read, with the arguments that lift each.
_SUSPENDED: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    "set_authorizer": lambda args: (None,),
    "set_progress_handler": lambda args: (None, args[1]),
    "set_trace_callback": lambda args: (None,),
}


def _default_limits() -> dict[int, int]:
    conn = sqlite3.connect(":memory:")
    try:
        return {category: conn.getlimit(category) for category in _LIMITS.values()}
    finally:
        conn.close()


_DEFAULT_LIMITS = _default_limits()


@dataclass(frozen=True, slots=True)
class SqliteTemplate:
    """What a pooled connection is rebuilt from at each lease (see the module doc).

    :param image: the main database, ``serialize()`` bytes.
    :param settings: ``row_factory``, ``text_factory`` and ``isolation_level`` by name.
    :param pragmas: ``PRAGMA name = value`` statements: the connection pragmas that differ
        from a new connection's.
    :param attached: ``(name, file, image)`` per ATTACHed database: the file it was attached
        from (``""`` for one in memory) and its image, attached in memory at each rebuild
        (``None``: no page yet, attached empty).
    :param calls: the recorded ``create_function``, ``create_collation``, ``set_authorizer``,
        ``setlimit``... calls, in order, as ``(key, method, args, kwargs)``.
    """

    image: bytes
    settings: tuple[tuple[str, Any], ...] = ()
    pragmas: tuple[str, ...] = ()
    attached: tuple[tuple[str, str, bytes | None], ...] = ()
    calls: tuple[tuple[str, str, tuple[Any, ...], tuple[tuple[str, Any], ...]], ...] = ()


class _Image(bytes):
    """A database image in a fingerprint: compared as bytes, shown by size and checksum."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self):,} bytes, crc32 {zlib.crc32(self):08x}>"


class PooledConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that can be rebuilt, under the same object, from its template.

    It records the calls that attach behaviour to the connection (functions, aggregates,
    window functions, collations, authorizer, progress and trace callbacks, limits,
    extensions) so a template can replay them and a fingerprint can see them.
    """

    _template: SqliteTemplate | None = None
    #: The service whose factory sealed the template: every lease of it starts from that
    #: template, so seal() and adopt() refuse from then on.
    _service: str | None = None

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("factory", None)
        super().__init__(database, *args, **kwargs)
        # Set after the base __init__, which (run again by rebuild()) clears the __dict__.
        self._connect: tuple[Any, tuple[Any, ...], dict[str, Any]] = (database, args, kwargs)
        self._hooks: dict[str, tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]]] = {}
        # The cursors made on this database, which the rebuild closes (see _close_cursors):
        # weak references, each gone from the set when its cursor is.
        cursors: set[weakref.ref[sqlite3.Cursor]] = set()
        self._cursors = cursors
        self._forget = cursors.discard

    # -- cursors -------------------------------------------------------------------------------

    def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
        cursor = super().cursor(factory)
        self._cursors.add(weakref.ref(cursor, self._forget))
        return cursor

    # The C methods make their cursor without calling cursor(): each is recorded here.

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor = super().execute(sql, parameters)
        self._cursors.add(weakref.ref(cursor, self._forget))
        return cursor

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        cursor = super().executemany(sql, parameters)
        self._cursors.add(weakref.ref(cursor, self._forget))
        return cursor

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        cursor = super().executescript(sql_script)
        self._cursors.add(weakref.ref(cursor, self._forget))
        return cursor

    def _close_cursors(self) -> None:
        """Close the cursors still alive: the database behind this object is about to be
        another lease's, and a cursor runs its next statement on whatever database its
        connection object has then (a cursor a test kept past its lease wrote into the next
        lease's). Closed, it raises ``ProgrammingError``."""
        refs = self._cursors
        while refs:  # pop(): safe while collected cursors leave the set
            cursor = refs.pop()()
            if cursor is not None:
                cursor.close()

    # -- recorded calls ----------------------------------------------------------------------

    def _note(self, key: str, live: bool, method: str, args: tuple[Any, ...], **kwargs: Any) -> None:
        self._hooks.pop(key, None)  # a later call replays after the earlier ones
        if live:
            self._hooks[key] = (method, args, tuple(kwargs.items()))

    def create_function(
        self, name: str, narg: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        super().create_function(name, narg, func, deterministic=deterministic)
        self._note(
            f"function {name.lower()}/{narg}",
            func is not None,
            "create_function",
            (name, narg, func),
            deterministic=deterministic,
        )

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Callable[[], Any]) -> None:
        super().create_aggregate(name, n_arg, aggregate_class)
        # Functions and aggregates share one namespace in SQLite: the same key.
        self._note(
            f"function {name.lower()}/{n_arg}",
            aggregate_class is not None,
            "create_aggregate",
            (name, n_arg, aggregate_class),
        )

    def create_window_function(
        self, name: str, num_params: int, aggregate_class: Callable[[], Any] | None
    ) -> None:
        super().create_window_function(name, num_params, aggregate_class)
        self._note(
            f"function {name.lower()}/{num_params}",
            aggregate_class is not None,
            "create_window_function",
            (name, num_params, aggregate_class),
        )

    def create_collation(self, name: str, callback: Callable[[str, str], Any] | None) -> None:
        super().create_collation(name, callback)
        self._note(f"collation {name.lower()}", callback is not None, "create_collation", (name, callback))

    def set_authorizer(self, authorizer_callback: Callable[..., int] | None) -> None:
        super().set_authorizer(authorizer_callback)
        self._note("authorizer", authorizer_callback is not None, "set_authorizer", (authorizer_callback,))

    def set_progress_handler(self, progress_handler: Callable[[], int | None] | None, n: int) -> None:
        super().set_progress_handler(progress_handler, n)
        self._note(
            "progress_handler", progress_handler is not None, "set_progress_handler", (progress_handler, n)
        )

    def set_trace_callback(self, trace_callback: Callable[[str], object] | None) -> None:
        super().set_trace_callback(trace_callback)
        self._note("trace_callback", trace_callback is not None, "set_trace_callback", (trace_callback,))

    def setlimit(self, category: int, limit: int) -> int:
        old = super().setlimit(category, limit)
        self._note(f"limit {category}", True, "setlimit", (category, limit))
        return old

    if hasattr(sqlite3.Connection, "enable_load_extension"):  # absent from some Python builds

        def enable_load_extension(self, enable: bool) -> None:
            super().enable_load_extension(enable)
            self._note("load_extension enabled", bool(enable), "enable_load_extension", (True,))

        def load_extension(self, name: str, *args: Any, **kwargs: Any) -> None:
            super().load_extension(name, *args, **kwargs)
            self._note(f"extension {name}", True, "load_extension", (name, *args), **kwargs)

    # -- template ----------------------------------------------------------------------------

    def seal(self, image: bytes | None = None) -> SqliteTemplate:
        """Take this connection, as it is now, as its template (and return it): the database
        (or ``image``), its settings, the pragmas that differ from a new connection's, the
        attached databases and the recorded calls. Commits what is open.

        :raises MockPoolError: the pool's factory already sealed it (a leased connection).
        """
        self._refuse_in_pool("db.seal() would make this lease's data and settings")
        if self.in_transaction:
            self.commit()
        if image is None:
            # A database nothing was written to has no page yet, and serialize() fails on it;
            # writing the user version back unchanged writes the header page.
            (version,) = self.execute("pragma user_version").fetchone()
            self.execute(f"pragma user_version = {int(version)}")
            image = self.serialize()
        with self._probing() as cursor:
            # Every attached database is copied, whatever its file: one attached from a file
            # again at each rebuild would be shared by every lease (a test's rows reaching the
            # next); and one loaded by deserialize() is listed with the file name "x".
            attached = tuple(
                (name, file, _in_memory(_image_of(self, name))) for name, file in _attached(cursor)
            )
            pragmas = connection_pragmas(cursor)
        database, args, kwargs = self._connect
        baseline = _baseline_pragmas(database, args, tuple(sorted(kwargs.items())))
        template = SqliteTemplate(
            image=image,
            settings=tuple((name, getattr(self, name)) for name in _SETTINGS),
            pragmas=tuple(
                f"PRAGMA {name} = {value}"
                for name, value in pragmas.items()
                if value is not None and value != baseline.get(name)
            ),
            attached=attached,
            calls=tuple((key, *call) for key, call in self._hooks.items()),
        )
        self._template = template
        return template

    def adopt(self, template: SqliteTemplate) -> None:
        """Make ``template`` this connection's own and rebuild from it.

        :raises MockPoolError: the pool's factory already sealed it (a leased connection).
        """
        self._refuse_in_pool("db.adopt(template) would make that template")
        self._template = template
        self.rebuild()

    @property
    def template(self) -> SqliteTemplate:
        if self._template is None:
            raise RuntimeError(
                "this PooledConnection has no template yet: call seal() after the schema ran "
                "(sql_service does), or adopt(template)"
            )
        return self._template

    def rebuild(self, image: bytes | None = None) -> None:
        """A new connection under this object, loaded from the template (or from ``image``,
        with the template's settings). See the module doc for what goes and what comes back."""
        template = self.template
        service = self._service
        database, args, kwargs = self._connect
        # Never deserialize() under a cursor or blob still open on the database: the next use
        # of either crashes the interpreter. Re-running __init__ moves them to the old,
        # closing database first, where they end harmlessly; cursors are closed before, since
        # their next execute() would run on the new one.
        if self._cursors:
            self._close_cursors()
        self.__init__(database, *args, **kwargs)  # type: ignore[misc]  # a rebuild, on purpose
        self._template = template
        if service is not None:
            self._service = service
        self.deserialize(template.image if image is None else image)
        for name, _file, attached_image in template.attached:
            self.execute("attach database ':memory:' as ?", (name,))
            if attached_image is not None:
                self.deserialize(attached_image, name=name)
        for name, value in template.settings:
            setattr(self, name, value)
        for sql in template.pragmas:  # after deserialize(), which resets some (cache_size)
            self.execute(sql)
        extensions = False
        for _key, method, call_args, call_kwargs in template.calls:
            if method == "load_extension":
                extensions = True
                super().enable_load_extension(True)
            getattr(self, method)(*call_args, **dict(call_kwargs))
        if extensions and "load_extension enabled" not in self._hooks:
            super().enable_load_extension(False)  # as it was when the template was sealed

    def _refuse_in_pool(self, action: str) -> None:
        # Once pooled, the template is what every later lease starts from: a test that seals
        # its own state into it would hand that state to every test after it.
        service = self._service
        if service is not None:
            raise MockPoolError(
                f"service {service!r}: {action} the template every later lease starts from; "
                "the pool sealed this connection when it made it. Rows and settings every test "
                f"needs go in sql_service({service!r}, schema=..., seed=...); what a test sets up "
                "for itself needs no seal (it lasts until the lease ends)"
            )

    # -- hooks -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the template: see :meth:`rebuild`."""
        self.rebuild()

    def snapshot(self) -> dict[str, Any]:
        """The whole database as bytes (``serialize()``) and whether a transaction is open (a
        database loaded by ``deserialize`` serializes without its uncommitted changes)."""
        return {"image": self.serialize(), "in_transaction": self.in_transaction}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Rebuild with the template's settings and the snapshot's data."""
        self.rebuild(state["image"])

    def health(self) -> bool:
        return bool(self.execute("select 1").fetchone() == (1,))

    def fingerprint(self) -> dict[str, Any]:
        """Everything a test can leave on the connection, one entry per thing (so a difference
        names it): data, pragmas, temp schema, attached databases, functions, collations,
        limits, recorded callbacks, settings and attributes."""
        if _is_closed(self):
            return {"closed": True}
        prints: dict[str, Any] = {"closed": False, "in_transaction": self.in_transaction}
        prints.update((name, getattr(self, name)) for name in _SETTINGS)
        prints.update((f"limit {name}", self.getlimit(category)) for name, category in _LIMITS.items())
        prints.update((f"hook {key}", call) for key, call in self._hooks.items())
        prints.update(
            (f"attribute {key}", value) for key, value in vars(self).items() if key not in _INTERNAL
        )
        with self._probing() as cursor:
            attached = _attached(cursor)
            prints["image"] = _Image(self.serialize())
            for name, _file in attached:
                image = _image_of(self, name)
                prints[f"image {name}"] = None if image is None else _Image(image)
            prints["databases"] = attached
            prints["temp schema"] = cursor.execute(
                "select type, name, tbl_name, sql from temp.sqlite_master order by type, name"
            ).fetchall()
            prints["collations"] = cursor.execute(
                "select name from pragma_collation_list order by name"
            ).fetchall()
            prints["functions"] = _functions(cursor)
            prints.update((f"pragma {name}", value) for name, value in connection_pragmas(cursor).items())
        return prints

    # -- helpers -----------------------------------------------------------------------------

    @contextmanager
    def _probing(self) -> Iterator[sqlite3.Cursor]:
        """A plain cursor to read the connection's state with, whatever the test set on it:
        its callbacks and limits are lifted meanwhile, ``text_factory`` is ``str``."""
        suspended = [call for call in self._hooks.values() if call[0] in _SUSPENDED]
        limits = [
            (args[0], self.getlimit(args[0]))
            for method, args, _ in self._hooks.values()
            if method == "setlimit"
        ]
        text_factory = self.text_factory
        for method, args, _ in suspended:
            getattr(super(), method)(*_SUSPENDED[method](args))
        for category, _ in limits:
            super().setlimit(category, _DEFAULT_LIMITS[category])
        self.text_factory = str
        try:
            cursor = self.cursor()
            cursor.row_factory = None
            yield cursor
        finally:
            self.text_factory = text_factory
            for category, limit in limits:
                super().setlimit(category, limit)
            for method, args, _ in suspended:
                getattr(super(), method)(*args)


@functools.cache
def _baseline_pragmas(
    database: Any, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> dict[str, Any]:
    """The pragmas of a new connection made with these arguments: a template replays only the
    pragmas that differ (one that differs only because of the image is replayed for nothing)."""
    scratch = sqlite3.connect(database, *args, **dict(kwargs))
    try:
        return connection_pragmas(scratch)
    finally:
        scratch.close()


def connection_pragmas(conn: sqlite3.Connection | sqlite3.Cursor) -> dict[str, Any]:
    """The connection's pragmas (:data:`CONNECTION_PRAGMAS`) and ``case_sensitive_like``, which
    SQLite lets one set but not read (found with a LIKE)."""
    # One statement each: cheaper on a new connection (every lease's) than one SELECT of
    # table-valued pragmas, whose preparation costs twice as much.
    values: dict[str, Any] = {}
    for name in CONNECTION_PRAGMAS:
        row = conn.execute(f"pragma {name}").fetchone()  # None when compiled out
        values[name] = None if row is None else row[0]
    (insensitive,) = conn.execute("select 'a' like 'A'").fetchone()
    values["case_sensitive_like"] = 1 - int(insensitive)
    return values


def sql_service(
    name: str = "database",
    *,
    schema: SqlSetup | Sequence[SqlSetup] | None = None,
    seed: SqlSetup | Sequence[SqlSetup] | None = None,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """An in-memory SQLite database, built from ``schema`` then ``seed`` and rebuilt from that
    at every lease (see the module doc).

    :param schema: SQL (``executescript``) or a callable ``(connection) -> None``, or a
        sequence of those, run in order. Connection settings it makes (pragmas, functions, collations, ``row_factory``) are part of the
        template and come back at every lease.
    :param seed: the same, run after ``schema``: the rows every test starts with.
    :param options: other :class:`~mockpool.ServiceSpec` fields.
    """
    check_name(name, "sql_service", sql="schema")
    steps = [("schema", step) for step in sql_steps("schema", schema, name)]
    steps += [("seed", step) for step in sql_steps("seed", seed, name)]

    def factory() -> PooledConnection:
        conn = sqlite3.connect(":memory:", check_same_thread=False, factory=PooledConnection)
        try:
            for label, step in steps:
                run_sql_step(conn, step, service=name, label=label)
            conn.seal()
            conn._service = name  # from here on, seal() and adopt() refuse
            # A new instance starts the way every lease does: rebuilt from the template.
            conn.rebuild()
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
        fingerprint=PooledConnection.fingerprint,
        destroy=PooledConnection.close,
        min_size=min_size,
        max_size=max_size,
    )


def _attached(cursor: sqlite3.Cursor) -> list[tuple[str, str]]:
    rows = cursor.execute("select seq, name, file from pragma_database_list order by seq").fetchall()
    return [(name, file) for seq, name, file in rows if seq >= 2]  # 0 main, 1 temp


def _functions(cursor: sqlite3.Cursor) -> list[tuple[str, int]] | None:
    try:
        rows: list[tuple[str, int]] = cursor.execute(
            "select name, narg from pragma_function_list where builtin = 0 order by name, narg"
        ).fetchall()
    except sqlite3.OperationalError:  # an SQLite built without introspection pragmas
        return None
    return rows


def _image_of(conn: sqlite3.Connection, name: str) -> bytes | None:
    """An attached database's image (in memory or a file); None while nothing was written to
    it (SQLite cannot serialize a database without a page), which attaching ``:memory:``
    again rebuilds."""
    try:
        return conn.serialize(name=name)
    except sqlite3.OperationalError:
        return None


def _in_memory(image: bytes | None) -> bytes | None:
    """``image`` as a database in memory can load it: the header of a WAL database (a file's)
    says so in bytes 18 and 19, and ``deserialize()`` of it then fails ("unable to open
    database file"); 1 in both is the rollback journal, which is what a database in memory
    has."""
    if image is None or len(image) < 20 or (image[18], image[19]) == (1, 1):
        return image
    loadable = bytearray(image)
    loadable[18] = loadable[19] = 1
    return bytes(loadable)


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.total_changes  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return True
    return False
