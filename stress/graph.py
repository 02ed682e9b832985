"""The service graph the stress suite runs against: the seed's, with production-sized doubles.

The names and the edges are the seed's (:func:`mockpool.services.seed_specs`); the doubles are
the ones DESIGN prices, as a real suite of that application would build them for each test:

    plex, youtube      ``create_autospec`` of a 60-method client (:mod:`stress.clients`)
    cache              fakeredis with 200 seeded keys (the Plex metadata cache)
    redis, jwt         fakeredis; PyJWT (HS256)
    database           SQLite, 4 tables: users, sessions, and a Plex library of 1,000 items
                       with its watch history
    device_session     group: redis + jwt + database
    dashboard          group: database + cache + plex

Sizes: the defaults, as a new user writes the specs. The sizing controller
(:mod:`mockpool.sizing`) finds that the tests, which share one event loop and are CPU-bound,
run no sooner on a second instance of a service, so it makes a few instances instead of one
per waiter. ``stress_specs(max_size=N)`` sets fixed sizes instead (groups ``N``, members room
for each group built on them plus as many direct leases), warmed before the first test.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from mockpool import MockPool, ServiceSpec
from mockpool.services import (
    SEED_SCHEMA,
    autospec_service,
    dashboard_service,
    device_session_service,
    jwt_service,
    redis_service,
    sql_service,
)
from mockpool.services.registry import SEED_USERS

from .clients import PlexService, YouTubeService

__all__ = (
    "CACHE_KEYS",
    "GROUP_MAX_SIZE",
    "LIBRARY_ITEMS",
    "cache_seed",
    "register_graph",
    "stress_specs",
)

#: ``max_size`` of the groups (device_session, dashboard) with fixed sizes (``--sizes``).
GROUP_MAX_SIZE = 1
#: Rows in the database's ``library_items`` table.
LIBRARY_ITEMS = 1000
#: Keys seeded into the cache (``plex:item:<n>``).
CACHE_KEYS = 200

LIBRARY_SCHEMA = """
create table library_items (
    rating_key integer primary key,
    section text not null,
    title text not null,
    year integer not null,
    rating real not null,
    added_at real not null
);
create index library_by_section on library_items (section, year);
create table watch_history (
    user_id text not null,
    rating_key integer not null references library_items (rating_key),
    watched_at real not null
);
"""


def _library_row(n: int) -> tuple[int, str, str, int, float, float]:
    section = "1" if n % 3 else "2"
    return (n, section, f"Title {n:04d}", 1980 + n % 45, (n * 37 % 100) / 10, 1.7e9 + n * 60)


def _seed_database(conn: sqlite3.Connection) -> None:
    conn.executemany("insert into users (id, name, plan) values (?, ?, ?)", SEED_USERS)
    conn.executemany(
        "insert into library_items values (?, ?, ?, ?, ?, ?)", map(_library_row, range(1, LIBRARY_ITEMS + 1))
    )


def cache_seed() -> dict[str, str]:
    """The cache's seeded keys: Plex metadata of the first :data:`CACHE_KEYS` library items."""
    return {
        f"plex:item:{n}": json.dumps({"ratingKey": n, "section": s, "title": t, "year": y})
        for n, s, t, y, _, _ in map(_library_row, range(1, CACHE_KEYS + 1))
    }


def stress_specs(
    *, max_size: int | None = None, wrap: Callable[[ServiceSpec], ServiceSpec] | None = None
) -> list[ServiceSpec]:
    """The graph, members first, with default sizes, or (``max_size``) fixed ones: groups
    ``max_size``, members room for their groups and as many direct leases, each warmed to its
    size (``min_size = max_size``); ``wrap`` (fault injection) is applied to each spec."""

    def sized(n: int) -> dict[str, Any]:
        return {} if max_size is None else {"min_size": n * max_size, "max_size": n * max_size}

    specs = [
        autospec_service(PlexService, name="plex", **sized(2)),
        autospec_service(YouTubeService, name="youtube", **sized(2)),
        redis_service("cache", decode_responses=True, seed=cache_seed(), **sized(2)),
        redis_service("redis", **sized(2)),
        jwt_service("jwt", **sized(2)),
        sql_service("database", schema=SEED_SCHEMA + LIBRARY_SCHEMA, seed=_seed_database, **sized(3)),
        device_session_service(**sized(1)),
        dashboard_service(**sized(1)),
    ]
    return [wrap(spec) for spec in specs] if wrap is not None else specs


def register_graph(pool: MockPool, specs: list[ServiceSpec]) -> tuple[str, ...]:
    for spec in specs:
        pool.register(spec)
    return tuple(spec.name for spec in specs)
