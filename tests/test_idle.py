"""The idle meter: a loop's time waiting in its selector, and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from mockpool import idle
from mockpool.idle import idle_meter


@pytest.mark.asyncio
async def test_waiting_for_io_or_a_timer_counts_as_idle() -> None:
    loop = asyncio.get_running_loop()
    meter = idle_meter(loop)
    assert meter is not None and idle_meter(loop) is meter  # one per loop, not nested
    before = meter.idle_s
    await asyncio.sleep(0.001)  # nothing to run until the timer: idle
    assert meter.idle_s > before


class _Clock:
    """``perf_counter`` for the meter, moved by hand: turns take what the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_short_turns_count_as_idle_and_turns_of_work_as_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that polls without end (pytest-asyncio-cooperative's runner waits with a negative
    timeout) has room; a loop whose turns run work does not, though neither ever waits."""
    clock = _Clock()
    monkeypatch.setattr(idle, "perf_counter", clock)
    loop = asyncio.new_event_loop()
    try:
        meter = idle_meter(loop)
        assert meter is not None

        async def spin(turns: int, turn_s: float) -> None:
            for _ in range(turns):
                clock.now += turn_s  # the turn's work
                await asyncio.sleep(0)  # the next select is a poll (timeout 0)

        loop.run_until_complete(asyncio.sleep(0))  # the first turns, before the clock moves
        before = meter.idle_s
        loop.run_until_complete(spin(100, idle.SHORT_TURN_S / 10))
        polled = meter.idle_s - before
        # each turn that moved the clock counted whole (float sums: not to the last bit)
        assert polled == pytest.approx(100 * idle.SHORT_TURN_S / 10)
        before = meter.idle_s
        loop.run_until_complete(spin(100, 0.001))
        assert meter.idle_s == before  # 1 ms turns: busy, every one
    finally:
        loop.close()


def test_a_loop_without_a_selector_has_no_meter() -> None:
    class Bare(asyncio.AbstractEventLoop):
        pass

    assert idle_meter(Bare()) is None  # type: ignore[abstract]
