"""The classic fixture: a new engine, ``create_all`` of 17 tables and the seed, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import fresh_session


@pytest_asyncio.fixture
async def session() -> AsyncIterator[AsyncSession]:
    async with fresh_session() as session:
        yield session
