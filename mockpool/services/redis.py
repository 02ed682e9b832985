"""``redis_service()``: a fakeredis server per pooled instance, an async client per event loop.

The pooled instance is a :class:`RedisDouble`, which holds the loop-agnostic ``FakeServer``.
Tests receive a ``fakeredis.FakeAsyncRedis`` client made for their event loop by the spec's
``bind`` hook (an async client binds itself to the loop that first uses it). Reset clears the
server in place, because the clients' connections keep references to its databases, and
writes the seed back from copies of the items taken at creation: no command parsing, so it
costs a fraction of a new server plus its seed.
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._common import build_spec, require

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

#: A seed value: a string (str, bytes, int or float), a hash (a mapping), a list (list or
#: tuple) or a set.
SeedValue = str | bytes | int | float | Mapping[Any, Any] | Sequence[Any] | AbstractSet[Any]


@dataclass(eq=False)
class RedisDouble:
    """The pooled, loop-agnostic part of a fake redis: its server and what it looked like new."""

    server: fakeredis.FakeServer
    decode_responses: bool = False
    #: A sync client on the server, for seeding and for code that wants a sync view.
    sync: fakeredis.FakeRedis | None = None
    _pristine: dict[int, list[tuple[bytes, Any, float | None, type]]] = field(default_factory=dict)
    _config: dict[bytes, bytes] = field(default_factory=dict)
    #: The items reset (or the seeding) last stored, per db and key: reset skips those untouched.
    _written: dict[int, dict[bytes, Any]] = field(default_factory=dict)
    _clients: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    _sync_handle: fakeredis.FakeRedis | None = None

    def client(self) -> fakeredis.FakeAsyncRedis:
        """A new async client on this server, for the running event loop."""
        fakeredis_mod = require("fakeredis", extra="redis", service="redis")
        client: fakeredis.FakeAsyncRedis = fakeredis_mod.FakeAsyncRedis(
            server=self.server, decode_responses=self.decode_responses
        )
        self._clients.add(client)
        return client

    def sync_client(self) -> fakeredis.FakeRedis:
        """A sync client on this server (``decode_responses`` as configured), made once: a sync
        client holds nothing bound to an event loop. For sync halves of a suite."""
        client = self._sync_handle
        if client is None:
            fakeredis_mod = require("fakeredis", extra="redis", service="redis")
            client = fakeredis_mod.FakeRedis(server=self.server, decode_responses=self.decode_responses)
            self._clients.add(client)
            self._sync_handle = client
        return client

    def reset(self) -> None:
        """Make the server indistinguishable from a new one with the same seed."""
        server = self.server
        # Under the server's lock, as commands run: clearing wakes clients watching a key.
        with server.lock:
            for num, db in server.dbs.items():
                if db and num not in self._pristine:
                    db.clear()
            for num, items in self._pristine.items():
                db = server.dbs[num]
                written = self._written.setdefault(num, {})
                # Rewriting every seeded key (and Database.clear's wake-up per key) cost about
                # 1 ms for 200 keys. A string key still holding the very item and bytes object
                # reset wrote last time is untouched (bytes are immutable, and every command
                # that changes a string stores a new bytes object); it stays.
                if len(db) != len(items) or any(key not in written for key in db):
                    for key in [key for key in db if key not in written]:
                        del db[key]
                for key, value, expireat, item_cls in items:
                    current: Any = written.get(key)
                    if (
                        current is not None
                        and type(value) is bytes
                        and current.value is value
                        and current.expireat == expireat
                        and db.get(key) is current
                    ):
                        continue
                    item = item_cls(_copy(value))
                    item.expireat = expireat
                    db[key] = item
                    written[key] = item
            # Connection state (SELECT, CLIENT SETNAME, MULTI, WATCH, subscriptions, unread
            # replies) would outlive the lease in the pooled clients' connections. If any
            # connection has some, kill every connection but the sync client's, as CLIENT KILL
            # would, and make our clients open new ones on next use. Reconnecting costs more
            # than the rest of the reset, so connections that are all clean are kept.
            # Sockets that are not our clients' belong to a connection pool a library built on
            # the server during the lease (``server_of``). fakeredis's async connections drop
            # their socket without closing it, so each such pool left one behind for good,
            # and this loop grew with every lease. The lease is over: close them.
            keep = _socket_of(self.sync)
            own = _sockets_of(self._clients)
            dirty = False
            for sock in list(server.sockets):
                if sock is not keep and sock not in own:
                    sock.kill()
                elif sock is not keep and not _clean_socket(sock):
                    dirty = True
            if dirty:
                for sock in list(server.sockets):
                    if sock is not keep:
                        sock.kill()
        if dirty:
            for client in list(self._clients):
                _forget_connections(client)
        server.script_cache.clear()
        # Subscriptions of a finished lease are dead: nothing may publish to them any more.
        server.subscribers.clear()
        server.psubscribers.clear()
        server.ssubscribers.clear()
        server.connected = True
        if server.config != self._config:
            server.config = dict(self._config)
        server.pause_until = 0.0
        server.scan_cursors.clear()

    def snapshot(self) -> dict[str, Any]:
        """Everything reset restores, as comparable plain values (see :func:`snapshot_server`)."""
        return snapshot_server(self.server)

    def restore(self, state: object) -> None:
        """Recovery tier 1: the pristine state is the seed, which :meth:`reset` writes back."""
        del state  # the seed copies taken at creation are the pristine state
        self.reset()

    def health(self) -> bool:
        """The server answers and is connected."""
        sync = self.sync
        return bool(self.server.connected and (sync is None or sync.ping()))

    def close(self) -> None:
        for client in (self.sync, self._sync_handle):
            if client is not None:
                client.close()


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
    the running loop; for composite services that hold a member's loop-bound client."""
    decode = client.connection_pool.connection_kwargs.get("decode_responses", False)
    fresh: fakeredis.FakeAsyncRedis = type(client)(server=server_of(client), decode_responses=decode)
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
    """A fake redis: one ``fakeredis.FakeServer`` per instance, an async client per loop.

    :param seed: keys written into database ``db`` at creation and written back on every reset.
    :param decode_responses: passed to the clients (``True``: str replies instead of bytes).
    :param version: the redis version fakeredis emulates.
    :param options: other :class:`~mockpool.ServiceSpec` fields (timeouts, ``acquire_timeout``...).
    :raises MissingExtraError: fakeredis is not installed (``pip install 'mockpool[redis]'``).

    The pooled :class:`RedisDouble` exposes its ``FakeServer`` (``double.server``; from the
    handle a test got, :func:`server_of`), so a library that builds its own connection pool
    can point it at the same server.
    """
    return _redis_spec(
        name, seed, db, decode_responses, version, min_size, max_size, options, bind=RedisDouble.client
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
) -> ServiceSpec:
    fakeredis_mod = require("fakeredis", extra="redis", service=name)
    seed_items = dict(seed or {})

    def factory() -> RedisDouble:
        server = fakeredis_mod.FakeServer(version=version)
        double = RedisDouble(
            server=server,
            decode_responses=decode_responses,
            sync=fakeredis_mod.FakeRedis(server=server, db=db),
            _config=dict(server.config),
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
        destroy=RedisDouble.close,
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
        else:
            raise TypeError(
                f"service {service!r}: seed[{key!r}] is a {type(value).__name__}; use a str, bytes, "
                "int or float (a string), a mapping (a hash), a list (a list) or a set"
            )
    pipe.execute()


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
    "_reply_off": False,
    "_reply_skip": False,
    "_reply_skip_next": False,
    "_no_evict": False,
    "_no_touch": False,
}
_MISSING = object()


def _clean_socket(sock: Any) -> bool:
    """True when the connection carries no state from the lease that used it."""
    state = vars(sock)
    if any(state.get(name, _MISSING) != value for name, value in _CLEAN_SOCKET.items()):
        return False
    if state.get("_watches", _MISSING) != set():
        return False
    info = state.get("_client_info")
    if not isinstance(info, Mapping) or info.get("name") not in ("", None):
        return False
    responses = state.get("responses")
    return responses is not None and responses.empty()


def _sockets_of(clients: Iterable[Any]) -> set[Any]:
    """The fake sockets under our clients' connections, idle and in use."""
    out = set()
    for client in clients:
        pool = client.connection_pool
        for conn in (*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                out.add(sock)
    return out


def _forget_connections(client: Any) -> None:
    """Drop an async client's connections (their sockets were killed); the client opens a new
    one on its next command. ``ConnectionPool.reset`` is sync, so reset can stay sync."""
    pool = client.connection_pool
    for conn in (*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())):
        # What FakeAsyncRedisConnection.disconnect() does before its (async) redis-py part.
        conn._sock = conn._reader = conn._writer = None
    pool.reset()


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
