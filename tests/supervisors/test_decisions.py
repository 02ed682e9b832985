"""The supervisors' decisions are pure functions: tested here by table.

And the runner they share: a tick that raises is counted and the supervisor restarts with
backoff on the injected clock, while the pool keeps serving.
"""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.supervisors._base import Backoff, run_supervised
from mockpool.supervisors.adaptation import AdaptationConfig, AdaptInput, plan_adaptation
from mockpool.supervisors.health import HealthInput, IdleView, jittered, plan_health
from mockpool.supervisors.leaks import LeaseView, find_leaks, tick_interval
from mockpool.supervisors.scaling import ScaleInput, plan_scaling
from mockpool.supervisors.view import PoolView

# -- scaling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expect_grow", "expect_shrink"),
    [
        # below min_size: grow to it, bounded by max_size
        (ScaleInput(size=0, idle=0, creating=0, waiting=0, min_size=3, max_size=8), 3, 0),
        (ScaleInput(size=0, idle=0, creating=0, waiting=0, min_size=3, max_size=2), 2, 0),
        # creations in flight count toward min_size
        (ScaleInput(size=1, idle=1, creating=2, waiting=0, min_size=3, max_size=8), 0, 0),
        # demand is the sizing controller's: waiters make the scaling supervisor do nothing
        (ScaleInput(size=2, idle=0, creating=0, waiting=10, min_size=0, max_size=8), 0, 0),
        # shrink one per window, only if idle never reached 0 in it, never below min_size
        (ScaleInput(size=5, idle=3, creating=0, waiting=0, min_size=1, max_size=8, window_idle_low=2), 0, 1),
        (ScaleInput(size=5, idle=3, creating=0, waiting=0, min_size=1, max_size=8, window_idle_low=0), 0, 0),
        (
            ScaleInput(size=5, idle=3, creating=0, waiting=0, min_size=1, max_size=8, window_idle_low=None),
            0,
            0,
        ),
        (ScaleInput(size=2, idle=2, creating=0, waiting=0, min_size=2, max_size=8, window_idle_low=2), 0, 0),
        # no churn: never while tests wait or the pool grows, nor soon after a creation
        (ScaleInput(size=5, idle=0, creating=0, waiting=1, min_size=0, max_size=8, window_idle_low=3), 0, 0),
        (ScaleInput(size=5, idle=3, creating=1, waiting=0, min_size=0, max_size=8, window_idle_low=3), 0, 0),
        (
            ScaleInput(
                size=5,
                idle=3,
                creating=0,
                waiting=0,
                min_size=0,
                max_size=8,
                window_idle_low=3,
                since_creation_s=5,
            ),
            0,
            0,
        ),
        (
            ScaleInput(
                size=5,
                idle=3,
                creating=0,
                waiting=0,
                min_size=0,
                max_size=8,
                window_idle_low=3,
                since_creation_s=60,
            ),
            0,
            1,
        ),
        # the watermark keeps what this run's tests needed (in use at once, or warmed)
        (
            ScaleInput(
                size=5, idle=3, creating=0, waiting=0, min_size=1, max_size=8, window_idle_low=2, needed=5
            ),
            0,
            0,
        ),
        (
            ScaleInput(
                size=5, idle=3, creating=0, waiting=0, min_size=1, max_size=8, window_idle_low=2, needed=4
            ),
            0,
            1,
        ),
        # ...but not over the memory budget: down to min_size there
        (
            ScaleInput(
                size=5,
                idle=3,
                creating=0,
                waiting=0,
                min_size=1,
                max_size=8,
                window_idle_low=2,
                needed=5,
                over_memory_budget=True,
            ),
            0,
            1,
        ),
        # over the memory budget: one idle instance per window, not half of them at once
        (
            ScaleInput(
                size=6,
                idle=6,
                creating=0,
                waiting=0,
                min_size=2,
                max_size=8,
                over_memory_budget=True,
                window_idle_low=6,
            ),
            0,
            1,
        ),
    ],
)
def test_plan_scaling(case: ScaleInput, expect_grow: int, expect_shrink: int) -> None:
    plan = plan_scaling(case)
    assert (plan.grow, plan.shrink) == (expect_grow, expect_shrink)
    assert plan.grow + case.size + case.creating <= max(case.max_size, case.size + case.creating)
    assert case.size - plan.shrink >= min(case.min_size, case.size)
    if plan.grow or plan.shrink:
        assert plan.reason


