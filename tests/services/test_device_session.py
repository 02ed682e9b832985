from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from mockpool import MockPool, ServiceConfigError
from mockpool.services import (
    DeviceSessionService,
    SessionError,
    device_session_service,
    jwt_service,
    redis_service,
    register_device_session,
    server_of,
    sql_service,
)

from ._helpers import pool_of


def _pool() -> MockPool:
    pool = MockPool(supervise=False)
    register_device_session(pool, max_size=1)
    return pool


@pytest.mark.asyncio
async def test_sessions_work_end_to_end_through_the_group() -> None:
    async with _pool() as pool:
        lease = pool.acquire("device_session")
        async with lease as sessions:
            assert isinstance(sessions, DeviceSessionService)
            members = lease.members
            assert set(members) == {"redis", "jwt", "database"}
            assert sessions.jwt is members["jwt"] and sessions.db is members["database"]

            session = await sessions.create_session("u1", "phone")
            assert (await sessions.validate(session.token)) == session
            assert await members["redis"].ttl(f"session:{session.session_id}") > 0
            assert members["jwt"].verify(session.token)["sid"] == session.session_id

            refreshed = await sessions.refresh(session.token)
            assert refreshed.session_id == session.session_id
            assert await sessions.validate(session.token) is None  # superseded
            assert (await sessions.validate(refreshed.token)) is not None
            with pytest.raises(SessionError):
                await sessions.refresh(session.token)

            other = await sessions.create_session("u1", "laptop")
            assert await sessions.active_sessions("u1") == [session.session_id, other.session_id]
            assert await sessions.revoke(other.session_id)
            assert await sessions.validate(other.token) is None
            assert not await sessions.revoke(other.session_id)
            assert await sessions.active_sessions("u1") == [session.session_id]
            assert await sessions.validate("not.a.token") is None


@pytest.mark.asyncio
async def test_release_resets_every_member() -> None:
    async with _pool() as pool:
        lease = pool.acquire("device_session")
        async with lease as sessions:
            session = await sessions.create_session("u1", "phone")
            sessions.jwt.revoke(session.token)
            first_members = dict(lease.members)
        lease = pool.acquire("device_session")
        async with lease as again:
            assert again is sessions
            assert lease.members["jwt"] is first_members["jwt"]
            assert await again.active_sessions("u1") == []
            assert again.db.execute("select count(*) from sessions").fetchone() == (0,)
            assert len(server_of(again.redis).dbs[0]) == 0
            assert again.jwt.revoked == set()
        # The members are free again, and clean, for direct use.
        async with pool.acquire("redis") as redis:
            assert await redis.dbsize() == 0
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_database_without_the_sessions_table_is_refused() -> None:
    async with pool_of(
        redis_service(), jwt_service(), sql_service(), device_session_service(acquire_timeout=5)
    ) as pool:
        with pytest.raises(Exception, match="needs a 'sessions' table") as info:
            async with pool.acquire("device_session"):
                pass
        cause = info.value if isinstance(info.value, ServiceConfigError) else info.value.__cause__
        assert isinstance(cause, ServiceConfigError)


def test_the_group_gets_a_redis_client_for_each_event_loop() -> None:
    pool = _pool()
    tokens: list[str] = []

    async def one_test() -> None:
        async with pool.acquire("device_session") as sessions:
            session = await sessions.create_session("u1", "phone")
            tokens.append(session.token)
            assert await sessions.validate(session.token) is not None
            # blpop waits on a future of the client's loop: a client from another loop fails.
            assert await sessions.redis.blpop(["nothing"], timeout=0.01) is None

    asyncio.run(one_test())
    asyncio.run(one_test())
    assert len(tokens) == 2
    assert pool.stats("device_session").created == 1


@pytest.mark.parametrize("through", ["member", "group"])
def test_a_consumer_started_as_a_group_lease_ends_does_not_take_the_next_group_leases_push(
    through: str,
) -> None:
    """A BLPOP the last test started on its last line, on the group's redis member (or on the
    group's own client of it), reaches the server after the release's reset: the next lease
    of the group unblocks it (it returns empty) before the test runs, as a redis lease does."""
    pool = _pool()

    def client(lease: Any, sessions: DeviceSessionService) -> Any:
        return lease.members["redis"] if through == "member" else sessions.redis

    async def two_tests() -> tuple[Any, list[bytes]]:
        lease = pool.acquire("device_session")
        async with lease as sessions:
            late = asyncio.ensure_future(client(lease, sessions).blpop(["jobs"], timeout=5))
        await anyio.wait_all_tasks_blocked()  # the late BLPOP blocks now, after the reset
        lease = pool.acquire("device_session")
        async with lease as sessions:
            redis = client(lease, sessions)
            await redis.rpush("jobs", "job-1")
            await anyio.wait_all_tasks_blocked()  # a BLPOP still blocked would take it now
            mine = await redis.lrange("jobs", 0, -1)
        return await late, mine

    late, mine = asyncio.run(two_tests())
    assert late is None
    assert mine == [b"job-1"]
    assert pool.stats("device_session").created == 1  # the same group instance both times
    pool.check_invariants()
