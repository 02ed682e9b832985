"""Dirtying battery of redis_service (issue 12): each case dirties a lease the way a test or the
code under test might, and the next lease on the same instance must be as new; isolation-verify
must see each case when the reset is left out."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
import weakref
from typing import Any

import anyio
import fakeredis
import pytest
import redis.asyncio
import redis.retry
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from mockpool.services import redis_service, server_of, sync_redis_service
from mockpool.testing import Dirtier, check_isolation

SEED = {"greeting": "hello", "queue": ["a"]}


async def _pristine(r: Any) -> None:
    assert await r.get("greeting") == b"hello"
    assert await r.lrange("queue", 0, -1) == [b"a"]
    assert await r.dbsize() == len(SEED)
    assert await r.ping()


async def _acl_user(r: Any) -> None:
    await r.acl_setuser("mallory", enabled=True, passwords=["+pw"], commands=["+@all"], keys=["*"])


async def _acl_gone(r: Any) -> None:
    assert await r.acl_users() == ["default"]


async def _authenticated(r: Any) -> None:
    """AUTH on the pooled connection: later commands would run as mallory."""
    await _acl_user(r)
    await r.execute_command("AUTH", "mallory", "pw")


async def _whoami_default(r: Any) -> None:
    assert await r.acl_whoami() == "default"


def _response_callback(r: Any) -> None:
    r.set_response_callback("GET", lambda response, **options: b"patched")


async def _get_is_real(r: Any) -> None:
    assert await r.get("greeting") == b"hello"


def _callbacks_cleared(r: Any) -> None:
    r.response_callbacks.pop("PING")


async def _ping_is_true(r: Any) -> None:
    assert await r.ping() is True


#: Tasks a lease left blocked in BLPOP, kept so the loop does not collect them mid-test.
_LEFT_RUNNING: list[asyncio.Task[Any]] = []
#: Pipelines and pub/subs a lease left open, closed at the end of the test (redis-py warns
#: about an unclosed one when it is collected).
_LEFT_OPEN: list[Any] = []


async def _blocked_pop(r: Any) -> None:
    """A consumer task the test forgot: blocked in BLPOP on a list the next lease pushes to."""
    _LEFT_RUNNING.append(asyncio.ensure_future(r.blpop(["jobs"])))
    await anyio.wait_all_tasks_blocked()
    assert any(sock._blocked for sock in server_of(r).sockets)


async def _push_is_not_eaten(r: Any) -> None:
    await r.rpush("jobs", "job-1")
    await anyio.wait_all_tasks_blocked()
    assert await r.lrange("jobs", 0, -1) == [b"job-1"]
    await r.delete("jobs")


def _config(r: Any) -> None:
    server_of(r).config[b"notify-keyspace-events"] = b"KEA"


def _config_gone(r: Any) -> None:
    assert b"notify-keyspace-events" not in server_of(r).config


async def _client_name(r: Any) -> None:
    await r.client_setname("worker-1")


async def _no_client_name(r: Any) -> None:
    assert not await r.client_getname()


async def _select(r: Any) -> None:
    await r.execute_command("SELECT", 3)
    await r.set("elsewhere", "1")


async def _back_on_db0(r: Any) -> None:
    assert await r.get("elsewhere") is None
    assert len(server_of(r).dbs[3]) == 0


def _script(r: Any) -> None:
    # SCRIPT LOAD needs lupa; what it leaves behind is this entry.
    server_of(r).script_cache[b"0" * 40] = b"return 1"


async def _no_script(r: Any) -> None:
    assert server_of(r).script_cache == {}


async def _subscribed(r: Any) -> None:
    pubsub = r.pubsub()
    _LEFT_OPEN.append(pubsub)
    await pubsub.subscribe("news")  # never unsubscribed, never closed


async def _nobody_listens(r: Any) -> None:
    assert await r.publish("news", "hi") == 0


async def _watch_left_open(r: Any) -> None:
    pipe = r.pipeline(transaction=True)
    _LEFT_OPEN.append(pipe)
    await pipe.watch("greeting")
    pipe.multi()
    pipe.set("greeting", "from the pipeline")  # never executed, never reset


async def _transaction_works(r: Any) -> None:
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch("greeting")
        pipe.multi()
        pipe.get("greeting")
        assert await pipe.execute() == [b"hello"]


async def _multi_on_the_connection(r: Any) -> None:
    await r.execute_command("MULTI")  # every later command on this connection would be QUEUED


async def _decode_responses(r: Any) -> None:
    r.connection_pool.connection_kwargs["decode_responses"] = True
    await r.connection_pool.disconnect()  # new connections pick the setting up


async def _bytes_replies(r: Any) -> None:
    assert r.connection_pool.connection_kwargs["decode_responses"] is False
    assert await r.get("greeting") == b"hello"


def _auto_close(r: Any) -> None:
    r.auto_close_connection_pool = True


def _not_auto_close(r: Any) -> None:
    assert r.auto_close_connection_pool is False


async def _closed_by_the_code_under_test(r: Any) -> None:
    async with r:
        await r.ping()


def _patched_method(r: Any) -> None:
    async def get(*args: Any, **kwargs: Any) -> bytes:
        return b"patched"

    r.get = get


def _method_is_the_class_one(r: Any) -> None:
    assert "get" not in vars(r)


def _outage(r: Any) -> None:
    server_of(r).connected = False


async def _client_pause(r: Any) -> None:
    await r.client_pause(60_000)


def _not_paused(r: Any) -> None:
    assert server_of(r).pause_until == 0


async def _library_pool(r: Any) -> None:
    """A library that builds its own pool on the server, named, and never closed."""
    own = redis.asyncio.ConnectionPool(
        connection_class=fakeredis.FakeAsyncRedisConnection, server=server_of(r)
    )
    library = redis.asyncio.Redis(connection_pool=own)
    _LEFT_OPEN.append(library)
    await library.client_setname("library")


async def _no_library_connection(r: Any) -> None:
    assert all(client["name"] != "library" for client in await r.client_list())


def _server_attribute(r: Any) -> None:
    # What FUNCTION LOAD leaves (its engine, made on first use), or a test's own marker.
    server_of(r)._lua_functions = object()  # type: ignore[attr-defined]


def _no_server_attribute(r: Any) -> None:
    assert not hasattr(server_of(r), "_lua_functions")


async def _swapdb(r: Any) -> None:
    await r.swapdb(0, 1)


async def _expire_seeded(r: Any) -> None:
    await r.expire("greeting", 100)


async def _no_ttl(r: Any) -> None:
    assert await r.ttl("greeting") == -1


async def _seeded_queue(r: Any) -> None:
    assert await r.lrange("queue", 0, -1) == [b"a"]


async def _only_the_seed(r: Any) -> None:
    assert sorted(await r.keys("*")) == sorted(k.encode() for k in SEED)


async def _set_again(r: Any) -> None:
    await r.delete("greeting")
    await r.set("greeting", "hello")


async def _keys_in_seed_order(r: Any) -> None:
    """A new server lists the seed in the order it was written: a test may compare KEYS or
    SCAN with a list."""
    assert await r.keys("*") == [k.encode() for k in SEED]
    assert (await r.scan(0))[1] == [k.encode() for k in SEED]


async def _scan_left_open(r: Any) -> None:
    await r.set("extra", "1")
    cursor, _ = await r.scan(0, count=1)
    assert cursor != 0


def _no_scan_cursor(r: Any) -> None:
    assert len(server_of(r).scan_cursors) == 0


async def _resp2(r: Any) -> None:
    """RESET (or HELLO 2) puts the connection back on RESP2 under a RESP3 client."""
    await r.execute_command("RESET")


async def _hello2(r: Any) -> None:
    await r.execute_command("HELLO", "2")


async def _speaks_resp3(r: Any) -> None:
    assert int((await r.client_info())["resp"]) == 3


async def _lib_name(r: Any) -> None:
    await r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "evil-lib")


async def _lib_name_announced(r: Any) -> None:
    assert (await r.client_info())["lib-name"] == "redis-py"


def _decoding_connection(r: Any) -> None:
    """A connection object changed in place: it would reconnect as changed."""
    for conn in r.connection_pool._available_connections:
        conn.encoder = type(conn.encoder)("utf-8", "strict", True)


async def _retry_policy(r: Any) -> None:
    """A retry policy for a flaky dependency: redis-py gives it to the pooled connections too."""
    await r.ping()
    r.set_retry(Retry(ConstantBackoff(3600), 3))


async def _outage_fails_at_once(r: Any) -> None:
    """A test that simulates an outage expects the error now, not after the last test's retries
    (which here would sleep an hour between attempts)."""
    server_of(r).connected = False
    try:
        with anyio.fail_after(5), pytest.raises(redis.exceptions.ConnectionError):
            await r.get("greeting")
    finally:
        server_of(r).connected = True


#: Per server, the ``CLIENT ID`` of each connection a lease checked out and never gave back.
_HELD: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


async def _client_ids(r: Any) -> set[int]:
    return {int(client["id"]) for client in await r.client_list()}


async def _pubsub_not_closed(r: Any) -> None:
    """A pub/sub done with (unsubscribed, its replies read) but never closed: it keeps its
    connection checked out of the pool, open on the server."""
    pubsub = r.pubsub()
    _LEFT_OPEN.append(pubsub)
    await pubsub.subscribe("news")
    await pubsub.unsubscribe("news")
    while await pubsub.get_message(timeout=0) is not None:
        pass
    await pubsub.connection.send_command("CLIENT", "ID")
    _HELD.setdefault(server_of(r), set()).add(await pubsub.connection.read_response())


async def _single_connection_client_not_closed(r: Any) -> None:
    """``r.client()``: a client on the same pool holding one connection until it is closed."""
    own = r.client()
    _LEFT_OPEN.append(own)
    _HELD.setdefault(server_of(r), set()).add(await own.client_id())


async def _held_connections_closed(r: Any) -> None:
    """A new server has no connection of the last test's: CLIENT LIST shows none of them."""
    assert not (await _client_ids(r)) & _HELD.get(server_of(r), set())


