"""Shared helpers of the built-in fake tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mockpool import MockPool, ServiceSpec


@asynccontextmanager
async def pool_of(*specs: ServiceSpec) -> AsyncIterator[MockPool]:
    """A started pool with ``specs`` registered (supervisors off: these tests drive it)."""
    pool = MockPool(supervise=False)
    for spec in specs:
        pool.register(spec)
    async with pool:
        yield pool
        pool.check_invariants()
