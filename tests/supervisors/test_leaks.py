"""Leak detection: a lease held past ``leak_threshold`` is logged once, with where it was
acquired, and counted."""

from __future__ import annotations

import logging
import sys

import anyio
import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock


async def _settle() -> None:
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()


@pytest.mark.asyncio
async def test_a_long_lease_is_logged_once_with_its_place_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock, leak_threshold=10.0)
    pool.register(ServiceSpec(name="svc", factory=dict))
    caplog.set_level(logging.WARNING, logger="mockpool")
    async with pool:
        async with pool.acquire("svc"):  # the line the report must name
            line = sys._getframe().f_lineno - 1
            clock.advance(5.0)
            await _settle()
            assert pool.stats("svc").leaks == 0  # not yet past the threshold
            clock.advance(6.0)
            await _settle()
            assert pool.stats("svc").leaks == 1
            clock.advance(20.0)
            await _settle()
            assert pool.stats("svc").leaks == 1  # reported once, not at every tick
        async with pool.acquire("svc"):  # a short lease is no leak
            clock.advance(1.0)
            await _settle()
        assert pool.stats("svc").leaks == 1
    messages = [r.getMessage() for r in caplog.records if "leak_threshold" in r.getMessage()]
    assert len(messages) == 1
    assert "service 'svc'" in messages[0]
    assert f"test_leaks.py:{line}" in messages[0]


def test_leak_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="leak_threshold"):
        MockPool(leak_threshold=0)