async def _kill_other_connections(r: Any) -> None:
    """``CLIENT KILL TYPE normal`` spares the caller and closes every other connection, the
    pool's own (the one that wrote the seed) included."""
    await r.execute_command("CLIENT", "KILL", "TYPE", "normal")


async def _connections_as_new(r: Any) -> None:
    """A new instance shows two connections: the pool's own, and this client's."""
    assert len(await r.client_list()) >= 2


DIRTIERS = [
    Dirtier("data", lambda r: r.set("greeting", "changed"), gone=_get_is_real),
    Dirtier("expiry on a seeded key", _expire_seeded, gone=_no_ttl),
    Dirtier("SWAPDB", _swapdb, gone=_get_is_real),
    # The reset keeps a seeded string whose item and bytes are the ones it wrote: each of these
    # changes one of them (in place or not), or the key set.
    Dirtier("APPEND to a seeded string", lambda r: r.append("greeting", "!"), gone=_get_is_real),
    Dirtier("SETRANGE in a seeded string", lambda r: r.setrange("greeting", 0, "J"), gone=_get_is_real),
    Dirtier("seeded key deleted", lambda r: r.delete("greeting"), gone=_get_is_real),
    Dirtier("seeded key renamed", lambda r: r.rename("greeting", "moved"), gone=_only_the_seed),
    Dirtier("seeded key deleted and set again", _set_again, gone=_keys_in_seed_order),
    Dirtier("seeded list pushed to", lambda r: r.rpush("queue", "b"), gone=_seeded_queue),
    Dirtier("FLUSHALL", lambda r: r.flushall(), gone=_only_the_seed),
    Dirtier("ACL SETUSER", _acl_user, gone=_acl_gone),
    Dirtier("AUTH as another user", _authenticated, gone=_whoami_default),
    Dirtier("set_response_callback", _response_callback, gone=_get_is_real),
    Dirtier("response_callbacks changed in place", _callbacks_cleared, gone=_ping_is_true),
    Dirtier("BLPOP task left running", _blocked_pop, gone=_push_is_not_eaten),
    Dirtier("keyspace notifications config", _config, gone=_config_gone),
    Dirtier("CLIENT SETNAME", _client_name, gone=_no_client_name),
    Dirtier("SELECT", _select, gone=_back_on_db0),
    Dirtier("cached script", _script, gone=_no_script),
    Dirtier("subscription left open", _subscribed, gone=_nobody_listens),
    Dirtier("WATCH/MULTI pipeline left open", _watch_left_open, gone=_transaction_works),
    Dirtier("MULTI on the connection", _multi_on_the_connection, gone=_get_is_real),
    Dirtier("decode_responses in connection_kwargs", _decode_responses, gone=_bytes_replies),
    Dirtier("auto_close_connection_pool", _auto_close, gone=_not_auto_close),
    # A redis client closed by the code under test reconnects on its next command: there is
    # nothing left to see, and nothing to fix. The case proves the next lease works.
    Dirtier("client closed by the code", _closed_by_the_code_under_test, gone=_ping_is_true, visible=False),
    Dirtier("method patched on the client", _patched_method, gone=_method_is_the_class_one),
    Dirtier("outage left on", _outage, gone=_ping_is_true),
    Dirtier("CLIENT PAUSE", _client_pause, gone=_not_paused),
    Dirtier("library pool on server_of(r)", _library_pool, gone=_no_library_connection),
    Dirtier("attribute added to the server", _server_attribute, gone=_no_server_attribute),
    Dirtier("SCAN cursor left open", _scan_left_open, gone=_no_scan_cursor),
    Dirtier("RESET (back to RESP2)", _resp2, gone=_speaks_resp3),
    Dirtier("HELLO 2", _hello2, gone=_speaks_resp3),
    Dirtier("CLIENT SETINFO LIB-NAME", _lib_name, gone=_lib_name_announced),
    Dirtier("a connection's encoder", _decoding_connection, gone=_bytes_replies),
    Dirtier("set_retry", _retry_policy, gone=_outage_fails_at_once),
    Dirtier("pub/sub unsubscribed, not closed", _pubsub_not_closed, gone=_held_connections_closed),
    Dirtier("r.client() not closed", _single_connection_client_not_closed, gone=_held_connections_closed),
    Dirtier("CLIENT KILL TYPE normal", _kill_other_connections, gone=_connections_as_new),
]


