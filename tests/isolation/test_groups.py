"""Dirtying battery of the group fakes (issue 12): device_session (redis + jwt + database) and
the dashboard (database + cache + plex). Their own attributes are rebuilt at each reset; what a
test leaves in a member through the group is reset by the member and seen by its fingerprint."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any
from unittest import mock

import jwt
import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.services import (
    DEVICE_SESSION_SCHEMA,
    SEED_SCHEMA,
    Dashboard,
    DeviceSessionService,
    autospec_service,
    dashboard_service,
    device_session_service,
    jwt_service,
    redis_service,
    server_of,
    sql_service,
)
from mockpool.testing import Dirtier, check_isolation


def _session_members() -> list[ServiceSpec]:
    return [redis_service(), jwt_service(), sql_service(schema=DEVICE_SESSION_SCHEMA)]


async def _sessions_pristine(sessions: DeviceSessionService) -> None:
    assert (sessions.ttl, sessions.prefix) == (3600, "session:")
    assert await sessions.active_sessions("u1") == []
    assert await sessions.redis.dbsize() == 0


def _ttl(sessions: DeviceSessionService) -> None:
    sessions.ttl = 1


def _prefix(sessions: DeviceSessionService) -> None:
    sessions.prefix = "other:"


def _db_replaced(sessions: DeviceSessionService) -> None:
    sessions.db = sqlite3.connect(":memory:")


def _db_is_the_member(sessions: DeviceSessionService) -> None:
    assert sessions.db.execute("select count(*) from sessions").fetchone() == (0,)


def _patched(sessions: Any) -> None:
    async def validate(token: str) -> None:
        return None

    sessions.validate = validate


async def _validates_again(sessions: DeviceSessionService) -> None:
    assert "validate" not in vars(sessions)
    session = await sessions.create_session("u1", "phone")
    assert await sessions.validate(session.token) == session
    await sessions.revoke(session.session_id)


async def _session_created(sessions: DeviceSessionService) -> None:
    await sessions.create_session("u1", "phone")


def _jwt_leeway(sessions: DeviceSessionService) -> None:
    sessions.jwt.leeway = 3600


def _expired_rejected(sessions: DeviceSessionService) -> None:
    with pytest.raises(jwt.ExpiredSignatureError):
        sessions.jwt.verify(sessions.jwt.sign({"sub": "u1"}, expires_in=-60))


def _redis_callback(sessions: DeviceSessionService) -> None:
    sessions.redis.set_response_callback("GET", lambda response, **options: None)


async def _redis_acl(sessions: DeviceSessionService) -> None:
    await sessions.redis.acl_setuser("mallory", enabled=True, nopass=True)


async def _acl_gone(sessions: DeviceSessionService) -> None:
    assert await sessions.redis.acl_users() == ["default"]


def _redis_config(sessions: DeviceSessionService) -> None:
    server_of(sessions.redis).config[b"notify-keyspace-events"] = b"KEA"


SESSION_DIRTIERS = [
    Dirtier("ttl", _ttl, gone=lambda s: s.ttl == 3600),
    Dirtier("prefix", _prefix, gone=lambda s: s.prefix == "session:"),
    Dirtier("database handle replaced", _db_replaced, gone=_db_is_the_member),
    Dirtier("method patched on the service", _patched, gone=_validates_again),
    Dirtier("a session (redis, jwt, database)", _session_created),
    Dirtier("jwt leeway through the group", _jwt_leeway, gone=_expired_rejected),
    Dirtier("redis response callback through the group", _redis_callback, gone=_validates_again),
    Dirtier("redis ACL through the group", _redis_acl, gone=_acl_gone),
    Dirtier("redis config through the group", _redis_config, gone=lambda s: server_of(s.redis).config == {}),
]
OWN_SESSION_DIRTIERS = SESSION_DIRTIERS[:4]


class PlexClient:
    async def library_sections(self) -> list[dict[str, str]]:
        raise NotImplementedError


def _dashboard_members() -> list[ServiceSpec]:
    return [
        sql_service("database", schema=SEED_SCHEMA, seed="insert into users values ('u1', 'Alice', 'plus')"),
        redis_service("cache", decode_responses=True),
        autospec_service(PlexClient, name="plex"),
    ]


async def _dashboard_pristine(dashboard: Dashboard) -> None:
    assert dashboard.cache_ttl == 60
    assert await dashboard.cache.get("plex:sections") is None
    assert dashboard.plex.mock_calls == []
    assert dashboard.db.execute("select name from users").fetchall() == [("Alice",)]


async def _summary(dashboard: Dashboard) -> None:
    dashboard.plex.library_sections.return_value = [{"title": "Movies"}]
    assert (await dashboard.summary("u1"))["sections"] == ["Movies"]


async def _summary_is_fresh(dashboard: Dashboard) -> None:
    assert await dashboard.cache.get("plex:sections") is None
    assert dashboard.plex.library_sections.return_value != [{"title": "Movies"}]


def _cache_ttl(dashboard: Dashboard) -> None:
    dashboard.cache_ttl = 0


def _plex_replaced(dashboard: Dashboard) -> None:
    dashboard.plex = mock.AsyncMock()


def _plex_is_the_member(dashboard: Dashboard) -> None:
    with pytest.raises(AttributeError):
        _ = dashboard.plex.not_a_plex_method  # the autospec'd member checks names


def _property_on_plex_type(dashboard: Dashboard) -> None:
    type(dashboard.plex).token = mock.PropertyMock(return_value="leaked")


def _no_property(dashboard: Dashboard) -> None:
    assert "token" not in vars(type(dashboard.plex))


async def _cache_decoding(dashboard: Dashboard) -> None:
    dashboard.cache.connection_pool.connection_kwargs["decode_responses"] = False
    await dashboard.cache.connection_pool.disconnect()


async def _cache_decodes(dashboard: Dashboard) -> None:
    await dashboard.cache.set("probe", "v")
    assert await dashboard.cache.get("probe") == "v"
    await dashboard.cache.delete("probe")


def _summary_patched(dashboard: Any) -> None:
    dashboard.summary = None


DASHBOARD_DIRTIERS = [
    Dirtier("cache_ttl", _cache_ttl, gone=lambda d: d.cache_ttl == 60),
    Dirtier("plex handle replaced", _plex_replaced, gone=_plex_is_the_member),
    Dirtier("method patched on the dashboard", _summary_patched, gone=lambda d: "summary" not in vars(d)),
    Dirtier("summary (cache data, plex configured and called)", _summary, gone=_summary_is_fresh),
    Dirtier("PropertyMock on type(plex) through the group", _property_on_plex_type, gone=_no_property),
    Dirtier("cache decode_responses through the group", _cache_decoding, gone=_cache_decodes),
]
OWN_DASHBOARD_DIRTIERS = DASHBOARD_DIRTIERS[:3]


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
async def test_device_session_every_case_is_reset_and_seen(isolation_verify: bool) -> None:
    report = await check_isolation(
        device_session_service(),
        SESSION_DIRTIERS,
        pristine=_sessions_pristine,
        members=_session_members(),
        isolation_verify=isolation_verify,
        strict=True,
    )
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
async def test_dashboard_every_case_is_reset_and_seen(isolation_verify: bool) -> None:
    report = await check_isolation(
        dashboard_service(),
        DASHBOARD_DIRTIERS,
        pristine=_dashboard_pristine,
        members=_dashboard_members(),
        isolation_verify=isolation_verify,
        strict=True,
    )
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
async def test_groups_under_many_concurrent_leases_stay_isolated() -> None:
    await check_isolation(
        device_session_service(),
        SESSION_DIRTIERS,
        pristine=_sessions_pristine,
        members=_session_members(),
        strict=True,
        tasks=40,
        instances=3,
    )
    await check_isolation(
        dashboard_service(),
        DASHBOARD_DIRTIERS,
        pristine=_dashboard_pristine,
        members=_dashboard_members(),
        strict=True,
        tasks=40,
        instances=3,
    )


@pytest.mark.asyncio
async def test_without_the_group_reset_isolation_verify_catches_its_own_attributes() -> None:
    """Member state has its members' batteries; here the group's own reset is left out."""
    cases: list[tuple[ServiceSpec, list[Dirtier], Any, list[ServiceSpec]]] = [
        (device_session_service(), OWN_SESSION_DIRTIERS, _sessions_pristine, _session_members()),
        (dashboard_service(), OWN_DASHBOARD_DIRTIERS, _dashboard_pristine, _dashboard_members()),
    ]
    for spec, dirtiers, pristine, members in cases:
        weakened = dataclasses.replace(spec, reset=None)
        for dirtier in dirtiers:
            report = await check_isolation(
                weakened, [dirtier], pristine=pristine, members=members, isolation_verify=True
            )
            assert [case.outcome for case in report.cases] == ["caught"], report


def test_a_member_the_group_moved_to_another_loop_is_bound_again_when_leased_directly() -> None:
    """The group's bind moves its redis member's client to each new loop. The member's entry
    still said it was bound to the loop the group was built in, so a direct lease there (an
    app thread's loop, as Starlette's TestClient runs) got the client whose sockets belonged
    to the other loop: a BLPOP woken by a push never woke up."""
    import asyncio
    import threading

    from mockpool import MockPool

    pool = MockPool()
    pool.register(redis_service(max_size=1))
    pool.register(jwt_service(max_size=1))
    pool.register(sql_service(schema=DEVICE_SESSION_SCHEMA, max_size=1))
    pool.register(device_session_service(max_size=1))

    async def group_lease() -> None:
        async with pool.acquire("device_session") as sessions:
            await sessions.create_session("u1", "phone")

    async def consume() -> Any:
        async with pool.acquire("redis") as r:
            consumer = asyncio.ensure_future(r.blpop(["jobs"], timeout=2))
            await asyncio.sleep(0)
            await r.rpush("jobs", "job-1")
            return await asyncio.wait_for(consumer, 5)

    app_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=app_loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(group_lease(), app_loop).result(10)  # built in the app's loop
        asyncio.run(group_lease())  # a test in a loop of its own leases the group
        got = asyncio.run_coroutine_threadsafe(consume(), app_loop).result(10)  # reclaims the group
    finally:
        app_loop.call_soon_threadsafe(app_loop.stop)
        thread.join(5)
        app_loop.close()
    assert got == (b"jobs", b"job-1")
    pool.check_invariants()


# == a group built on a group: members at every depth are reset =================================


class _Store:
    """The innermost member: data a test writes, reset by its service."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}