# -- adaptation ----------------------------------------------------------------------------

CALM = AdaptInput(
    size=4,
    creating=0,
    idle=2,
    waiting=0,
    min_size=1,
    max_size=4,
    ceiling=16,
    acquisitions=100,
    peak_in_use=2,
    hold_ewma_s=0.001,
    wait_ewma_s=0.0,
    error_rate=0.0,
    rss_growth_mb=0.0,
    variants=frozenset({"stable", "lean", "fast"}),
    has_health_check=True,
)
CFG = AdaptationConfig()


def _kinds(inp: AdaptInput, cfg: AdaptationConfig = CFG) -> list[tuple[str, str | None, int | None]]:
    return [(a.kind, a.variant, a.max_size) for a in plan_adaptation(inp, cfg)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (CALM, []),
        # error rate over 5 %: the stable variant and check-on-acquire
        (replace(CALM, error_rate=0.2), [("variant", "stable", None), ("check", None, None)]),
        # ... but not before enough samples
        (replace(CALM, error_rate=0.2, acquisitions=5), []),
        # no health check: no check-on-acquire
        (replace(CALM, error_rate=0.2, has_health_check=False), [("variant", "stable", None)]),
        # RSS growth: the lean variant, and creating only for liveness (no eviction)
        (replace(CALM, rss_growth_mb=80.0), [("variant", "lean", None), ("memory", None, None)]),
        (replace(CALM, rss_growth_mb=80.0, memory_tight=True), [("variant", "lean", None)]),
        # slow holds: the fast variant
        (replace(CALM, hold_ewma_s=0.5), [("variant", "fast", None)]),
        # one variant switch per tick: errors win over slowness
        (
            replace(CALM, error_rate=0.2, hold_ewma_s=0.5),
            [("variant", "stable", None), ("check", None, None)],
        ),
        # a variant once left is never switched back to; the current one is not re-chosen
        (replace(CALM, hold_ewma_s=0.5, left_variants=frozenset({"fast"})), []),
        (replace(CALM, hold_ewma_s=0.5, variant="fast"), []),
        # saturated with concurrency over the threshold: an event; the user's max_size holds
        (replace(CALM, size=4, idle=0, waiting=3, peak_in_use=25), [("grow", None, None)]),
        (replace(CALM, size=4, idle=0, waiting=3, peak_in_use=25, ceiling=4), []),
        # saturated with long waits: the same
        (replace(CALM, size=4, idle=0, waiting=3, wait_ewma_s=0.5), [("grow", None, None)]),
        # cooling responses are not repeated
        (replace(CALM, size=4, idle=0, waiting=3, peak_in_use=25, cooling=frozenset({"grow"})), []),
        (replace(CALM, error_rate=0.2, cooling=frozenset({"variant"})), [("check", None, None)]),
    ],
)
def test_plan_adaptation(case: AdaptInput, expected: list[tuple[str, str | None, int | None]]) -> None:
    assert _kinds(case) == expected
    for action in plan_adaptation(case, CFG):
        assert action.trigger
        assert action.response


def test_growth_beyond_max_size_only_when_asked_for() -> None:
    grow = AdaptationConfig(grow_beyond_max_size=True)
    saturated = replace(CALM, size=4, idle=0, waiting=3, peak_in_use=25)
    assert _kinds(saturated, grow) == [("grow", None, 8)]
    assert _kinds(replace(saturated, ceiling=6), grow) == [("grow", None, 6)]
    assert _kinds(replace(CALM, size=4, idle=0, waiting=3, wait_ewma_s=0.5), grow) == [("grow", None, 8)]
    (event,) = plan_adaptation(saturated, CFG)
    assert event.max_size is None and "kept max_size=4, the user's bound" in event.response


def test_adaptation_thresholds_are_configurable_and_validated() -> None:
    lenient = AdaptationConfig(error_rate=0.5)
    assert _kinds(replace(CALM, error_rate=0.2), lenient) == []
    with pytest.raises(ValueError, match="hold_s"):
        AdaptationConfig(hold_s=0)


