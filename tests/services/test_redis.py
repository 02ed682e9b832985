from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

import anyio
import fakeredis
import pytest

from mockpool import MockPool, MockPoolError, ServiceSpec
from mockpool.services import MissingExtraError, RedisDouble, redis_service, server_of, sync_redis_service

from ._helpers import pool_of

SEED: dict[str | bytes, Any] = {
    "greeting": "hello",
    "profile": {"name": "alice"},
    "queue": ["a", "b"],
    "tags": {"x", "y"},
}


@pytest.mark.asyncio
async def test_a_later_lease_sees_a_clean_server_with_the_seed() -> None:
    async with pool_of(redis_service(seed=SEED, max_size=1)) as pool:
        async with pool.acquire("redis") as r:
            assert await r.get("greeting") == b"hello"
            await r.set("greeting", "changed")
            await r.hset("profile", "name", "mallory")  # changes the stored hash in place
            await r.rpush("queue", "c")
            await r.set("mine", "1", ex=100)
            await r.execute_command("SELECT", 3)
            await r.set("elsewhere", "1")
            server = server_of(r)
            server.script_cache[b"sha"] = b"return 1"
            server.connected = False
        async with pool.acquire("redis") as r:
            assert server_of(r) is server  # the same instance, reset
            assert server.connected
            assert server.script_cache == {}
            assert await r.get("greeting") == b"hello"
            assert await r.hgetall("profile") == {b"name": b"alice"}
            assert await r.lrange("queue", 0, -1) == [b"a", b"b"]
            assert await r.smembers("tags") == {b"x", b"y"}
            assert await r.exists("mine") == 0
            assert await r.dbsize() == len(SEED)
            assert all(len(db) == 0 for num, db in server.dbs.items() if num != 0)
        assert pool.stats("redis").created == 1


@pytest.mark.asyncio
async def test_connection_state_does_not_leak_and_sockets_do_not_pile_up() -> None:
    async with pool_of(redis_service(max_size=1)) as pool:
        for i in range(5):
            async with pool.acquire("redis") as r:
                assert not await r.client_getname()  # no name left by the previous lease
                await r.client_setname(f"test-{i}")
                await r.set("k", i)
                server = server_of(r)
        assert len(server.sockets) <= 2  # the sync client's and at most one async connection


@pytest.mark.asyncio
async def test_pubsub_subscriptions_end_with_the_lease() -> None:
    async with pool_of(redis_service(max_size=1)) as pool:
        async with pool.acquire("redis") as r:
            pubsub = r.pubsub()
            await pubsub.subscribe("news")
            assert await r.publish("news", "hi") == 1
            await pubsub.aclose()
            server = server_of(r)
            server.subscribers[b"news"].add(pubsub)  # a subscription the test forgot to end
        async with pool.acquire("redis") as r:
            assert await r.publish("news", "hi") == 0
            assert not any(server.subscribers.values())


@pytest.mark.asyncio
async def test_decode_responses_and_the_pooled_instance() -> None:
    spec = redis_service("cache", seed={"k": "v"}, decode_responses=True, max_size=1)
    assert spec.name == "cache"
    double = spec.factory()
    assert isinstance(double, RedisDouble)
    assert double.health()
    assert spec.bind is not None
    client = spec.bind(double)
    assert isinstance(client, fakeredis.FakeAsyncRedis)
    assert await client.get("k") == "v"
    assert server_of(client) is double.server
    await client.aclose()
    double.close()


@pytest.mark.asyncio
async def test_snapshot_sees_data_expiry_scripts_and_connection() -> None:
    double = redis_service(seed={"a": "1"}).factory()
    pristine = double.snapshot()
    assert pristine["dbs"] == {0: {b"a": (b"1", None)}}
    double.sync.expire("a", 100)
    with_ttl = double.snapshot()
    assert with_ttl["dbs"][0][b"a"][1] is not None
    double.server.script_cache[b"x"] = b"return 1"
    double.server.connected = False
    assert double.snapshot() != pristine
    double.reset()
    assert double.snapshot() == pristine
    double.close()


