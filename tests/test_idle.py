"""The idle meter: a loop's time waiting in its selector, and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from mockpool.idle import idle_meter


@pytest.mark.asyncio
async def test_only_waiting_for_io_or_a_timer_counts_as_idle() -> None:
    loop = asyncio.get_running_loop()
    meter = idle_meter(loop)
    assert meter is not None and idle_meter(loop) is meter  # one per loop, not nested
    before = meter.idle_s
    for _ in range(100):
        await asyncio.sleep(0)  # the loop polls (timeout 0): never idle
    assert meter.idle_s == before
    await asyncio.sleep(0.001)  # nothing to run until the timer: idle
    assert meter.idle_s > before


def test_a_loop_without_a_selector_has_no_meter() -> None:
    class Bare(asyncio.AbstractEventLoop):
        pass

    assert idle_meter(Bare()) is None  # type: ignore[abstract]
