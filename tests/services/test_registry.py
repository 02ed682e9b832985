from __future__ import annotations

import pytest

from mockpool import MockPool
from mockpool.services import (
    SEED_SCHEMA,
    Dashboard,
    DeviceSessionService,
    HttpDouble,
    autospec_service,
    dashboard_service,
    redis_service,
    seed_registry,
    server_of,
    sql_service,
)

NAMES = ("plex", "youtube", "cache", "redis", "jwt", "database", "device_session", "dashboard")


def _pool() -> MockPool:
    pool = MockPool(supervise=False)
    assert seed_registry(pool, max_size=1) == NAMES
    return pool


def test_the_seed_graph_is_registered_with_its_groups() -> None:
    pool = MockPool(supervise=False)
    seed_registry(pool, max_size=4)
    assert pool.services == NAMES
    specs = {name: pool.service_pools[name].spec for name in NAMES}
    assert specs["device_session"].depends_on == ("redis", "jwt", "database")
    assert specs["dashboard"].depends_on == ("database", "cache", "plex")
    assert specs["dashboard"].max_size == 4 and specs["cache"].max_size == 8


def test_every_service_of_the_seed_graph_has_the_recovery_hooks() -> None:
    """services.md: "Every built-in has health_check, snapshot and restore hooks, ... and a
    reset hook". The dashboard group had no health check, so a dashboard over a cache whose
    server a test left down passed every check."""
    pool = MockPool(supervise=False)
    seed_registry(pool, max_size=1)
    for name in NAMES:
        spec = pool.service_pools[name].spec
        hooks = (spec.health_check, spec.snapshot, spec.restore, spec.reset)
        assert all(hook is not None for hook in hooks), name


@pytest.mark.asyncio
async def test_the_dashboards_health_check_sees_its_cache_down() -> None:
    async with _pool() as pool, pool.acquire("dashboard") as dashboard:
        spec = pool.service_pools["dashboard"].spec
        assert spec.health_check is not None and spec.health_check(dashboard)
        server_of(dashboard.cache).connected = False
        assert not spec.health_check(dashboard)


@pytest.mark.asyncio
async def test_plex_and_youtube_answer_realistic_json() -> None:
    async with _pool() as pool:
        async with pool.acquire("plex") as plex:
            assert isinstance(plex, HttpDouble)
            sections = (await plex.get("/library/sections")).json()["MediaContainer"]["Directory"]
            assert [s["title"] for s in sections] == ["Movies", "TV Shows"]
            movies = (await plex.get("/library/sections/1/all")).json()["MediaContainer"]
            assert movies["librarySectionID"] == 1 and movies["Metadata"][0]["type"] == "movie"
            assert (await plex.get("/library/sections/9/all")).status_code == 404
            assert plex.router["section"].call_count == 2  # respx routes, named
        async with pool.acquire("youtube") as youtube:
            video = (await youtube.get("/videos/dQw4w9WgXcQ")).json()
            assert video["id"] == "dQw4w9WgXcQ" and video["kind"] == "youtube#video"
            download = await youtube.post("/downloads", json={"video_id": "abc"})
            assert (download.status_code, download.json()["id"]) == (202, "dl-abc")
            assert youtube.router["download"].calls.last.request.url.path == "/downloads"


@pytest.mark.asyncio
async def test_the_dashboard_composes_database_cache_and_plex_and_is_reset_whole() -> None:
    async with _pool() as pool:
        lease = pool.acquire("dashboard")
        async with lease as dashboard:
            assert isinstance(dashboard, Dashboard)
            assert set(lease.members) == {"database", "cache", "plex"}
            summary = await dashboard.summary("u1")
            assert summary == {
                "user": "Alice",
                "plan": "plus",
                "sessions": 0,
                "sections": ["Movies", "TV Shows"],
            }
            await dashboard.summary("u2")
            assert len(dashboard.plex.calls) == 1  # the second summary read the cache
            with pytest.raises(LookupError, match="no user 'nobody'"):
                await dashboard.summary("nobody")
        async with pool.acquire("dashboard") as dashboard:
            assert await dashboard.cache.get("plex:sections") is None
            assert dashboard.plex.calls == []


@pytest.mark.asyncio
async def test_device_session_and_dashboard_share_nothing_between_leases() -> None:
    async with _pool() as pool:
        async with pool.acquire("device_session") as sessions:
            assert isinstance(sessions, DeviceSessionService)
            await sessions.create_session("u1", "phone")
            count = sessions.db.execute("select count(*) from sessions where user_id = 'u1'").fetchone()
            assert count == (1,)
        # Groups are pooled whole: the idle session group keeps its database, so the dashboard
        # is built on a second one; neither sees the other's rows.
        async with pool.acquire("dashboard") as dashboard:
            assert (await dashboard.summary("u1"))["sessions"] == 0
            assert dashboard.db is not sessions.db
        async with pool.acquire("device_session") as again:
            assert again is sessions
            assert await again.active_sessions("u1") == []
        assert pool.stats("database").created == 2
        pool.check_invariants()


@pytest.mark.asyncio
async def test_the_dashboard_also_takes_an_autospecd_plex_client() -> None:
    """The stress graph's plex is a ``create_autospec`` of a Plex client, not the HTTP API."""

    class PlexClient:
        async def library_sections(self) -> list[dict[str, str]]:
            raise NotImplementedError

    pool = MockPool(supervise=False)
    pool.register(autospec_service(PlexClient, name="plex", max_size=2))
    pool.register(redis_service("cache", decode_responses=True, max_size=2))
    pool.register(
        sql_service("database", schema=SEED_SCHEMA, seed="insert into users values ('u1', 'A', 'plus')")
    )
    pool.register(dashboard_service(max_size=1))
    async with pool:
        async with pool.acquire("dashboard") as dashboard:
            dashboard.plex.library_sections.return_value = [{"title": "Movies"}]
            assert (await dashboard.summary("u1"))["sections"] == ["Movies"]
            assert (await dashboard.summary("u1"))["sections"] == ["Movies"]  # from the cache
            dashboard.plex.library_sections.assert_awaited_once_with()
        async with pool.acquire("dashboard") as dashboard:
            assert dashboard.plex.mock_calls == [] and await dashboard.cache.get("plex:sections") is None
