"""The pytest plugin (entry point ``pytest11: mockpool``): a session-scoped, synchronous
``mockpool`` fixture that returns the pool; tests write ``async with mockpool.acquire(...)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .pool import MockPool

__all__ = ("mockpool",)


@pytest.fixture(scope="session")
def mockpool() -> Iterator[MockPool]:
    """The session's pool. Synchronous, so it works under any async runner."""
    pool = MockPool(name="pytest", track_leases=True)
    yield pool
