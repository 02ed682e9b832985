"""``redis_service()``: a fakeredis server per pooled instance, an async client moved to each loop.

The pooled instance is a :class:`RedisDouble`, which holds the loop-agnostic ``FakeServer``.
Tests receive a ``fakeredis.FakeAsyncRedis`` client bound to their event loop by the spec's
``bind`` hook (an async client binds itself to the loop that first uses it), the same client
for every lease in that loop. In a new loop (pytest-asyncio gives each test one) the client
is moved rather than made again: its locks that waited in the old loop are replaced, and its
idle connections' reply queues and wake-ups are made for the new loop, keeping their
handshake (a new client and handshake cost about 1 ms a lease, the move about 0.05); a
client with a command still running in its old loop is left to it, and the new loop gets a
new one. The clients have no ``socket_timeout``: a fake socket's write never blocks, and a
write timeout costs a task per command on Python 3.11.

Clean by construction, for each kind of state a test can reach:

- data: each database is brought back to the seed in place (the clients' connections hold
  references to the databases), from copies of the seeded items taken at creation; a seeded
  string still holding the very object reset wrote is proven equal and kept;
- the server's other attributes (config and keyspace-notification settings, ACL users and
  log, scripts, functions, subscriptions, ``connected``, pause, scan cursors, ``lastsave``,
  anything a test added): every attribute is compared with a template taken at creation and
  replaced by a new copy of it when it differs; attributes the template lacks are deleted;
- connections: a command left blocked (a ``BLPOP`` in a task) is unblocked as by ``CLIENT
  UNBLOCK`` (it returns empty, never takes a later lease's push); if any connection holds
  state (``SELECT``, ``CLIENT SETNAME``, ``AUTH``, ``MULTI``/``WATCH``, subscriptions,
  ``CLIENT REPLY``, unread replies, a block), every connection is closed and the clients
  open new ones; a connection still checked out of a client's pool (a pub/sub never closed)
  is closed; sockets of connection pools a library built on the server (``server_of``)
  are closed;
- the clients tests receive: each attribute (``response_callbacks``, ``set_response_callback``,
  ``auto_close_connection_pool``, patched methods) and the connection pool's settings
  (``connection_kwargs``: ``decode_responses``, ``db``...) are compared with a template taken
  when the client was made, and replaced by new copies when they differ (the connections
  then go too, as they were made with the changed settings); HIMPORT fieldsets declared on
  the client (``himport_prepare``) are discarded from the pool's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from operator import attrgetter, is_not
from typing import TYPE_CHECKING, Any

from ._common import MissingExtraError, build_spec, installed_version, release, require

if TYPE_CHECKING:
    import fakeredis

    from ..spec import ServiceSpec

__all__ = (
    "RedisDouble",
    "client_like",
    "loop_ref",
    "redis_service",
    "server_of",
    "snapshot_server",
    "sync_redis_service",
)

#: The oldest fakeredis the reset is tested with (CI runs the redis tests on several versions
#: from this one on; what the ``redis`` extra asks for).
FAKEREDIS_MIN_VERSION = "2.39"

#: redis-py 8.2 broke the clients of fakeredis before 2.41: making one raises
#: ``AttributeError: 'method_descriptor' object has no attribute '__closure__'`` in fakeredis's
#: own setup (fakeredis 2.39.0 and 2.40.0 against redis 8.2.0; both work on redis 8.1.0).
#: ``(redis-py release, the first fakeredis that works with it)``.
_FAKEREDIS_FOR_REDIS = ((8, 2), "2.41")

#: A seed value: a string (str, bytes, int or float), a hash (a mapping), a list (list or
#: tuple) or a set.
SeedValue = str | bytes | int | float | Mapping[Any, Any] | Sequence[Any] | AbstractSet[Any]


_VALUE = attrgetter("value")
_EXPIREAT = attrgetter("expireat")


class _Seed:
    """One database's seed, laid out for the reset: string keys apart (checked by identity in
    C-level passes), the other values (rewritten at every reset), and every item by key."""

    __slots__ = ("items", "keys", "order", "others", "string_expiry", "string_values", "strings")

    def __init__(self, pristine: Sequence[tuple[bytes, Any, float | None, type]]) -> None:
        self.items = {key: (value, expireat, item_cls) for key, value, expireat, item_cls in pristine}
        self.keys = frozenset(self.items)
        #: The keys in the order a new server holds them (KEYS and SCAN list them so).
        self.order = tuple(self.items)
        strings = [entry for entry in pristine if type(entry[1]) is bytes]
        self.strings = tuple(key for key, _, _, _ in strings)
        self.string_values = tuple(value for _, value, _, _ in strings)
        self.string_expiry = [expireat for _, _, expireat, _ in strings]
        self.others = tuple(entry for entry in pristine if type(entry[1]) is not bytes)


@dataclass(eq=False)
class RedisDouble:
    """The pooled, loop-agnostic part of a fake redis: its server and what it looked like new."""

    server: fakeredis.FakeServer
    decode_responses: bool = False
    #: A sync client on the server, for seeding and for code that wants a sync view.
    sync: fakeredis.FakeRedis | None = None
    _pristine: dict[int, list[tuple[bytes, Any, float | None, type]]] = field(default_factory=dict)
    #: The server's attributes at creation, but for its data, lock and connections.
    _template: dict[str, Any] = field(default_factory=dict)
    #: The template as :func:`_render` sees it, to compare with.
    _template_seen: dict[str, Any] = field(default_factory=dict)
    #: The items reset (or the seeding) last stored, per db and key: reset skips those untouched.
    _written: dict[int, dict[bytes, Any]] = field(default_factory=dict)
    #: ``_pristine`` laid out for the reset's C-level passes, per db (made at the first reset).
    _seeds: dict[int, _Seed] = field(default_factory=dict)
    #: The clients handed out, each with its state when made.
    _clients: weakref.WeakKeyDictionary[Any, _ClientTemplate] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _sync_handle: fakeredis.FakeRedis | None = None
    _async_handle: fakeredis.FakeAsyncRedis | None = None

    def __post_init__(self) -> None:
        if not self._template:
            self._template = _server_template(self.server)
        self._template_seen = {name: _render(value) for name, value in self._template.items()}
        _DOUBLES[id(self.server)] = self

    def client(self) -> fakeredis.FakeAsyncRedis:
        """The async client on this server, for the running event loop: the one made for an
        earlier loop, moved to this one (a new client and its connection's handshake cost
        more than the rest of a lease), or a new one."""
        _drop_dead_wakeups(self.server)
        client = self._async_handle
        if client is not None and _move_to_running_loop(client, self._clients.get(client)):
            return client
        client = self._async_handle = self._new_client()
        return client

    def _new_client(self) -> fakeredis.FakeAsyncRedis:
        """A new async client on this server, for the running event loop."""
        fakeredis_mod = require("fakeredis", extra="redis", service="redis")
        # No write timeout: a fake socket's write never blocks, and with one redis-py on
        # Python 3.11 runs each write in a task of its own (asyncio.wait_for): 50 µs a
        # command instead of 32 (benchmarks/stress_floor.py: the tests' bodies 0.74 s -> 0.63 s).
        client: fakeredis.FakeAsyncRedis = fakeredis_mod.FakeAsyncRedis(
            server=self.server, decode_responses=self.decode_responses, socket_timeout=None
        )
        self._clients[client] = _ClientTemplate(client)
        return client

    def sync_client(self) -> fakeredis.FakeRedis:
        """A sync client on this server (``decode_responses`` as configured), made once: a sync
        client holds nothing bound to an event loop. For sync halves of a suite."""
        client = self._sync_handle
        if client is None:
            fakeredis_mod = require("fakeredis", extra="redis", service="redis")
            client = fakeredis_mod.FakeRedis(server=self.server, decode_responses=self.decode_responses)
            self._clients[client] = _ClientTemplate(client)
            self._sync_handle = client
        return client

    def reset(self) -> None:
        """Make the server, its connections and the clients indistinguishable from new ones."""
        server = self.server
        # Clients first: one whose pool settings changed needs new connections.
        stale = [client for client, template in list(self._clients.items()) if template.restore(client)]
        _drop_dead_wakeups(server)
        # Under the server's lock, as commands run: clearing wakes clients watching a key.
        with server.lock:
            self._restore_data(server)
            renew = self._end_connections(server, force=bool(stale))
        for client in list(self._clients) if renew else stale:
            _forget_connections(client)
        for client in stale:
            # Its idle connections were made with the settings just put back, and keep some
            # (``set_retry`` gives each the test's policy: the next test's outage retried,
            # with the last test's backoff, before it failed): the pool makes new ones.
            client.connection_pool._available_connections.clear()
        _restore_server(server, self._template, self._template_seen)
        own = _socket_of(self.sync)
        if own is not None and getattr(own, "_killed", False):
            self._reconnect_own()

    def _reconnect_own(self) -> None:
        """Open the pool's own connection again (the sync client's, which wrote the seed and
        answers health checks), which a ``CLIENT KILL`` of the test closed: a new instance
        shows it in ``CLIENT LIST``. After the server's attributes are back (an outage, an
        ACL), outside its lock, which the handshake takes."""
        assert self.sync is not None
        conn = self.sync.connection_pool._available_connections[0]
        conn.disconnect()
        conn.connect()

    def _restore_data(self, server: fakeredis.FakeServer) -> None:
        for num, db in server.dbs.items():
            if db and num not in self._pristine:
                db.clear()
        for num in self._pristine:
            self._restore_db(num, server.dbs[num])

    def _restore_db(self, num: int, db: Any) -> None:
        """Bring one seeded database back to the seed: rewrite what differs, drop what was added.

        Rewriting every seeded key (and Database.clear's wake-up per key) cost about 1 ms for
        200 keys, and looking at each key through the database's Python-level ``get`` about
        80 µs; the passes below are C-level. A key still holding the very item reset wrote last
        time (items compare by identity) whose string value is the very bytes object written
        and whose expiry is the seed's is untouched (bytes are immutable, and every command
        that changes a string stores a new bytes object): it stays. Other seeded values (hashes,
        lists, sets) are changed in place by commands, so they are always written anew.
        """
        seed = self._seeds.get(num)
        if seed is None:
            seed = self._seeds[num] = _Seed(self._pristine[num])
        written = self._written.setdefault(num, {})
        len(db)  # fakeredis drops the expired keys on len(): what is left below is live
        live: dict[bytes, Any] = db._dict
        if live == written:
            redo: set[bytes] = set()
        else:
            # Keys added, deleted or given another item during the lease.
            redo = {key for key, _ in live.items() ^ written.items()}
            for key in redo - seed.keys:
                del db[key]
            redo &= seed.keys
        strings = tuple(map(written.get, seed.strings))
        if (
            None in strings
            or any(map(is_not, map(_VALUE, strings), seed.string_values))
            or (list(map(_EXPIREAT, strings)) != seed.string_expiry)
        ):
            redo.update(
                key
                for key, item, value, expireat in zip(
                    seed.strings, strings, seed.string_values, seed.string_expiry, strict=True
                )
                if item is None or item.value is not value or item.expireat != expireat
            )
        for key, value, expireat, item_cls in seed.others:
            self._write(db, written, key, value, expireat, item_cls)
        for key in redo:
            value, expireat, item_cls = seed.items[key]
            if type(value) is bytes:
                self._write(db, written, key, value, expireat, item_cls)
        if tuple(live) != seed.order:
            # A seeded key deleted (DEL, RENAME, MOVE, expiry) was written back last: KEYS and
            # SCAN would list the seed in another order than a new server does.
            items = [(key, live[key]) for key in seed.order]
            live.clear()
            live.update(items)

    @staticmethod
    def _write(
        db: Any, written: dict[bytes, Any], key: bytes, value: Any, expireat: float | None, item_cls: type
    ) -> None:
        item = item_cls(_copy(value))
        item.expireat = expireat
        db[key] = item
        written[key] = item

    def _end_connections(self, server: fakeredis.FakeServer, *, force: bool) -> bool:
        """Unblock what a lease left blocked, close what is not ours, and, if any of our
        connections holds state (or ``force``), close them all. True when ours were closed.

        Connection state (SELECT, CLIENT SETNAME, MULTI, WATCH, subscriptions, unread
        replies) would outlive the lease in the pooled clients' connections. Reconnecting
        costs more than the rest of the reset, so connections that are all clean are kept.
        Sockets that are not our clients' belong to a connection pool a library built on the
        server during the lease (``server_of``); fakeredis's async connections drop their
        socket without closing it, so each such pool left one behind for good: close them.
        """
        blocked = [sock for sock in server.sockets if getattr(sock, "_blocked", False)]
        for sock in blocked:
            # As CLIENT UNBLOCK ... TIMEOUT: the command returns empty instead of taking the
            # next lease's push. Checked before it looks at the list again, so order is moot.
            sock._unblock_reason = b"timeout"
        if blocked:
            _wake_blocked(server)
        held: list[Any] = []
        own = _connections_of(self._clients, held)
        # A connection still checked out when the lease has ended (a pub/sub unsubscribed but
        # never closed, an ``r.client()`` never closed) was the lease's, and stayed open on the
        # server for good: the next test's CLIENT LIST showed it. Whoever holds it reconnects
        # if it is used again, as after any reset that closes connections.
        for conn in held:
            sock = conn._sock
            sock.kill()
            del own[sock]
            conn._sock = conn._reader = conn._writer = None
        keep = _socket_of(self.sync)
        dirty = force
        for sock in list(server.sockets):
            if sock is not keep and sock not in own:
                sock.kill()
            elif sock is not keep and _socket_dirt(sock, own[sock]) is not None:
                dirty = True
        # A connection object a test changed (its encoder, its protocol) would reconnect as
        # changed: it leaves the pool, which makes a new one from its settings when needed.
        for client, template in list(self._clients.items()):
            for conn in template.changed_connections(client):
                client.connection_pool._available_connections.remove(conn)
                sock = getattr(conn, "_sock", None)
                if sock is not None:
                    sock.kill()
        if dirty:
            for sock in list(server.sockets):
                if sock is not keep:
                    sock.kill()
        return dirty

    def snapshot(self) -> dict[str, Any]:
        """Everything reset restores, as comparable plain values (see :func:`snapshot_server`)."""
        return snapshot_server(self.server)

    def restore(self, state: object) -> None:
        """Recovery tier 1: the pristine state is the seed, which :meth:`reset` writes back."""
        del state  # the seed copies taken at creation are the pristine state
        self.reset()

    def fingerprint(self) -> dict[str, Any]:
        """The data, every other attribute of the server (ACL users, config, scripts,
        subscriptions...), the state of each connection, and how each client handed out differs
        from when it was made: what a new instance would show, key by key."""
        server = self.server
        out: dict[str, Any] = {"data": snapshot_server(server)["dbs"]}
        # The data compares as mappings; KEYS and SCAN also show the order of the keys.
        out["key order"] = {num: tuple(db._dict) for num, db in server.dbs.items() if db._dict}
        for name, value in vars(server).items():
            if name not in _SERVER_OWN:
                out[f"server.{name}"] = _render(value)
        out["blocked commands"] = sum(1 for sock in server.sockets if getattr(sock, "_blocked", False))
        out["wake-ups of closed loops"] = sum(
            1
            for db in server.dbs.values()
            for callback in getattr(db, "_change_callbacks", ())
            if _closed_loop_of(callback)
        )
        keep = _socket_of(self.sync)
        out["pool's own connection closed"] = keep is not None and getattr(keep, "_killed", False)
        own = _connections_of(self._clients)
        out["connections with state"] = sorted(
            dirt
            for sock in server.sockets
            if sock is not keep
            for dirt in (_socket_dirt(sock, own.get(sock)),)
            if dirt
        )
        out["clients changed"] = sorted(
            f"{type(client).__name__}.{name}"
            for client, template in list(self._clients.items())
            for name in template.changed(client)
        )
        held: list[Any] = []
        _connections_of(self._clients, held)
        out["connections held"] = len(held)
        out["connections changed"] = sum(
            len(template.changed_connections(client)) for client, template in list(self._clients.items())
        )
        return out

    def health(self) -> bool:
        """The server answers and is connected."""
        sync = self.sync
        return bool(self.server.connected and (sync is None or sync.ping()))

    def close(self) -> None:
        for client in (self.sync, self._sync_handle):
            if client is not None:
                client.close()


#: The pooled doubles by ``id()`` of their server, for :func:`client_like` (weak: a double
#: destroyed by the pool is forgotten).
_DOUBLES: weakref.WeakValueDictionary[int, RedisDouble] = weakref.WeakValueDictionary()


class _ClientTemplate:
    """A client's attributes and its connection pool's settings when it was made."""

    __slots__ = ("connection", "himport", "pool", "pool_state", "state")

    def __init__(self, client: Any) -> None:
        self.state = {name: _fresh(value) for name, value in vars(client).items()}
        self.pool = client.connection_pool
        self.pool_state = {
            name: _fresh(value) for name, value in vars(self.pool).items() if name not in _POOL_LIVE
        }
        #: The pool's HIMPORT registry (redis-py 8.2 on) as made: its fieldsets and revision.
        self.himport = _himport_state(self.pool)
        #: What a connection the pool makes holds (see :func:`_connection_settings`).
        self.connection: tuple[Any, ...] | None = None

    def rebind_locks(self, client: Any) -> None:
        """Replace the client's and its pool's locks bound to another loop, in the client and
        in this template alike (the template would put the old ones back)."""
        for owner, state in ((client, self.state), (self.pool, self.pool_state)):
            values = vars(owner)
            for name, value in list(values.items()):
                if isinstance(value, asyncio.Lock) and getattr(value, "_loop", None) is not None:
                    values[name] = asyncio.Lock()
                    if name in state:
                        state[name] = values[name]

    def changed_connections(self, client: Any) -> list[Any]:
        """The pool's idle connections whose settings differ from what the pool makes."""
        pool = client.connection_pool
        idle = getattr(pool, "_available_connections", ())
        if not idle:
            return []
        made = self.connection
        if made is None:
            # An unconnected connection, made once: it opens no socket until it connects.
            made = self.connection = _connection_settings(pool.make_connection())
        return [conn for conn in idle if _connection_settings(conn) != made]

    def changed(self, client: Any) -> list[str]:
        """The attributes (``connection_pool.<name>`` for the pool's) that differ."""
        state = vars(client)
        names = [
            name
            for name in {*state, *self.state}
            if state.get(name, _MISSING) != self.state.get(name, _MISSING)
        ]
        pool_state = vars(self.pool)
        names += [
            f"connection_pool.{name}"
            for name in {*pool_state, *self.pool_state}
            if name not in _POOL_LIVE
            and pool_state.get(name, _MISSING) != self.pool_state.get(name, _MISSING)
        ]
        if _himport_state(self.pool) != self.himport:
            names.append("connection_pool.himport_registry")
        return names

    def restore(self, client: Any) -> bool:
        """Put back every attribute that differs, as new copies of the template's. True when
        the pool's settings had changed: its connections were made with them and must go."""
        state = vars(client)
        if state != self.state:
            state.clear()
            state.update({name: _fresh(value) for name, value in self.state.items()})
        # ``himport_prepare`` declares a fieldset in the registry the pool shares with its
        # connections (the same object, so the settings below compare equal): emptied in
        # place, it is what every connection sees. The connections, which prepared its
        # fieldsets on the server and stamped its revision, go.
        himport = _himport_state(self.pool) != self.himport
        if himport:
            _empty_himport(self.pool.himport_registry, self.himport)
        pool_state = vars(self.pool)
        settings = {name: value for name, value in pool_state.items() if name not in _POOL_LIVE}
        if settings == self.pool_state:
            return himport
        for name in settings:
            del pool_state[name]
        pool_state.update({name: _fresh(value) for name, value in self.pool_state.items()})
        return True


