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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

#: Where each public name is defined: imported from there when first asked for, so that a
#: pool of fakes of redis loads neither the SQL nor the HTTP fakes (nor ``unittest.mock``).
_LAZY = {
    "MissingExtraError": "_common",
    "aiosqlite_service": "aiosqlite",
    "AutospecDouble": "autospec",
    "autospec_service": "autospec",
    "DEVICE_SESSION_SCHEMA": "device_session",
    "DeviceSession": "device_session",
    "DeviceSessionService": "device_session",
    "SessionError": "device_session",
    "device_session_service": "device_session",
    "register_device_session": "device_session",
    "HttpDouble": "http",
    "TransportDouble": "http",
    "UnmatchedRequestError": "http",
    "http_service": "http",
    "http_transport_service": "http",
    "JwtDouble": "jwt",
    "jwt_service": "jwt",
    "RedisDouble": "redis",
    "redis_service": "redis",
    "server_of": "redis",
    "sync_redis_service": "redis",
    "Dashboard": "registry",
    "SEED_SCHEMA": "registry",
    "dashboard_service": "registry",
    "seed_registry": "registry",
    "seed_specs": "registry",
    "PooledConnection": "sql",
    "sql_service": "sql",
    "SqlAlchemyDouble": "sqlalchemy",
    "sqlalchemy_service": "sqlalchemy",
}


def __getattr__(name: str) -> object:
    # Route and RouteTable (mockpool 0.1's hand-written router) are deprecated: respx's now.
    if name in ("Route", "RouteTable"):
        from .http import _moved

        return _moved(name)
    from .._lazy import lazy_attribute

    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