# -- health --------------------------------------------------------------------------------


def test_plan_health_checks_longest_idle_first_and_replaces_a_degraded_one() -> None:
    idle = (IdleView(1, 0.5, False), IdleView(2, 3.0, False), IdleView(3, 9.0, True), IdleView(4, 1.0, True))
    plan = plan_health(HealthInput(due=True, has_check=True, idle=idle))
    assert plan.check == (2, 1)
    assert plan.replace == 3


@pytest.mark.parametrize(
    "inp",
    [
        HealthInput(due=False, has_check=True, idle=(IdleView(1, 5.0, False),)),
        HealthInput(due=True, has_check=True, idle=()),
    ],
)
def test_plan_health_does_nothing_when_not_due_or_nothing_idle(inp: HealthInput) -> None:
    plan = plan_health(inp)
    assert plan.check == ()
    assert plan.replace is None


def test_plan_health_without_a_check_only_replaces() -> None:
    plan = plan_health(
        HealthInput(due=True, has_check=False, idle=(IdleView(1, 5.0, False), IdleView(2, 1.0, True)))
    )
    assert plan.check == ()
    assert plan.replace == 2


@pytest.mark.parametrize(("u", "expected"), [(0.0, 1.8), (0.5, 2.0), (0.999999, 2.2)])
def test_jitter_stays_within_ten_percent(u: float, expected: float) -> None:
    assert jittered(2.0, u) == pytest.approx(expected, abs=1e-5)


# -- leaks and backoff ---------------------------------------------------------------------


def test_find_leaks_reports_each_old_lease_once() -> None:
    views = [LeaseView(1, 0.0, False), LeaseView(2, 0.0, True), LeaseView(3, 9.5, False)]
    assert find_leaks(views, now=10.0, threshold=1.0) == (1,)


@pytest.mark.parametrize(("threshold", "expected"), [(0.001, 0.01), (0.5, 0.25), (60.0, 1.0)])
def test_leak_tick_interval(threshold: float, expected: float) -> None:
    assert tick_interval(threshold) == expected


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 0.0), (1, 0.1), (2, 0.2), (5, 1.6), (20, 30.0), (10_000, 30.0)]
)
def test_backoff_grows_and_is_capped(failures: int, expected: float) -> None:
    assert Backoff().delay(failures) == pytest.approx(expected)


# -- the shared runner ---------------------------------------------------------------------


class _Flaky:
    """Ticks that fail the first ``fail`` times (a bug in a supervisor), then work."""

    made = 0
    ticks = 0

    def __init__(self, pool: PoolView, fail: int) -> None:
        type(self).made += 1
        self.fail = fail

    async def tick(self) -> float:
        type(self).ticks += 1
        if type(self).ticks <= self.fail:
            raise RuntimeError("supervisor bug")
        return 5.0


@pytest.mark.asyncio
async def test_a_failing_supervisor_is_counted_restarted_with_backoff_and_the_pool_serves() -> None:
    clock = FakeClock()
    pool = MockPool(clock=clock, supervise=False)
    pool.register(ServiceSpec(name="svc", factory=dict))
    _Flaky.made = _Flaky.ticks = 0
    async with pool, anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run_supervised(
                pool,
                "flaky",
                lambda p: _Flaky(p, fail=2),
                backoff=Backoff(1.0, 2.0, 10.0),
                task_status=task_status,
            )
        )
        await anyio.wait_all_tasks_blocked()
        assert pool.supervisor_errors == {"flaky": 1}
        assert clock.next_deadline() == pytest.approx(1.0)  # first backoff: 1 s
        async with pool.acquire("svc") as d:  # the pool keeps serving meanwhile
            assert d == {}
        clock.advance(1.0)
        await anyio.wait_all_tasks_blocked()
        assert pool.supervisor_errors == {"flaky": 2}
        assert clock.next_deadline() == pytest.approx(3.0)  # second backoff: 2 s more
        clock.advance(2.0)
        await anyio.wait_all_tasks_blocked()
        assert pool.supervisor_errors == {"flaky": 2}  # third tick worked
        assert _Flaky.made == 3  # restarted from a fresh instance after each failure
        assert clock.next_deadline() == pytest.approx(8.0)  # its own 5 s interval now
        tg.cancel_scope.cancel()
