"""Built-in fakes: functions that return a :class:`~mockpool.ServiceSpec`.

Each takes ``name=``, ``min_size=``, ``max_size=`` and any other ``ServiceSpec`` field, and
imports its optional library (an extra) only when called::

    pool.register(redis_service(seed={"greeting": "hello"}))     # pip install 'mockpool[redis]'
    pool.register(sql_service(schema="create table t (x)"))      # stdlib sqlite3
    pool.register(jwt_service())                                  # pip install 'mockpool[jwt]'
    pool.register(http_service(routes={"GET /ping": {"ok": True}}))  # pip install 'mockpool[http]'
    pool.register(sqlalchemy_service(metadata=Base.metadata))     # pip install 'mockpool[sqlalchemy]'
    pool.register(aiosqlite_service(schema="create table t (x)"))  # pip install 'mockpool[aiosqlite]'
    pool.register(autospec_service(PaymentClient))
    register_device_session(pool)                                 # redis + jwt + database + group
"""

from __future__ import annotations

from ._common import MissingExtraError
from .aiosqlite import aiosqlite_service
from .autospec import AutospecDouble, autospec_service
from .device_session import (
    DEVICE_SESSION_SCHEMA,
    DeviceSession,
    DeviceSessionService,
    SessionError,
    device_session_service,
    register_device_session,
)
from .http import (
    HttpDouble,
    TransportDouble,
    UnmatchedRequestError,
    http_service,
    http_transport_service,
)
from .jwt import JwtDouble, jwt_service
from .redis import RedisDouble, redis_service, server_of, sync_redis_service
from .registry import SEED_SCHEMA, Dashboard, dashboard_service, seed_registry, seed_specs
from .sql import PooledConnection, sql_service
from .sqlalchemy import SqlAlchemyDouble, sqlalchemy_service

__all__ = (
    "DEVICE_SESSION_SCHEMA",
    "SEED_SCHEMA",
    "AutospecDouble",
    "Dashboard",
    "DeviceSession",
    "DeviceSessionService",
    "HttpDouble",
    "JwtDouble",
    "MissingExtraError",
    "PooledConnection",
    "RedisDouble",
    "SessionError",
    "SqlAlchemyDouble",
    "TransportDouble",
    "UnmatchedRequestError",
    "aiosqlite_service",
    "autospec_service",
    "dashboard_service",
    "device_session_service",
    "http_service",
    "http_transport_service",
    "jwt_service",
    "redis_service",
    "register_device_session",
    "seed_registry",
    "seed_specs",
    "server_of",
    "sql_service",
    "sqlalchemy_service",
    "sync_redis_service",
)


def __getattr__(name: str) -> object:
    # Route and RouteTable (mockpool 0.1's hand-written router) are deprecated: respx's now.
    if name in ("Route", "RouteTable"):
        from .http import _moved

        return _moved(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