async def _left_running_ended_quietly() -> None:
    """The tasks left blocked were unblocked by the reset: each returned empty, none failed."""
    results = await asyncio.gather(*_LEFT_RUNNING, return_exceptions=True)
    _LEFT_RUNNING.clear()
    for leftover in _LEFT_OPEN:
        await leftover.aclose()
    _LEFT_OPEN.clear()
    assert all(result is None for result in results), results


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
async def test_every_case_is_reset_and_seen_by_the_fingerprint(isolation_verify: bool) -> None:
    report = await check_isolation(
        redis_service(seed=SEED),
        DIRTIERS,
        pristine=_pristine,
        isolation_verify=isolation_verify,
        strict=True,
    )
    assert {case.outcome for case in report.cases} == {"reset"}
    await _left_running_ended_quietly()


@pytest.mark.asyncio
async def test_many_concurrent_leases_over_few_instances_stay_isolated() -> None:
    # The cases that stay local to their lease; an outage or a pause would stall the other
    # leases sharing the instance at that moment, which is the point of pausing.
    shared = [
        d for d in DIRTIERS if d.name not in ("outage left on", "CLIENT PAUSE", "BLPOP task left running")
    ]
    report = await check_isolation(
        redis_service(seed=SEED), shared, pristine=_pristine, strict=True, tasks=60, instances=3
    )
    assert report.cases[-1].outcome == "reset"
    await _left_running_ended_quietly()


