"""The same fixture on mockpool: the schema and seed are built once, each test leases a session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession

from mockpool import MockPool

from ..db import SERVICE, pooled_session, shop_db_service


def pytest_mockpool_register(pool: MockPool, config: pytest.Config) -> None:
    if SERVICE not in pool.services:
        pool.register(shop_db_service())


@pytest_asyncio.fixture
async def session(mockpool: MockPool) -> AsyncIterator[AsyncSession]:
    async with pooled_session(mockpool) as session:
        yield session
