"""``device_session_service()``: the seed's DeviceSessionService, a group of redis, jwt and sql.

A small real service: it creates, validates, refreshes and revokes device sessions, keeping
each live session in redis (with a TTL), signing its tokens with the jwt service, and recording
it in the database's ``sessions`` table. As a group (``depends_on=("redis", "jwt",
"database")``) it is pooled whole: the pool builds it from one instance of each member, leases
the four as one unit, and resets each member with the member's own reset on release. Register
the database with ``sql_service(schema=DEVICE_SESSION_SCHEMA)``, or use
:func:`register_device_session`, which registers all four.

Clean by construction: the members are reset by their own resets (the pool runs them first);
the service's own attributes (``ttl``, ``prefix``, the member handles, a method a test patched
on it) are rebuilt from a copy taken at creation, with the redis client bound to the loop the
service was last bound to.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ServiceConfigError
from ._common import build_spec, fingerprint_of
from .jwt import JwtDouble, jwt_service
from .redis import client_like, loop_ref, redis_service, server_of, snapshot_server
from .sql import sql_service

if TYPE_CHECKING:
    from ..pool import MockPool
    from ..spec import ServiceSpec

__all__ = (
    "DEVICE_SESSION_SCHEMA",
    "DeviceSession",
    "DeviceSessionService",
    "SessionError",
    "device_session_service",
    "register_device_session",
)

#: The table the service writes; pass it to ``sql_service(schema=...)`` (alone or with yours).
DEVICE_SESSION_SCHEMA = """
create table if not exists sessions (
    id text primary key,
    user_id text not null,
    device_id text not null,
    jti text not null,
    created_at real not null,
    expires_at real not null,
    revoked_at real
);
create index if not exists sessions_by_user on sessions (user_id);
"""


class SessionError(Exception):
    """A session operation was refused: the token or the session is invalid, expired or revoked."""


@dataclass(frozen=True, slots=True)
class DeviceSession:
    """One device's session, as the service hands it out."""

    session_id: str
    user_id: str
    device_id: str
    token: str
    expires_at: float


class DeviceSessionService:
    """Device sessions over a redis client (live sessions, TTL), a :class:`JwtDouble` (tokens)
    and a sqlite connection (the ``sessions`` table, the durable record)."""

    # ``__dict__`` holds what a test can change; the pristine copy and the loop binding live
    # in slots, out of its reach.
    __slots__ = ("__dict__", "_bound", "_template")

    def __init__(
        self, redis: Any, jwt: JwtDouble, db: sqlite3.Connection, *, ttl: int = 3600, prefix: str = "session:"
    ) -> None:
        self.redis = redis
        self.jwt = jwt
        self.db = db
        self.ttl = ttl
        self.prefix = prefix
        #: The loop the redis client is bound to, and that client.
        self._bound: tuple[weakref.ref[asyncio.AbstractEventLoop] | None, Any] = (loop_ref(), redis)
        self._template: dict[str, Any] = dict(vars(self))

    async def create_session(self, user_id: str, device_id: str, *, ttl: int | None = None) -> DeviceSession:
        """Open a session for ``user_id`` on ``device_id``; returns it with a signed token."""
        ttl = self.ttl if ttl is None else ttl
        session_id = uuid.uuid4().hex
        now = time.time()
        token, jti = self._token(session_id, user_id, device_id, ttl)
        await self.redis.set(
            self.prefix + session_id,
            json.dumps({"user_id": user_id, "device_id": device_id, "jti": jti}),
            ex=ttl,
        )
        with self.db:
            self.db.execute(
                "insert into sessions (id, user_id, device_id, jti, created_at, expires_at) values (?, ?, ?, ?, ?, ?)",
                (session_id, user_id, device_id, jti, now, now + ttl),
            )
        return DeviceSession(session_id, user_id, device_id, token, now + ttl)

    async def validate(self, token: str) -> DeviceSession | None:
        """The session a token belongs to, or None if the token is invalid, expired or
        superseded, or the session was revoked or has expired from redis."""
        try:
            claims = self.jwt.verify(token)
        except self.jwt.token_error:  # forged, expired, revoked, another algorithm...
            return None
        session_id = claims.get("sid")
        if not isinstance(session_id, str):
            return None
        raw = await self.redis.get(self.prefix + session_id)
        if raw is None:
            return None
        live = json.loads(raw)
        if live["jti"] != claims.get("jti"):
            return None  # a token from before a refresh
        row = self.db.execute(
            "select expires_at, revoked_at from sessions where id = ?", (session_id,)
        ).fetchone()
        if row is None or row[1] is not None:
            return None
        return DeviceSession(session_id, live["user_id"], live["device_id"], token, row[0])

    async def refresh(self, token: str) -> DeviceSession:
        """A new token and a renewed TTL for a valid session; the old token stops working."""
        session = await self.validate(token)
        if session is None:
            raise SessionError("cannot refresh: the token is invalid, expired, superseded or revoked")
        self.jwt.revoke(token)
        new_token, jti = self._token(session.session_id, session.user_id, session.device_id, self.ttl)
        expires_at = time.time() + self.ttl
        await self.redis.set(
            self.prefix + session.session_id,
            json.dumps({"user_id": session.user_id, "device_id": session.device_id, "jti": jti}),
            ex=self.ttl,
        )
        with self.db:
            self.db.execute(
                "update sessions set jti = ?, expires_at = ? where id = ?",
                (jti, expires_at, session.session_id),
            )
        return DeviceSession(session.session_id, session.user_id, session.device_id, new_token, expires_at)

    async def revoke(self, session_id: str) -> bool:
        """End a session; True if it was live."""
        removed = await self.redis.delete(self.prefix + session_id)
        with self.db:
            cursor = self.db.execute(
                "update sessions set revoked_at = ? where id = ? and revoked_at is null",
                (time.time(), session_id),
            )
        return bool(removed) or cursor.rowcount > 0

    async def active_sessions(self, user_id: str) -> list[str]:
        """Ids of the user's sessions that are recorded, not revoked and still live in redis."""
        rows = self.db.execute(
            "select id from sessions where user_id = ? and revoked_at is null order by created_at", (user_id,)
        ).fetchall()
        return [sid for (sid,) in rows if await self.redis.exists(self.prefix + sid)]

    def _token(self, session_id: str, user_id: str, device_id: str, ttl: int) -> tuple[str, str]:
        jti = uuid.uuid4().hex
        token = self.jwt.sign(
            {"sub": user_id, "sid": session_id, "device": device_id, "jti": jti}, expires_in=ttl
        )
        return token, jti

    # -- hooks -------------------------------------------------------------------------------

    def bind(self) -> DeviceSessionService:
        """Give the service a redis client for the running loop (async clients are loop-bound)."""
        loop = asyncio.get_running_loop()
        bound_loop, client = self._bound
        if bound_loop is None or bound_loop() is not loop:
            client = client_like(client)
            self._bound = (weakref.ref(loop), client)
        self.redis = client
        return self

    def reset(self) -> None:
        """Rebuild the service's own attributes from the copy taken at creation."""
        state = vars(self)
        state.clear()
        state.update(self._template)
        state["redis"] = self._bound[1]

    def fingerprint(self) -> dict[str, Any]:
        """The service's own attributes (the members have their own fingerprints)."""
        return fingerprint_of(self, bound={"redis": self._bound[1]})

    def snapshot(self) -> dict[str, Any]:
        """What the members hold that the service wrote: redis, the sessions table, revocations."""
        rows = self.db.execute("select * from sessions order by id").fetchall()
        return {
            "redis": snapshot_server(server_of(self.redis)),
            "sessions": rows,
            "revoked": frozenset(self.jwt.revoked),
        }

    def restore(self, state: object) -> None:
        """Recovery tier 1: rebuild the own attributes; the data lives in the members, which
        the pool resets right after."""
        del state
        self.reset()

    def health(self) -> bool:
        self.db.execute("select count(*) from sessions").fetchone()
        return server_of(self.redis).connected and self.jwt.health()

    def __repr__(self) -> str:
        return f"<DeviceSessionService ttl={self.ttl}>"