def _himport_state(pool: Any) -> tuple[int, int] | None:
    """A connection pool's HIMPORT registry as ``(fieldsets, revision)``; None before redis-py 8.2."""
    registry = getattr(pool, "himport_registry", None)
    return None if registry is None else (len(registry), registry.revision)


def _empty_himport(registry: Any, made: tuple[int, int] | None) -> None:
    """Empty an HIMPORT registry and put its revision back to what it was made with (a new
    registry's 0), as the connections that reconnect start from."""
    registry.discard_all()
    if made is not None and "_revision" in vars(registry):
        registry._revision = made[1]


#: A connection pool's attributes that change with use, not with settings.
_POOL_LIVE = frozenset(
    ("_available_connections", "_in_use_connections", "_created_connections", "_lock", "pid")
)
#: Server attributes with rules of their own: the data (reset in place), the lock, the
#: connections (reset closes them), the id counter (ids only grow, as on a real server).
_SERVER_OWN = frozenset(("dbs", "lock", "sockets", "closed_sockets", "_next_client_id"))


def _server_template(server: fakeredis.FakeServer) -> dict[str, Any]:
    return {name: copy.deepcopy(value) for name, value in vars(server).items() if name not in _SERVER_OWN}


def _restore_server(
    server: fakeredis.FakeServer, template: Mapping[str, Any], seen: Mapping[str, Any]
) -> None:
    """Put back every server attribute that differs from the template (``seen``: as
    :func:`_render` sees it), as a new copy of it; delete those the template lacks (the
    functions engine, anything a test added)."""
    state = vars(server)
    if len(state) != len(template) + len(_SERVER_OWN):
        for name in [name for name in state if name not in template and name not in _SERVER_OWN]:
            del state[name]
    for name, value in template.items():
        if _render(state.get(name, _MISSING)) != seen[name]:
            state[name] = copy.deepcopy(value)