@pytest.mark.asyncio
async def test_without_its_reset_isolation_verify_catches_every_visible_case() -> None:
    weakened = dataclasses.replace(redis_service(seed=SEED), reset=None)
    for dirtier in [d for d in DIRTIERS if d.visible]:
        report = await check_isolation(weakened, [dirtier], pristine=_pristine, isolation_verify=True)
        assert [case.outcome for case in report.cases] == ["caught"], report
    await _left_running_ended_quietly()


def _sync_retry_policy(r: Any) -> None:
    r.ping()
    r.set_retry(redis.retry.Retry(ConstantBackoff(3600), 3))


def _sync_no_retries(r: Any) -> None:
    assert r.ping()
    connections = r.connection_pool._available_connections
    assert connections and all(conn.retry.get_retries() == 0 for conn in connections)


@pytest.mark.asyncio
async def test_the_sync_variant_restores_its_client_and_connection() -> None:
    dirtiers = [
        Dirtier("data", lambda r: r.set("greeting", "x"), gone=lambda r: r.get("greeting") == b"hello"),
        Dirtier(
            "set_response_callback",
            lambda r: r.set_response_callback("GET", lambda response, **options: b"patched"),
            gone=lambda r: r.get("greeting") == b"hello",
        ),
        Dirtier(
            "SELECT",
            lambda r: r.execute_command("SELECT", 2),
            gone=lambda r: r.dbsize() == len(SEED),
        ),
        Dirtier(
            "ACL SETUSER",
            lambda r: r.acl_setuser("m", enabled=True),
            gone=lambda r: r.acl_users() == ["default"],
        ),
        # A sync outage would sleep through the backoff: look at the policy the next command uses.
        Dirtier("set_retry", _sync_retry_policy, gone=_sync_no_retries),
    ]
    for verify in (False, True):
        await check_isolation(
            sync_redis_service(seed=SEED),
            dirtiers,
            pristine=lambda r: r.get("greeting") == b"hello",
            isolation_verify=verify,
            strict=True,
        )