def test_the_client_moves_to_each_event_loop_on_the_same_server() -> None:
    """Under pytest-asyncio every test has a loop of its own: the client made for the first
    is moved to the next (a new client and its handshake cost more than the rest of a lease),
    with what binds it to a loop made anew."""
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1))
    seen = []

    async def one_test(value: str) -> None:
        async with pool.acquire("redis") as r:
            seen.append(r)
            assert await r.get("k") is None  # nothing from the previous loop's test
            await r.set("k", value)
            # A blocking command needs a future on the client's loop: a client bound to the
            # previous loop would fail here.
            assert await r.blpop(["nothing"], timeout=0.01) is None

    asyncio.run(one_test("first"))
    asyncio.run(one_test("second"))
    assert seen[0] is seen[1]
    assert server_of(seen[0]) is server_of(seen[1])
    assert pool.stats("redis").created == 1


def test_a_lock_that_waited_in_the_last_loop_does_not_bind_the_next() -> None:
    """Concurrent commands on one client contend for its connection pool's lock, which binds
    to the loop it first waited in: moved to a new loop as it was, the client's next contention
    raised "bound to a different event loop"."""
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1))

    async def one_test() -> None:
        async with pool.acquire("redis") as r:
            lock = r.connection_pool._lock
            async with lock:  # the commands below wait for it: the lock binds to this loop
                pending = asyncio.gather(*(r.incr("n") for _ in range(5)))
                await asyncio.sleep(0)
            assert sorted(await pending) == [1, 2, 3, 4, 5]

    asyncio.run(one_test())
    asyncio.run(one_test())
    pool.check_invariants()


def test_a_client_with_a_command_still_running_in_its_loop_is_not_moved() -> None:
    """A connection still in use in the old loop (a task the test left blocked) cannot move:
    the next loop gets a client of its own."""
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1))
    seen: list[Any] = []
    left: list[asyncio.Future[Any]] = []
    loop = asyncio.new_event_loop()

    async def leaves_a_blpop() -> None:
        async with pool.acquire("redis") as r:
            seen.append(r)
            left.append(asyncio.ensure_future(r.blpop(["jobs"])))
            await asyncio.sleep(0)
            assert r.connection_pool._in_use_connections

    async def next_test() -> None:
        async with pool.acquire("redis") as r:
            seen.append(r)
            assert await r.ping()

    try:
        loop.run_until_complete(leaves_a_blpop())
        asyncio.run(next_test())
    finally:
        # the reset unblocked the BLPOP: it returns empty
        assert loop.run_until_complete(left[0]) is None
        loop.close()
    assert seen[0] is not seen[1]


def test_missing_fakeredis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mockpool\[redis\]'") as info:
        redis_service()
    assert isinstance(info.value, ImportError)
    assert "'redis'" in str(info.value)
    # concepts.md: "Every error mockpool raises derives from MockPoolError"; a suite that
    # catches MockPoolError around its pool set-up catches a missing extra too.
    assert isinstance(info.value, MockPoolError)


