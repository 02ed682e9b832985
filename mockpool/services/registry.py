"""The seed's service graph as an example registry (also what the stress suite runs against).

::

    plex, youtube      http_service (respx routes), answering realistic JSON
    cache              redis_service named "cache"
    redis, jwt         redis_service, jwt_service
    database           sql_service with the sessions and users tables
    device_session     group: redis + jwt + database
    dashboard          group: database + cache + plex
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import weakref
from typing import TYPE_CHECKING, Any

from ._common import build_spec, fingerprint_of
from .device_session import DEVICE_SESSION_SCHEMA, device_session_service
from .http import HttpDouble, http_service
from .jwt import jwt_service
from .redis import client_like, loop_ref, redis_service, server_of, snapshot_server
from .sql import sql_service

if TYPE_CHECKING:
    import httpx
    import respx

    from ..pool import MockPool
    from ..spec import ServiceSpec

__all__ = ("SEED_SCHEMA", "SEED_USERS", "Dashboard", "dashboard_service", "seed_registry", "seed_specs")

SEED_SCHEMA = (
    DEVICE_SESSION_SCHEMA
    + """
create table if not exists users (
    id text primary key,
    name text not null,
    plan text not null default 'free'
);
"""
)
SEED_USERS = (("u1", "Alice", "plus"), ("u2", "Bob", "free"), ("u3", "Chandra", "free"))

PLEX_SECTIONS = {
    "MediaContainer": {
        "size": 2,
        "allowSync": False,
        "title1": "Plex Library",
        "Directory": [
            {"key": "1", "type": "movie", "title": "Movies", "agent": "tv.plex.agents.movie"},
            {"key": "2", "type": "show", "title": "TV Shows", "agent": "tv.plex.agents.series"},
        ],
    }
}
PLEX_IDENTITY = {
    "MediaContainer": {"size": 0, "machineIdentifier": "mockpool-plex-0001", "version": "1.40.2"}
}


def _plex_routes(router: respx.Router) -> None:
    """Plex's HTTP API, declared with respx's API (named routes: ``plex.router["section"]``)."""
    router.get("/library/sections", name="sections").respond(json=PLEX_SECTIONS)
    router.get(path__regex=r"^/library/sections/(?P<key>[^/]+)/all$", name="section").mock(
        side_effect=_plex_section
    )
    router.get("/identity", name="identity").respond(json=PLEX_IDENTITY)


def _plex_section(request: httpx.Request, key: str) -> httpx.Response:
    import httpx

    if key not in ("1", "2"):
        return httpx.Response(404, json={"errors": [{"code": 1001, "message": f"section {key} not found"}]})
    kind = "movie" if key == "1" else "show"
    return httpx.Response(
        200,
        json={
            "MediaContainer": {
                "size": 2,
                "librarySectionID": int(key),
                "Metadata": [
                    {"ratingKey": f"{key}01", "type": kind, "title": f"{kind.title()} One", "year": 2021},
                    {"ratingKey": f"{key}02", "type": kind, "title": f"{kind.title()} Two", "year": 2023},
                ],
            }
        },
    )


def _youtube_routes(router: respx.Router) -> None:
    """YouTube's HTTP API, declared with respx's API."""
    router.get(path__regex=r"^/videos/(?P<video_id>[^/]+)$", name="video").mock(side_effect=_youtube_video)
    router.post("/downloads", name="download").mock(side_effect=_youtube_download)


def _youtube_video(request: httpx.Request, video_id: str) -> httpx.Response:
    import httpx

    return httpx.Response(
        200,
        json={
            "kind": "youtube#video",
            "id": video_id,
            "snippet": {
                "title": f"Video {video_id}",
                "channelTitle": "mockpool",
                "publishedAt": "2024-01-01T00:00:00Z",
            },
            "contentDetails": {"duration": "PT3M33S", "definition": "hd"},
            "statistics": {"viewCount": "1024", "likeCount": "64"},
        },
    )


def _youtube_download(request: httpx.Request) -> httpx.Response:
    import httpx

    body = json.loads(request.content or b"{}")
    return httpx.Response(202, json={"id": f"dl-{body.get('video_id', 'unknown')}", "status": "queued"})


class Dashboard:
    """The seed's dashboard controller: a user's overview from the database, the Plex library
    (cached in redis for ``cache_ttl`` seconds) and the user's live sessions.

    ``plex`` is the Plex server's HTTP API (an :class:`HttpDouble`), or a Plex client with an
    async ``library_sections()`` (an autospec'd ``PlexService``, as the stress suite's graph has).

    Clean by construction: the members are reset by their own resets; the dashboard's own
    attributes (``cache_ttl``, the member handles, a method a test patched on it) are rebuilt
    from a copy taken at creation, with the cache client bound to the loop it was last bound to.
    """

    # ``__dict__`` holds what a test can change; the pristine copy and the loop binding live
    # in slots, out of its reach.
    __slots__ = ("__dict__", "_bound", "_template")

    def __init__(self, db: sqlite3.Connection, cache: Any, plex: Any, *, cache_ttl: int = 60) -> None:
        self.db = db
        self.cache = cache
        self.plex = plex
        self.cache_ttl = cache_ttl
        #: The loop the cache client is bound to, and that client.
        self._bound: tuple[weakref.ref[asyncio.AbstractEventLoop] | None, Any] = (loop_ref(), cache)
        self._template: dict[str, Any] = dict(vars(self))

    async def library_sections(self) -> list[dict[str, Any]]:
        """Plex's library sections, from the cache when there."""
        cached = await self.cache.get("plex:sections")
        if cached is not None:
            sections: list[dict[str, Any]] = json.loads(cached)
            return sections
        if isinstance(self.plex, HttpDouble):
            response = await self.plex.get("/library/sections")
            response.raise_for_status()
            sections = response.json()["MediaContainer"]["Directory"]
        else:
            sections = await self.plex.library_sections()
        await self.cache.set("plex:sections", json.dumps(sections), ex=self.cache_ttl)
        return sections

    async def summary(self, user_id: str) -> dict[str, Any]:
        """Name, plan, open session count and library section titles of a user."""
        row = self.db.execute("select name, plan from users where id = ?", (user_id,)).fetchone()
        if row is None:
            raise LookupError(f"no user {user_id!r}")
        (sessions,) = self.db.execute(
            "select count(*) from sessions where user_id = ? and revoked_at is null", (user_id,)
        ).fetchone()
        sections = await self.library_sections()
        return {
            "user": row[0],
            "plan": row[1],
            "sessions": sessions,
            "sections": [s["title"] for s in sections],
        }

    def bind(self) -> Dashboard:
        """Give the dashboard a cache client for the running loop."""
        loop = asyncio.get_running_loop()
        bound_loop, client = self._bound
        if bound_loop is None or bound_loop() is not loop:
            client = client_like(client)
            self._bound = (weakref.ref(loop), client)
        self.cache = client
        return self

    def reset(self) -> None:
        """Rebuild the dashboard's own attributes from the copy taken at creation."""
        state = vars(self)
        state.clear()
        state.update(self._template)
        state["cache"] = self._bound[1]

    def fingerprint(self) -> dict[str, Any]:
        """The dashboard's own attributes (the members have their own fingerprints)."""
        return fingerprint_of(self, bound={"cache": self._bound[1]})

    def snapshot(self) -> dict[str, Any]:
        return {
            "cache": snapshot_server(server_of(self.cache)),
            "users": self.db.execute("select * from users order by id").fetchall(),
            "plex_calls": len(self.plex.calls if isinstance(self.plex, HttpDouble) else self.plex.mock_calls),
        }

    def restore(self, state: object) -> None:
        """Recovery tier 1: rebuild the own attributes; the data lives in the members, which
        the pool resets right after."""
        del state
        self.reset()

    def health(self) -> bool:
        """Its database answers and its cache's server is up (an outage a test left is not)."""
        self.db.execute("select count(*) from users").fetchone()
        return bool(server_of(self._bound[1]).connected)

    def __repr__(self) -> str:
        return "<Dashboard>"