def _render(value: Any) -> Any:
    """A server attribute as a comparable value: what a client could observe of it."""
    if hasattr(value, "as_rules") and hasattr(value, "_log"):  # the ACL: users, their rules, the log
        return ("acl", tuple(value.as_rules()), len(value._log))
    if isinstance(value, weakref.WeakSet):
        return len(value)
    if isinstance(value, Mapping):
        if not value:
            return ()
        if all(isinstance(v, weakref.WeakSet) for v in value.values()):
            return frozenset(key for key, subs in value.items() if subs)  # live subscriptions
        return ("map", tuple((_render(k), _render(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_render(v) for v in value))
    if value is None or isinstance(value, bytes | str | int | float):
        return value
    return (type(value).__name__, id(value))


def _fresh(value: Any) -> Any:
    """A new copy of a container (changed in place by a test), the object itself otherwise."""
    return copy.copy(value) if isinstance(value, dict | list | set) else value


def _wake_blocked(server: fakeredis.FakeServer) -> None:
    """Wake every blocked command so it sees its unblock reason. A wake-up of a command
    whose event loop is closed raises, and would on every later write: drop it, nothing
    else will."""
    for db in server.dbs.values():
        for callback in list(getattr(db, "_change_callbacks", ())):
            try:
                callback()
            except RuntimeError:  # "Event loop is closed"
                _wakeups(db).discard(callback)


def _drop_dead_wakeups(server: fakeredis.FakeServer) -> None:
    """End the commands left blocked in event loops that have closed; never under the
    server's lock.

    A ``BLPOP`` left blocked when its loop closed (pytest-asyncio 0.23 closes loops without
    cancelling; or ``asyncio.run`` cancelled fakeredis's task before it ran) never removes its
    wake-up, and every later write on the server called it: "Event loop is closed" in the
    next test. Its task's coroutine ends only when the garbage collector finds it, and its
    clean-up then takes the server's lock: collected while a command of the next test held
    that lock (on a pooled server, the same one), it deadlocked the thread. So the wake-ups go,
    and the coroutines are ended here, while the lock is free.
    """
    dead: set[asyncio.AbstractEventLoop] = set()
    for db in server.dbs.values():
        if getattr(db, "_change_callbacks", None):
            gone = {
                callback: loop
                for callback in db._change_callbacks
                for loop in (_loop_of(callback),)
                if loop is not None and loop.is_closed()
            }
            if gone:
                _wakeups(db).difference_update(gone)
                dead.update(gone.values())
    for loop in dead:
        for task in asyncio.all_tasks(loop):
            coro = task.get_coro()
            if getattr(coro, "__qualname__", "").endswith("._async_blocking"):
                with contextlib.suppress(Exception):  # it writes its reply into the dead loop
                    coro.close()


class _Wakeups(set[Any]):
    """A database's wake-ups once the reset dropped some: the blocked command's own clean-up,
    which runs when its task is collected, removes its wake-up again, and finds it gone."""

    def remove(self, item: Any) -> None:
        self.discard(item)


def _wakeups(db: Any) -> _Wakeups:
    """``db``'s set of wake-ups, made one the reset may drop from."""
    callbacks = db._change_callbacks
    if type(callbacks) is not _Wakeups:
        callbacks = db._change_callbacks = _Wakeups(callbacks)
    return callbacks


def _closed_loop_of(callback: Any) -> bool:
    """True when ``callback`` (a blocked command's wake-up) calls into a closed event loop."""
    loop = _loop_of(callback)
    return loop is not None and loop.is_closed()


def _loop_of(callback: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop a blocked command's wake-up calls into (None: not found)."""
    for cell in getattr(callback, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, asyncio.AbstractEventLoop):
            return value
    return None


def _unblock_late(handle: Any) -> None:
    """At a lease's start: unblock a command blocked since the last reset (a consumer task
    the last test started as it ended, whose ``BLPOP`` reached the server after the reset):
    it returns empty, as at a reset, instead of taking this lease's push."""
    pool = getattr(handle, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    # An emergency stub (recovery's last tier) has no server.
    server = kwargs.get("server") if isinstance(kwargs, dict) else None
    if server is None:
        return
    blocked = [sock for sock in server.sockets if getattr(sock, "_blocked", False)]
    if blocked:
        with server.lock:
            for sock in blocked:
                sock._unblock_reason = b"timeout"
            _wake_blocked(server)


def snapshot_server(server: fakeredis.FakeServer) -> dict[str, Any]:
    """A fake server's state as comparable plain values: keys with values and expiry in every
    database, cached scripts, live subscriptions, the ``connected`` flag and the config. Read
    without commands, so a disconnected server can be snapshotted too."""
    dbs: dict[int, dict[bytes, tuple[Any, float | None]]] = {}
    for num, db in server.dbs.items():
        keys = {key: (_plain(db[key].value), db[key].expireat) for key in list(db)}
        if keys:
            dbs[num] = keys
    return {
        "dbs": dbs,
        "scripts": frozenset(server.script_cache),
        "channels": frozenset(k for k, subs in server.subscribers.items() if subs),
        "patterns": frozenset(k for k, subs in server.psubscribers.items() if subs),
        "shard_channels": frozenset(k for k, subs in server.ssubscribers.items() if subs),
        "connected": server.connected,
        "config": dict(server.config),
    }


def server_of(client: Any) -> fakeredis.FakeServer:
    """The ``FakeServer`` behind a fakeredis client (sync or async), e.g. the handle a test got:
    ``server_of(redis).connected = False`` simulates an outage until the lease ends."""
    server: fakeredis.FakeServer | None = client.connection_pool.connection_kwargs.get("server")
    if server is None:
        raise TypeError(f"{client!r} is not a fakeredis client made with server=...")
    return server


def client_like(client: Any) -> fakeredis.FakeAsyncRedis:
    """A new async client of the same class, server and ``decode_responses`` as ``client``, for
    the running loop; for composite services that hold a member's loop-bound client. On a
    pooled server the client is the double's own: its reset restores it and keeps its
    connection, as for the clients it hands out."""
    server = server_of(client)
    double = _DOUBLES.get(id(server))
    if double is not None and double.server is server:
        return double.client()
    kwargs = client.connection_pool.connection_kwargs
    fresh: fakeredis.FakeAsyncRedis = type(client)(
        server=server,
        decode_responses=kwargs.get("decode_responses", False),
        socket_timeout=kwargs.get("socket_timeout"),
    )
    return fresh


def loop_ref() -> weakref.ref[asyncio.AbstractEventLoop] | None:
    """A weak reference to the running loop, or None outside one."""
    loop = asyncio._get_running_loop()
    return weakref.ref(loop) if loop is not None else None


def redis_service(
    name: str = "redis",
    *,
    seed: Mapping[Any, SeedValue] | None = None,
    db: int = 0,
    decode_responses: bool = False,
    version: tuple[int, ...] = (7, 4),
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """A fake redis: one ``fakeredis.FakeServer`` per instance, its async client moved to each loop.

    :param seed: keys written into database ``db`` at creation and written back on every reset.
    :param decode_responses: passed to the clients (``True``: str replies instead of bytes).
    :param version: the redis version fakeredis emulates.
    :param options: other :class:`~mockpool.ServiceSpec` fields (timeouts, ``acquire_timeout``...).
    :raises MissingExtraError: fakeredis is not installed (``pip install 'mockpool[redis]'``).

    The pooled :class:`RedisDouble` exposes its ``FakeServer`` (``double.server``; from the
    handle a test got, :func:`server_of`), so a library that builds its own connection pool
    can point it at the same server.
    """
    theirs = options.pop("on_acquire", None)

    def on_acquire(handle: Any) -> Any:
        _unblock_late(handle)
        return None if theirs is None else theirs(handle)

    return _redis_spec(
        name,
        seed,
        db,
        decode_responses,
        version,
        min_size,
        max_size,
        options,
        bind=RedisDouble.client,
        on_acquire=on_acquire,
    )


def sync_redis_service(
    name: str = "redis_sync",
    *,
    seed: Mapping[Any, SeedValue] | None = None,
    db: int = 0,
    decode_responses: bool = False,
    version: tuple[int, ...] = (7, 4),
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """Like :func:`redis_service`, but tests receive a sync ``fakeredis.FakeRedis`` client:
    for the sync halves of a suite. Same seed, reset and snapshot; replies are bytes unless
    ``decode_responses=True``, as with redis-py."""
    return _redis_spec(
        name, seed, db, decode_responses, version, min_size, max_size, options, bind=RedisDouble.sync_client
    )


def _redis_spec(
    name: str,
    seed: Mapping[Any, SeedValue] | None,
    db: int,
    decode_responses: bool,
    version: tuple[int, ...],
    min_size: int,
    max_size: int,
    options: dict[str, Any],
    *,
    bind: Any,
    on_acquire: Any = None,
) -> ServiceSpec:
    fakeredis_mod = require(
        "fakeredis",
        extra="redis",
        service=name,
        min_version=FAKEREDIS_MIN_VERSION,
        why="the reset reads the server's and the connections' internals, which earlier versions "
        "lay out differently: every reset would fail and every lease rebuild its instance",
    )
    _check_redis_py(name, installed_version(fakeredis_mod, "fakeredis"))
    if seed is not None and not isinstance(seed, Mapping):
        raise TypeError(
            f"service {name!r}: seed= is a {type(seed).__name__}; pass a mapping of key to value, "
            "as seed={'greeting': 'hello'}"
        )
    seed_items = dict(seed or {})
    for key, value in seed_items.items():
        # Refused here, when the spec is built, rather than in every factory call (where it
        # surfaced as a RecoveryFailedError at the first acquire).
        _check_seed_value(key, value, name)

    def factory() -> RedisDouble:
        server = fakeredis_mod.FakeServer(version=version)
        double = RedisDouble(
            server=server,
            decode_responses=decode_responses,
            sync=fakeredis_mod.FakeRedis(server=server, db=db),
        )
        if seed_items:
            assert double.sync is not None
            _write_seed(double.sync, seed_items, name)
            database = server.dbs[db]
            # Copies: commands such as HSET change a stored value in place.
            double._pristine[db] = [
                (key, _copy(item.value), item.expireat, type(item))
                for key in list(database)
                for item in (database[key],)
            ]
            # The seed's own items, as if reset had written them: the first reset already
            # rewrites only what its lease changed (a string's bytes are the pristine ones).
            double._written[db] = dict(database._dict)
        return double

    return build_spec(
        name,
        options,
        factory=factory,
        bind=bind,
        reset=RedisDouble.reset,
        health_check=RedisDouble.health,
        snapshot=RedisDouble.snapshot,
        restore=RedisDouble.restore,
        fingerprint=RedisDouble.fingerprint,
        destroy=RedisDouble.close,
        on_acquire=on_acquire,
        min_size=min_size,
        max_size=max_size,
    )


def _write_seed(client: fakeredis.FakeRedis, seed: Mapping[str | bytes, SeedValue], service: str) -> None:
    pipe = client.pipeline(transaction=False)
    for key, value in seed.items():
        if isinstance(value, str | bytes | int | float):
            pipe.set(key, value)
        elif isinstance(value, Mapping):
            if value:
                pipe.hset(key, mapping=dict(value))
        elif isinstance(value, AbstractSet):
            if value:
                pipe.sadd(key, *value)
        elif isinstance(value, Sequence):
            if value:
                pipe.rpush(key, *value)
        else:  # refused when the spec was built
            raise _bad_seed(key, value, service)
    pipe.execute()


def _check_seed_value(key: Any, value: Any, service: str) -> None:
    """Raise ``TypeError`` for a seed value :func:`_write_seed` cannot write."""
    if not isinstance(value, str | bytes | int | float | Mapping | AbstractSet | Sequence):
        raise _bad_seed(key, value, service)


def _bad_seed(key: Any, value: Any, service: str) -> TypeError:
    return TypeError(
        f"service {service!r}: seed[{key!r}] is a {type(value).__name__}; use a str, bytes, "
        "int or float (a string), a mapping (a hash), a list (a list) or a set"
    )


def _socket_of(client: Any) -> Any:
    """The fake socket under a sync client's idle connection, if it has one."""
    if client is None:
        return None
    conns = getattr(client.connection_pool, "_available_connections", ())
    return getattr(conns[0], "_sock", None) if conns else None


#: What a connection's fake socket looks like with no state a lease could leave behind. A
#: missing attribute (another fakeredis version) reads as dirty, so the safe path is taken.
_CLEAN_SOCKET: dict[str, Any] = {
    "_db_num": 0,
    "_pubsub": 0,
    "_transaction": None,
    "_in_transaction": False,
    "_killed": False,
    "_paused": False,
    "_blocked": False,
    "_unblock_reason": None,
    "_reply_off": False,
    "_reply_skip": False,
    "_reply_skip_next": False,
    "_no_evict": False,
    "_no_touch": False,
}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


#: Connection state newer fakeredis versions keep: clean when absent (older versions).
_CLEAN_IF_PRESENT: dict[str, Any] = {
    "_transaction_failed": False,
    "_transaction_paused": False,
    "_watch_notified": False,
}
#: Connection state a command fills (``HIMPORT PREPARE`` fieldsets, keyspace events to
#: deliver): clean when empty or absent.
_EMPTY_IF_PRESENT = ("_fieldsets", "_subkey_events")

#: The library name and version each connection announced (``CLIENT SETINFO`` in the
#: handshake), as first seen: a later ``CLIENT SETINFO`` from a test is a change.
_ANNOUNCED: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _socket_dirt(sock: Any, conn: Any = None) -> str | None:
    """What state from the lease that used it a connection carries, or None if none.
    ``conn``: the redis-py connection over ``sock``, whose protocol the socket must speak."""
    state = vars(sock)
    for name, value in _CLEAN_SOCKET.items():
        if state.get(name, _MISSING) != value:
            return f"connection {sock.fileno()}: {name.lstrip('_')}={state.get(name, _MISSING)!r}"
    for name, value in _CLEAN_IF_PRESENT.items():
        if state.get(name, value) != value:
            return f"connection {sock.fileno()}: {name.lstrip('_')}={state.get(name)!r}"
    for name in _EMPTY_IF_PRESENT:
        if state.get(name):
            return f"connection {sock.fileno()}: {name.lstrip('_')} not empty"
    if state.get("_watches", _MISSING) != set():
        return f"connection {sock.fileno()}: watching keys"
    info = state.get("_client_info")
    if not isinstance(info, Mapping):
        return f"connection {sock.fileno()}: no client info"
    if info.get("name") not in ("", None):
        return f"connection {sock.fileno()}: name={info.get('name')!r}"
    if info.get("user") != "default":
        return f"connection {sock.fileno()}: user={info.get('user')!r}"
    if conn is not None and info.get("resp", 2) != _protocol(conn):
        # RESET or HELLO 2 switched the socket's protocol under a RESP3 client: replies
        # would come in the other shape (a flat list for HGETALL).
        return f"connection {sock.fileno()}: resp={info.get('resp')!r}"
    announced = (info.get("lib-name"), info.get("lib-ver"))
    if _announced(sock, conn, announced) != announced:
        return f"connection {sock.fileno()}: lib-name/lib-ver={announced!r}"
    responses = state.get("responses")
    if responses is None or not responses.empty():
        return f"connection {sock.fileno()}: unread replies"
    return None


def _announced(sock: Any, conn: Any, now: tuple[Any, Any]) -> tuple[Any, Any]:
    """What ``sock``'s client announced in its handshake: what the redis-py connection sends
    (``driver_info``, redis-py 7 on), else what the socket held when first seen."""
    driver = getattr(conn, "driver_info", None)
    name, version = getattr(driver, "formatted_name", None), getattr(driver, "lib_version", None)
    if name and version:
        return (name, version)
    return _ANNOUNCED.setdefault(sock, now)


def _protocol(conn: Any) -> int:
    """The RESP version a redis-py connection negotiated (3 after ``HELLO 3``, else 2)."""
    return 3 if str(getattr(conn, "protocol", 2)) == "3" else 2


def _connection_settings(conn: Any) -> tuple[Any, ...]:
    """What a redis-py connection was made with that a test can change on it: how it encodes
    and decodes, its protocol, database, name and credentials (``_MISSING`` for what a
    redis-py version lacks)."""
    encoder = getattr(conn, "encoder", None)
    return (
        type(encoder),
        getattr(encoder, "encoding", _MISSING),
        getattr(encoder, "encoding_errors", _MISSING),
        getattr(encoder, "decode_responses", _MISSING),
        *(getattr(conn, name, _MISSING) for name in _CONNECTION_SETTINGS),
    )


_CONNECTION_SETTINGS = (
    "protocol",
    "db",
    "username",
    "password",
    "client_name",
    "socket_timeout",
    "retry_on_timeout",
    "health_check_interval",
    "redis_connect_func",
)


#: What ties a fakeredis async socket to its event loop (fakeredis 2.39 to 2.41).
_SOCKET_LOOP_STATE = ("responses", "_response_available", "_event_loop", "_loop_thread_ident")


def _move_to_running_loop(client: Any, template: _ClientTemplate | None) -> bool:
    """Move an async client, its connection pool and its idle connections to the running
    loop; False when it cannot be (a connection in use, a socket of another shape, no
    template): the caller makes a new client.

    A lock that waited in the old loop is bound to it (``asyncio.Lock`` binds on its first
    contention): it is replaced, here and in the client's template. An idle connection's
    socket is clean (the reset closed it otherwise), so its reply queue and its wake-up are
    made anew for this loop, and it keeps its handshake.
    """
    if template is None:
        return False
    pool = client.connection_pool
    if getattr(pool, "_in_use_connections", None):
        return False
    loop = asyncio.get_running_loop()
    sockets = [conn._sock for conn in getattr(pool, "_available_connections", ()) if conn._sock is not None]
    for sock in sockets:
        state = vars(sock)
        if any(name not in state for name in _SOCKET_LOOP_STATE) or not sock.responses.empty():
            return False
    for sock in sockets:
        if sock._event_loop is not loop:
            sock.responses = asyncio.Queue()
            sock._response_available = asyncio.Event()
            sock._event_loop = loop
            sock._loop_thread_ident = threading.get_ident()
    template.rebind_locks(client)
    return True


def _connections_of(clients: Iterable[Any], held: list[Any] | None = None) -> dict[Any, Any]:
    """Our clients' connections with a socket, idle and in use, by their fake socket; those
    in use (checked out of their pool) are also appended to ``held``."""
    out = {}
    for client in clients:
        pool = client.connection_pool
        for conn in getattr(pool, "_available_connections", ()):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                out[sock] = conn
        for conn in getattr(pool, "_in_use_connections", ()):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                out[sock] = conn
                if held is not None:
                    held.append(conn)
    return out


def _forget_connections(client: Any) -> None:
    """Drop a client's connections (their sockets were killed); each opens a new socket on
    its next command. They stay in the pool's books: one still in use by a task the lease
    left running (a ``BLPOP``) gets its (empty) reply and goes back to the pool as usual,
    where ``ConnectionPool.reset`` would make that release fail."""
    pool = client.connection_pool
    for conn in (*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())):
        # What FakeAsyncRedisConnection.disconnect() does before its (async) redis-py part.
        conn._sock = conn._reader = conn._writer = None


def _copy(value: Any) -> Any:
    return value if type(value) is bytes else copy.deepcopy(value)


def _plain(value: Any) -> Any:
    """A comparable, hashable rendering of a stored value (fakeredis models included)."""
    if isinstance(value, bytes | str | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return ("map", frozenset((_plain(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, AbstractSet):
        return ("set", frozenset(_plain(v) for v in value))
    if isinstance(value, Sequence):
        return ("seq", tuple(_plain(v) for v in value))
    state = getattr(value, "__dict__", None)
    if state is not None:
        return (type(value).__name__, _plain(state))
    return repr(value)


def _check_redis_py(service: str, fakeredis_version: str) -> None:
    """Refuse, when the spec is built, a fakeredis whose clients the installed redis-py breaks:
    otherwise every factory call fails inside fakeredis, and the first acquire raises a
    ``RecoveryFailedError`` about a ``__closure__`` attribute."""
    redis_version = installed_version(None, "redis")
    (breaking, needed) = _FAKEREDIS_FOR_REDIS
    if not redis_version or not fakeredis_version:
        return  # not installed as distributions (vendored copies): nothing to compare
    if release(redis_version)[:2] >= breaking and release(fakeredis_version) < release(needed):
        raise MissingExtraError(
            f"service {service!r}: fakeredis {fakeredis_version} does not work with redis-py "
            f"{redis_version} (fakeredis before {needed} fails as it makes a client on redis-py "
            f"{breaking[0]}.{breaking[1]} and later); upgrade it with: pip install 'fakeredis>={needed}', "
            f"or keep redis-py below {breaking[0]}.{breaking[1]}",
            name="fakeredis",
        )