def test_unsupported_seed_value_is_refused_when_the_spec_is_built() -> None:
    """Refused at build time, as a bad http answer is: in the factory, it surfaced only at the
    first acquire, as a RecoveryFailedError after every creation failed."""
    with pytest.raises(TypeError, match=r"seed\['k'\] is a object"):
        redis_service(seed={"k": object()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"seed\['k'\] is a NoneType"):
        sync_redis_service(seed={"k": None})  # type: ignore[dict-item]
    # Not a mapping at all: dict() said "cannot convert dictionary update sequence element #0".
    with pytest.raises(TypeError, match=r"^service 'redis': seed= is a list; pass a mapping of key to value"):
        redis_service(seed=["greeting", "hello"])  # type: ignore[arg-type]


def test_spec_options_pass_through() -> None:
    spec = redis_service(min_size=2, max_size=3, reset_timeout=1.5)
    assert isinstance(spec, ServiceSpec)
    assert (spec.min_size, spec.max_size, spec.reset_timeout) == (2, 3, 1.5)
    assert spec.bind is not None and spec.snapshot is not None and spec.restore is not None


@pytest.mark.asyncio
async def test_replies_are_bytes_by_default_like_redis_py() -> None:
    specs = (redis_service(seed={"k": "v"}), redis_service("text", seed={"k": "v"}, decode_responses=True))
    async with pool_of(*specs) as pool, pool.acquire("redis") as raw, pool.acquire("text") as text:
        assert await raw.get("k") == b"v"
        assert await text.get("k") == "v"


@pytest.mark.asyncio
async def test_a_library_that_builds_its_own_pool_reaches_the_same_server() -> None:
    import redis.asyncio

    async with pool_of(redis_service(seed={"k": "v"}, max_size=1)) as pool:
        async with pool.acquire("redis") as r:
            own_pool = redis.asyncio.ConnectionPool(
                connection_class=fakeredis.FakeAsyncRedisConnection, server=server_of(r)
            )
            other = redis.asyncio.Redis(connection_pool=own_pool)
            await other.set("from-library", "1")
            assert await r.get("from-library") == b"1"
            assert await other.get("k") == b"v"
            await other.aclose()
            await own_pool.aclose()
        async with pool.acquire("redis") as r:
            assert await r.get("from-library") is None


@pytest.mark.asyncio
async def test_sockets_of_a_library_pool_do_not_pile_up_across_leases() -> None:
    """fakeredis's async connections drop their socket without closing it, so each pool a
    library built on the server left one on it; reset walked them all (teardown grew with
    every lease). Reset closes every socket that is not the pooled clients'."""
    import redis.asyncio

    counts = []
    async with pool_of(redis_service(max_size=1)) as pool:
        for _ in range(20):
            async with pool.acquire("redis") as r:
                server = server_of(r)
                own_pool = redis.asyncio.ConnectionPool(
                    connection_class=fakeredis.FakeAsyncRedisConnection, server=server
                )
                other = redis.asyncio.Redis(connection_pool=own_pool)
                await other.set("from-library", "1")
                await other.aclose()
                await own_pool.aclose()
                assert await r.get("from-library") == b"1"
            counts.append(len(server.sockets))
    assert max(counts) <= 1, counts


@pytest.mark.asyncio
async def test_the_sync_variant_gives_a_sync_client_with_the_same_reset() -> None:
    spec = sync_redis_service(seed=SEED, max_size=1)
    assert spec.name == "redis_sync"
    async with pool_of(spec) as pool:
        async with pool.acquire("redis_sync") as r:
            assert isinstance(r, fakeredis.FakeRedis)
            assert r.get("greeting") == b"hello"
            r.set("greeting", "changed")
            r.execute_command("SELECT", 3)  # type: ignore[no-untyped-call]
            r.set("elsewhere", "1")
            first = r
        async with pool.acquire("redis_sync") as r:
            assert r is first
            assert r.get("greeting") == b"hello"
            assert r.get("elsewhere") is None  # back on db 0
            assert len(server_of(r).dbs[3]) == 0
    text = sync_redis_service(seed={"k": "v"}, decode_responses=True)
    double = text.factory()
    assert text.bind is not None
    assert text.bind(double).get("k") == "v"
    double.close()


@pytest.mark.asyncio
async def test_reset_restores_every_way_a_seeded_string_can_change_across_many_leases() -> None:
    seed = {f"k{i}": f"v{i}" for i in range(5)}
    async with pool_of(redis_service(seed=seed, max_size=1)) as pool:
        changes: list[Callable[[Any], Awaitable[Any]]] = [
            lambda r: r.set("k0", "other"),
            lambda r: r.set("k1", "v1"),  # the same text, a new value
            lambda r: r.append("k2", "!"),
            lambda r: r.expire("k3", 100),
            lambda r: r.delete("k4"),
            lambda r: r.set("extra", "1"),
            lambda r: r.rename("k0", "moved"),
        ]
        for change in [*changes, *changes]:  # twice: later resets skip what stayed untouched
            async with pool.acquire("redis") as r:
                assert {k: await r.get(k) for k in seed} == {k: v.encode() for k, v in seed.items()}
                assert await r.dbsize() == len(seed)
                assert await r.ttl("k3") == -1
                await change(r)
        assert pool.stats("redis").created == 1


@pytest.mark.asyncio
async def test_clean_connections_are_kept_and_dirty_ones_replaced() -> None:
    async with pool_of(redis_service(max_size=1)) as pool:
        async with pool.acquire("redis") as r:
            await r.set("k", "1")
            server = server_of(r)
            first = set(server.sockets)
        async with pool.acquire("redis") as r:
            await r.get("k")
            assert set(server.sockets) == first  # nothing left behind: the connection stays
            await r.execute_command("SELECT", 2)  # state a later lease must not inherit
        async with pool.acquire("redis") as r:
            await r.set("where", "db0")
            assert await r.dbsize() == 1  # back on db 0, on a new connection
            assert set(server.sockets) != first
            pipe = r.pipeline(transaction=True)
            await pipe.watch("where")  # WATCH holds the connection's state too
            pipe.multi()
            pipe.set("where", "x")
            await pipe.reset()
        async with pool.acquire("redis") as r:
            assert await r.get("where") is None


def test_a_fakeredis_older_than_the_reset_supports_is_refused_at_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fakeredis 2.35 and 2.37/2.38 lay out the server's internals differently: every reset
    raised and every lease rebuilt its instance, silently. Refused when the spec is built."""
    import fakeredis

    from mockpool.services.redis import FAKEREDIS_MIN_VERSION

    monkeypatch.setattr(fakeredis, "__version__", "2.38.0", raising=False)
    with pytest.raises(MissingExtraError) as caught:
        redis_service()
    assert f"needs fakeredis >= {FAKEREDIS_MIN_VERSION}, and fakeredis 2.38.0 is installed" in str(
        caught.value
    )


@pytest.mark.asyncio
async def test_a_command_runs_without_a_task_of_its_own() -> None:
    """A fake socket's write never blocks, so the clients have no write timeout: with one,
    redis-py on Python 3.11 wraps every write in ``asyncio.wait_for``, a task per command (a
    third of a command's cost). Blocking commands still wait for another task's push."""
    async with pool_of(redis_service(max_size=1)) as pool, pool.acquire("redis") as r:
        await r.set("warm", "1")  # the client's first connection is made here
        loop = asyncio.get_running_loop()
        started: list[object] = []
        default = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
            started.append(coro)
            if default is not None:
                return default(loop, coro, **kwargs)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(counting)
        try:
            await r.set("k", "v")
            assert await r.get("k") == b"v"
            assert started == []
        finally:
            loop.set_task_factory(default)
        popped = asyncio.create_task(r.blpop(["q"], timeout=0))
        await asyncio.sleep(0)
        await r.rpush("q", "x")
        assert await asyncio.wait_for(popped, 5) == (b"q", b"x")


def _write_twice(pool: MockPool) -> str:
    async def write() -> str:
        async with pool.acquire("redis") as r:
            await r.set("greeting", "hello")
            await r.rpush("jobs", "job-1")
            return "ok"

    return asyncio.run(write())


# Closing a loop drops its ready tasks, and fakeredis's own task for the BLPOP is collected
# then: its clean-up writes into the closed loop, as it does for any client, pooled or not.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_command_left_blocked_in_a_loop_closed_without_cancelling_does_not_break_the_next() -> None:
    """pytest-asyncio 0.23 closes a test's loop without cancelling its tasks: a BLPOP left
    blocked kept its wake-up on the server, and every write of the next test, in a new loop,
    raised "Event loop is closed"."""
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1))
    left: list[asyncio.Future[Any]] = []

    async def leaves_a_blpop() -> None:
        async with pool.acquire("redis") as r:
            left.append(asyncio.ensure_future(r.blpop(["jobs"], timeout=5)))
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(leaves_a_blpop())
    # fakeredis's task that waits for the BLPOP's wake-up: held here, as a reference cycle
    # holds it until the collector runs, which could be while a command of the next test
    # holds the server's lock that its clean-up takes (a deadlock on a pooled server).
    [blocking] = [
        task.get_coro() for task in asyncio.all_tasks(loop) if "_async_blocking" in repr(task.get_coro())
    ]
    loop.close()  # its tasks still pending
    assert _write_twice(pool) == "ok"
    assert blocking.cr_frame is None  # type: ignore[union-attr]  # ended when the next lease began
    [double] = [entry.instance for entry in pool.service_pools["redis"].core.entries]
    assert double.fingerprint()["wake-ups of closed loops"] == 0
    pool.check_invariants()
    left.clear()
    gc.collect()  # the dead loop's tasks are collected here, not in a later test


@pytest.mark.parametrize("service", ["redis", "worker"])
def test_a_consumer_started_as_the_lease_ends_does_not_take_the_next_leases_push(service: str) -> None:
    """A BLPOP the last test started on its last line reaches the server after the release's
    reset: the next lease unblocks it (it returns empty) before the test runs. The same on a
    group's redis member ("worker"): a group lease runs its members' on_acquire
    (device_session has the same test through the built-in group)."""
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1))
    pool.register(
        ServiceSpec(name="worker", factory=lambda redis: [redis], depends_on=("redis",), max_size=1)
    )

    def redis_of(lease: Any) -> Any:
        return lease.members["redis"] if service == "worker" else lease.instance

    async def two_tests() -> tuple[Any, list[bytes]]:
        lease = pool.acquire(service)
        async with lease:
            late = asyncio.ensure_future(redis_of(lease).blpop(["jobs"], timeout=5))
        await anyio.wait_all_tasks_blocked()  # the late BLPOP blocks now, after the reset
        lease = pool.acquire(service)
        async with lease:
            r = redis_of(lease)
            await r.rpush("jobs", "job-1")
            await anyio.wait_all_tasks_blocked()  # a BLPOP still blocked would take it now
            mine = await r.lrange("jobs", 0, -1)
        return await late, mine

    late, mine = asyncio.run(two_tests())
    assert late is None
    assert mine == [b"job-1"]
    pool.check_invariants()


def test_on_acquire_of_the_caller_still_runs() -> None:
    seen: list[Any] = []
    pool = MockPool(supervise=False)
    pool.register(redis_service(max_size=1, on_acquire=seen.append))

    async def one() -> None:
        async with pool.acquire("redis") as r:
            assert seen == [r]

    asyncio.run(one())


@pytest.mark.asyncio
async def test_an_emergency_stub_is_served_degraded() -> None:
    """The service's on_acquire unblocks late commands on the server behind the client; a
    stub (recovery's last tier) has none, and is served as it is."""
    base = redis_service(allow_degraded=True)
    down = {"factory": False}

    def factory() -> Any:
        if down["factory"]:
            raise RuntimeError("factory down")
        return base.factory()

    def restore(instance: Any, state: Any) -> None:
        raise RuntimeError("restore down")

    pool = MockPool(supervise=False)
    pool.register(dataclasses.replace(base, factory=factory, restore=restore))
    async with pool:
        async with pool.acquire("redis") as r:
            await r.set("a", 1)
        down["factory"] = True
        lease = pool.acquire("redis")
        async with lease:
            lease.discard()
        await anyio.wait_all_tasks_blocked()
        lease = pool.acquire("redis", timeout=2)
        async with lease:
            assert lease.degraded
        assert pool.stats("redis").recoveries["stub"] == 1
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_group_over_an_emergency_stub_member_is_served_degraded() -> None:
    """The member's on_acquire, run by the group lease, meets a stub (recovery's last tier
    for the member) as a plain lease's does: served as it is."""
    base = redis_service(allow_degraded=True)
    down = {"redis": False}

    def factory() -> Any:
        if down["redis"]:
            raise RuntimeError("factory down")
        return base.factory()

    def reset(double: RedisDouble) -> None:
        if down["redis"]:
            raise RuntimeError("reset down")
        double.reset()

    def restore(instance: Any, state: Any) -> None:
        raise RuntimeError("restore down")

    pool = MockPool(supervise=False)
    pool.register(dataclasses.replace(base, factory=factory, reset=reset, restore=restore))
    pool.register(ServiceSpec(name="worker", factory=lambda redis: [redis], depends_on=("redis",)))
    async with pool:
        async with pool.acquire("worker") as worker:
            await worker[0].set("a", 1)
            down["redis"] = True  # the member's reset fails at release, and all it recovers by
        await anyio.wait_all_tasks_blocked()
        lease = pool.acquire("worker", timeout=2)
        async with lease:
            assert lease.degraded
            assert isinstance(lease.members["redis"], mock.NonCallableMock)  # the stub
        assert pool.stats("redis").recoveries["stub"] == 1
        pool.check_invariants()


def test_a_fakeredis_that_the_installed_redis_py_breaks_is_refused_at_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py 8.2 broke the clients of fakeredis 2.39 and 2.40: every factory call failed in
    fakeredis's own setup, and the first acquire raised a RecoveryFailedError about a
    ``__closure__`` attribute. Refused when the spec is built, naming both versions and the fix;
    the same fakeredis on the redis-py before passes."""
    import fakeredis

    from mockpool.services import _common

    versions = {"redis": "8.2.0"}
    real = _common.installed_version

    def installed(mod: object, module: str) -> str:
        return versions.get(module) or real(mod, module)  # type: ignore[arg-type]

    monkeypatch.setattr("mockpool.services.redis.installed_version", installed)
    monkeypatch.setattr(fakeredis, "__version__", "2.40.0", raising=False)
    with pytest.raises(MissingExtraError) as caught:
        redis_service()
    message = str(caught.value)
    assert "fakeredis 2.40.0 does not work with redis-py 8.2.0" in message
    assert "pip install 'fakeredis>=2.41'" in message
    versions["redis"] = "8.1.0"
    redis_service()
    versions["redis"] = "8.2.0"
    monkeypatch.setattr(fakeredis, "__version__", "2.41.0", raising=False)
    redis_service()