class _Layer:
    """A group over one member, with notes of its own (its reset clears them)."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self.notes: list[str] = []


def _two_level_pool(*, isolation_verify: bool, store_reset: Any = None) -> MockPool:
    """``store``, the group ``session`` over it and ``app`` over ``session``, one instance
    each: every lease is served the instance the last one dirtied."""
    pool = MockPool(supervise=False, isolation_verify=isolation_verify, default_timeout=5.0)

    def notes_clear(layer: _Layer) -> None:
        layer.notes.clear()

    def notes(layer: _Layer) -> list[str]:
        return list(layer.notes)

    pool.register(
        ServiceSpec(
            name="store",
            factory=_Store,
            reset=store_reset or (lambda s: s.data.clear()),
            fingerprint=lambda s: dict(s.data),
            max_size=1,
        )
    )
    for name, member in (("session", "store"), ("app", "session")):
        pool.register(
            ServiceSpec(
                name=name,
                factory=_Layer,
                depends_on=(member,),
                reset=notes_clear,
                fingerprint=notes,
                max_size=1,
            )
        )
    return pool


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
@pytest.mark.parametrize("target", ["app", "session", "store"])
async def test_dirt_through_a_group_of_a_group_is_reset_at_every_depth(
    target: str, isolation_verify: bool
) -> None:
    """Dirt left through ``app`` in its member ``session`` and in ``session``'s member
    ``store``: the next lease of ``app``, of ``session`` or of ``store`` gets the same
    instances, pristine. (A release reset ``app``'s direct members only: ``store`` kept the
    data for the next test of ``app``; and a lease of ``store`` waited for its timeout, the
    idle ``app`` keeping the ``session`` that kept it.)"""
    pool = _two_level_pool(isolation_verify=isolation_verify)
    async with pool:
        async with pool.acquire("app") as app:
            store = app.member.member
            app.notes.append("app")
            app.member.notes.append("session")
            store.data["x"] = 1
        async with pool.acquire(target) as handle:
            # The same instance at each depth, pristine.
            got = {"app": lambda h: h.member.member, "session": lambda h: h.member, "store": lambda h: h}
            assert got[target](handle) is store
            assert store.data == {}
            if target != "store":
                assert handle.notes == []
            if target == "app":
                assert handle.member.notes == []
        for name in ("app", "session", "store"):
            assert pool.stats(name).isolation_failures == 0
        pool.check_invariants()


@pytest.mark.asyncio
async def test_isolation_verify_sees_what_an_innermost_members_reset_left() -> None:
    """``store``'s reset misses a key: verifying ``app`` compares ``store``'s fingerprint
    too and names where the difference is; the recovery rebuilds ``store`` (its reset still
    leaves the key) and each group over it."""

    def leaky_reset(store: _Store) -> None:
        store.data.pop("x", None)  # "y" stays

    pool = _two_level_pool(isolation_verify=True, store_reset=leaky_reset)
    async with pool:
        async with pool.acquire("app") as app:
            app.member.member.data.update(x=1, y=2)
        async with pool.acquire("app") as again:
            assert again.member.member.data == {}
        assert pool.stats("app").isolation_failures == 1
        found = pool.service_pools["app"].last_isolation_failure or ""
        assert found.startswith("member 'store' of 'session': "), found
        # Rebuilt at every depth: the store's factory, then each group over the new one.
        assert [pool.stats(n).recoveries["factory"] for n in ("store", "session", "app")] == [1, 1, 1]
        pool.check_invariants()