def device_session_service(
    name: str = "device_session",
    *,
    redis: str = "redis",
    jwt: str = "jwt",
    database: str = "database",
    ttl: int = 3600,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """The DeviceSessionService as a group over the services named ``redis``, ``jwt`` and
    ``database`` (register those first; the database needs :data:`DEVICE_SESSION_SCHEMA`).

    Tests receive the :class:`DeviceSessionService`; ``lease.members`` gives the members.
    """

    def factory(redis_client: Any, jwt_double: JwtDouble, db: sqlite3.Connection) -> DeviceSessionService:
        found = db.execute(
            "select 1 from sqlite_master where type = 'table' and name = 'sessions'"
        ).fetchone()
        if found is None:
            raise ServiceConfigError(
                "depends_on",
                (redis, jwt, database),
                f"needs a 'sessions' table in {database!r}; register it with "
                "sql_service(schema=DEVICE_SESSION_SCHEMA), or use register_device_session(pool)",
                service=name,
            )
        return DeviceSessionService(redis_client, jwt_double, db, ttl=ttl)

    return build_spec(
        name,
        options,
        factory=factory,
        depends_on=(redis, jwt, database),
        bind=DeviceSessionService.bind,
        reset=DeviceSessionService.reset,
        fingerprint=DeviceSessionService.fingerprint,
        health_check=DeviceSessionService.health,
        snapshot=DeviceSessionService.snapshot,
        restore=DeviceSessionService.restore,
        min_size=min_size,
        max_size=max_size,
    )


def register_device_session(pool: MockPool, *, max_size: int = 64) -> tuple[str, ...]:
    """Register ``redis``, ``jwt``, ``database`` (with the sessions table) and ``device_session``
    on ``pool``; returns the names. Members get room for every group instance plus direct use."""
    specs = (
        redis_service(max_size=2 * max_size),
        jwt_service(max_size=2 * max_size),
        sql_service(schema=DEVICE_SESSION_SCHEMA, max_size=2 * max_size),
        device_session_service(max_size=max_size),
    )
    for spec in specs:
        pool.register(spec)
    return tuple(spec.name for spec in specs)