@pytest.mark.asyncio
async def test_himport_fieldsets_do_not_outlive_the_lease() -> None:
    """``HIMPORT PREPARE`` keeps a fieldset on the connection (fakeredis 2.41 on)."""

    async def prepare(r: Any) -> None:
        try:
            await r.execute_command("HIMPORT", "PREPARE", "fs", "f1")
        except redis.exceptions.ResponseError as exc:
            pytest.skip(f"this fakeredis has no HIMPORT: {exc}")

    async def gone(r: Any) -> None:
        with pytest.raises(redis.exceptions.ResponseError):
            await r.execute_command("HIMPORT", "SET", "h", "fs", "v")

    for verify in (False, True):
        report = await check_isolation(
            redis_service(seed=SEED),
            [Dirtier("HIMPORT PREPARE", prepare, gone=gone)],
            pristine=_pristine,
            isolation_verify=verify,
            strict=True,
        )
        assert [case.outcome for case in report.cases] == ["reset"]


@pytest.mark.asyncio
async def test_himport_fieldsets_declared_on_the_client_do_not_outlive_the_lease() -> None:
    """redis-py 8.2's ``himport_prepare`` declares a fieldset in the registry its connection pool
    shares with every connection: the next test's ``himport_set`` must not find it."""

    async def prepare(r: Any) -> None:
        if not hasattr(r, "himport_prepare"):
            pytest.skip("this redis-py has no client-side HIMPORT")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "experimental method"
            await r.himport_prepare("fs", ["f1"])
            try:
                await r.himport_set("h", "fs", ["v"])  # prepares it on the connection too
            except redis.exceptions.ResponseError as exc:
                pytest.skip(f"this fakeredis has no HIMPORT: {exc}")

    async def gone(r: Any) -> None:
        assert len(r.himport_registry) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(redis.exceptions.NoSuchFieldsetError):
                await r.himport_set("h", "fs", ["v"])
            # Declared again with other fields (the same version number as the last lease's,
            # the registry being new), it reaches the server as declared now.
            await r.himport_prepare("fs", ["f2"])
            await r.himport_set("h", "fs", ["v"])
            assert await r.hgetall("h") == {b"f2": b"v"}
            await r.himport_discard_all()
            await r.delete("h")

    for verify in (False, True):
        report = await check_isolation(
            redis_service(seed=SEED),
            [Dirtier("himport_prepare", prepare, gone=gone)],
            pristine=_pristine,
            isolation_verify=verify,
            strict=True,
        )
        assert [case.outcome for case in report.cases] == ["reset"]
    weakened = dataclasses.replace(redis_service(seed=SEED), reset=None)
    report = await check_isolation(
        weakened, [Dirtier("himport_prepare", prepare, gone=gone)], pristine=_pristine, isolation_verify=True
    )
    assert [case.outcome for case in report.cases] == ["caught"]
