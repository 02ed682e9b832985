"""The two ways to give each test a database: the classic per-test schema fixture and mockpool.

Both conftests (``before/``, ``after/``) and ``benchmarks/examples.py`` use these, so the
benchmark measures exactly what the suites run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from mockpool import MockPool, ServiceSpec
from mockpool.services import sqlalchemy_service

from .model import SEED, Base

__all__ = ("SERVICE", "enable_foreign_keys", "fresh_session", "pooled_session", "shop_db_service")

#: The service name the ``after`` suite registers.
SERVICE = "shop_db"


def enable_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite enforces foreign keys (and ``ON DELETE CASCADE``) only when asked, per connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


# -- before: a new engine, create_all and the seed for every test ------------------------------


@asynccontextmanager
async def fresh_session() -> AsyncIterator[AsyncSession]:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    event.listen(engine.sync_engine, "connect", enable_foreign_keys)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            for table, rows in SEED.items():
                await conn.execute(Base.metadata.tables[table].insert(), rows)
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            yield session
    finally:
        await engine.dispose()


# -- after: a pooled session over a template built once -----------------------------------------


def shop_db_service(**options: Any) -> ServiceSpec:
    """``create_all`` and the seed run once, into the template; each lease is reset from it.
    ``pragmas=`` does what the classic fixture's ``connect`` listener does, on the pooled
    connection, and again at every reset."""
    return sqlalchemy_service(
        SERVICE,
        metadata=Base.metadata,
        seed=SEED,
        session_options={"expire_on_commit": False},
        pragmas={"foreign_keys": "ON"},
        **options,
    )


@asynccontextmanager
async def pooled_session(pool: MockPool) -> AsyncIterator[AsyncSession]:
    async with pool.acquire(SERVICE) as session:
        yield session