def dashboard_service(
    name: str = "dashboard",
    *,
    database: str = "database",
    cache: str = "cache",
    plex: str = "plex",
    cache_ttl: int = 60,
    **options: Any,
) -> ServiceSpec:
    """The dashboard as a group over ``database`` (with ``users`` and ``sessions``), ``cache``
    (a redis) and ``plex`` (an http service, or an autospec'd Plex client)."""

    def factory(db: sqlite3.Connection, cache_client: Any, plex_double: Any) -> Dashboard:
        return Dashboard(db, cache_client, plex_double, cache_ttl=cache_ttl)

    return build_spec(
        name,
        options,
        factory=factory,
        depends_on=(database, cache, plex),
        bind=Dashboard.bind,
        reset=Dashboard.reset,
        health_check=Dashboard.health,
        fingerprint=Dashboard.fingerprint,
        snapshot=Dashboard.snapshot,
        restore=Dashboard.restore,
    )


def _seed_users(conn: sqlite3.Connection) -> None:
    conn.executemany("insert into users (id, name, plan) values (?, ?, ?)", SEED_USERS)


def seed_specs(*, max_size: int = 64, min_size: int = 0) -> list[ServiceSpec]:
    """The seed's service graph as specs, members before the groups built on them.

    Each member gets twice ``max_size``: room for every group instance and as many direct leases.
    """
    members: dict[str, Any] = {"max_size": 2 * max_size, "min_size": min_size}
    return [
        http_service("plex", routes=_plex_routes, base_url="http://plex.test:32400", **members),
        http_service("youtube", routes=_youtube_routes, base_url="https://youtube.test", **members),
        redis_service("cache", decode_responses=True, **members),
        redis_service("redis", **members),
        jwt_service("jwt", **members),
        sql_service("database", schema=SEED_SCHEMA, seed=_seed_users, **members),
        device_session_service(max_size=max_size, min_size=min_size),
        dashboard_service(max_size=max_size, min_size=min_size),
    ]


def seed_registry(pool: MockPool, *, max_size: int = 64, min_size: int = 0) -> tuple[str, ...]:
    """Register the seed's service graph on ``pool`` (see :func:`seed_specs`); returns the names."""
    specs = seed_specs(max_size=max_size, min_size=min_size)
    for spec in specs:
        pool.register(spec)
    return tuple(spec.name for spec in specs)
