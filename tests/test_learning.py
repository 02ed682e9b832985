"""Learning from earlier runs, end to end: warming from a history file (the size each service
settled at), ``expect()`` hints, the usage sampler, eviction without churn (watermark and memory
budget), predicted against actual in the report.

Time is a :class:`~mockpool.clock.FakeClock` moved by hand, and events are ordered by explicit
synchronisation (events, gates, checkpoints), never by sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from mockpool import MockPool, ServiceSpec
from mockpool.clock import FakeClock
from mockpool.history import History, UsageRecorder
from mockpool.supervisors import scaling
from mockpool.supervisors.scaling import ScalingConfig, ScalingSupervisor
from mockpool.supervisors.warming import WarmingSupervisor, expected_services, with_group_members


class Thing:
    """A test double with an identity that shows in assertions."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)

    def __repr__(self) -> str:
        return f"<Thing {self.id}>"


def _history(
    path: Path,
    *,
    peaks: dict[str, int],
    demand: dict[str, list[int]] | None = None,
    hold_s: float = 0.0,
    tests: dict[str, list[str]] | None = None,
) -> Path:
    """Write a one-run history: each service's peak, demand per 1 s window, hold time."""
    recorder = UsageRecorder(window_s=1.0)
    for name, peak in peaks.items():
        counts = (demand or {}).get(name, [])
        recorder.record_window(name, 0.5, 0, peak)
        for i, count in enumerate(counts):
            recorder.record_window(name, i + 0.5, count, peak)
        if hold_s:
            recorder.record_release(name, hold_s)
    for test_id, services in (tests or {}).items():
        recorder.record_test(test_id, services)
    # The size each service settled at is its peak here (what a pool's run records).
    History().merge(recorder.finish(duration_s=10.0, sizes=peaks)).save(path)
    return path


async def _until(condition: Callable[[], bool], *, rounds: int = 1000) -> None:
    """Let background tasks run (one checkpoint at a time) until ``condition`` holds."""
    for _ in range(rounds):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition not reached")


async def _acquire_once(pool: MockPool, name: str) -> None:
    async with pool.acquire(name):
        pass


# -- warming at start ------------------------------------------------------------------------


class TestWarming:
    @pytest.mark.asyncio
    async def test_warms_the_settled_sizes_with_group_members_and_reports_the_time(
        self, tmp_path: Path
    ) -> None:
        path = _history(tmp_path / "h.json", peaks={"a": 3, "b": 9, "m": 2, "g": 4})
        pool = MockPool(history=path, supervise=False, clock=FakeClock())
        pool.register(ServiceSpec(name="a", factory=Thing))
        pool.register(ServiceSpec(name="b", factory=Thing, max_size=5))  # capped
        pool.register(ServiceSpec(name="c", factory=Thing, min_size=2))  # no history: min_size
        pool.register(ServiceSpec(name="m", factory=Thing))
        pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
        assert pool.warm_targets() == {"a": 3, "b": 5, "c": 2, "m": 4, "g": 4}
        async with pool:
            sizes = {name: s.size for name, s in pool.stats().items()}
            # m: its recorded peak is 2, but the 4 groups hold 4 (they are built from idle ones)
            assert sizes == {"a": 3, "b": 5, "c": 2, "m": 4, "g": 4}
            assert pool.stats("m").misses == 0
            assert pool.stats("g").idle == 4
            assert pool.warmed == sizes
            assert pool.warmup_s is not None
            report = pool.report()
            assert report.warmup_s == pool.warmup_s
            assert "warm-up" in str(report)
            pool.check_invariants()

    @pytest.mark.parametrize(("m_leased_directly", "groups"), [(False, 2), (True, 1)])
    @pytest.mark.asyncio
    async def test_a_group_is_warmed_to_no_more_than_its_members_can_lend(
        self, tmp_path: Path, m_leased_directly: bool, groups: int
    ) -> None:
        """History says the group ``g`` settled at 8 (written when ``m`` had a larger
        ``max_size``); ``m`` is now capped at 2. Each group instance keeps an ``m`` for good, so
        the third and later group creations of the warm-up waited for an ``m`` and took it back
        from an idle group instance: 8 made, 6 destroyed before the first test. Groups are
        warmed to what their members can lend: all of ``m``, or half of it when tests lease
        ``m`` directly (the half the sizing controller keeps for them)."""
        path = _history(
            tmp_path / "h.json",
            peaks={"m": 8, "g": 8},
            demand={"m": [4] if m_leased_directly else [], "g": [4]},
        )
        pool = MockPool(history=path, supervise=False, clock=FakeClock())
        pool.register(ServiceSpec(name="m", factory=Thing, max_size=2))
        pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
        assert pool.warm_targets() == {"m": 2, "g": groups}
        async with pool:
            stats = pool.stats()
            assert (stats["g"].created, stats["g"].destroyed, stats["g"].idle) == (groups, 0, groups)
            assert (stats["m"].created, stats["m"].destroyed) == (2, 0)
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_without_history_only_min_size_is_created(self, tmp_path: Path) -> None:
        made: list[str] = []

        def maker(name: str) -> Callable[[], Thing]:
            def make() -> Thing:
                made.append(name)
                return Thing()

            return make

        pool = MockPool(history=tmp_path / "missing.json", supervise=False)
        pool.register(ServiceSpec(name="a", factory=maker("a"), min_size=2))
        pool.register(ServiceSpec(name="b", factory=maker("b")))
        async with pool:
            assert sorted(made) == ["a", "a"]
            assert pool.warmed == {"a": 2, "b": 0}

    @pytest.mark.asyncio
    async def test_creations_run_in_parallel_but_never_more_than_the_limit(self, tmp_path: Path) -> None:
        limit, target = 3, 10
        active = peak = 0
        full = anyio.Event()
        gate = anyio.Event()

        async def factory() -> Thing:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            if active == limit:
                full.set()
            try:
                await gate.wait()
            finally:
                active -= 1
            return Thing()

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="slow", factory=factory, max_size=20))
        async with pool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(pool.warm, {"slow": target}, limit=limit))
                await full.wait()
                # Every worker is blocked in the factory: the limit is reached, not exceeded.
                await _until(lambda: pool.stats("slow").creating == limit)
                assert active == limit
                gate.set()
            assert peak == limit
            assert pool.stats("slow").size == target

    def test_group_members_get_what_their_groups_hold(self) -> None:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="r", factory=Thing, max_size=5))
        pool.register(ServiceSpec(name="j", factory=Thing))
        pool.register(ServiceSpec(name="s", factory=lambda r, j: (r, j), depends_on=("r", "j")))
        pool.register(ServiceSpec(name="d", factory=lambda r: r, depends_on=("r",)))
        targets = with_group_members(pool.service_pools, {"r": 1, "s": 2, "d": 2, "nope": 7})
        assert targets == {"r": 4, "j": 2, "s": 2, "d": 2}
        # r (max_size 5) can lend no more than 5 to its groups: d, the later one, takes 4 and s
        # the one left (a group creation past that would take r back from an idle group).
        assert with_group_members(pool.service_pools, {"s": 4, "d": 4}) == {"r": 5, "j": 1, "s": 1, "d": 4}
        # Tests lease r directly: the groups on it keep at most half of it.
        assert with_group_members(pool.service_pools, {"s": 4, "d": 4}, leased_directly={"r"}) == {
            "r": 3,
            "s": 0,
            "d": 3,
        }


# -- creating ahead --------------------------------------------------------------------------


class TestAhead:
    @pytest.mark.asyncio
    async def test_expect_a_test_id_creates_its_services_before_it_acquires(self, tmp_path: Path) -> None:
        path = _history(
            tmp_path / "h.json",
            peaks={},
            tests={"tests/test_x.py::test_a": ["a", "gone"], "tests/test_x.py::test_b": ["g"]},
        )
        pool = MockPool(history=path, supervise=False)
        pool.register(ServiceSpec(name="a", factory=Thing))
        pool.register(ServiceSpec(name="m", factory=Thing))
        pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
        async with pool:
            assert pool.stats("a").size == 0
            assert expected_services(pool, ["tests/test_x.py::test_b", "a", "unknown::t"]) == ["g", "a"]
            assert pool.expect(["tests/test_x.py::test_a", "tests/test_x.py::test_b"]) == 3
            assert (pool.stats("a").creating, pool.stats("m").creating, pool.stats("g").creating) == (1, 1, 1)
            await _until(lambda: pool.stats("a").idle == 1 and pool.stats("g").idle == 1)
            # A hint for what is already there creates nothing more.
            assert pool.expect(["a", "g"]) == 0
            async with pool.acquire("a"), pool.acquire("g"):
                pass
            for name in ("a", "g"):
                stats = pool.stats(name)
                assert (stats.hits, stats.misses, stats.created) == (1, 0, 1)

    @pytest.mark.asyncio
    async def test_a_hint_for_a_service_whose_instances_are_in_use_creates_nothing(self) -> None:
        """Instances in use count: whether another one would serve sooner than a release is
        the sizing controller's call. Creating whenever none was idle made 120 instances more
        in the learning benchmark's concurrent second run, for no gain in wall time."""
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="a", factory=Thing))
        pool.register(ServiceSpec(name="m", factory=Thing))
        pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
        async with pool:
            async with pool.acquire("a"), pool.acquire("g"):
                assert pool.expect(["a", "g"]) == 0
                assert pool.expect(["m"]) == 0  # held by the group: present
                assert pool.expect(["a"], count=2) == 1  # short of two: one more
            await _until(lambda: pool.stats("a").idle == 2)
            assert (pool.stats("a").created, pool.stats("m").created, pool.stats("g").created) == (2, 1, 1)

    @pytest.mark.asyncio
    async def test_a_hint_for_a_service_with_waiters_leaves_them_to_the_controller(self) -> None:
        """Releases serve the waiter sooner than a creation would (holds end at once, a
        creation takes a second), so the controller starts none; a hint counted the waiter off
        the instance it waits for and built one anyway (in the learning benchmark, one more
        group instance and its members per hint)."""
        clock = FakeClock()

        def slow() -> Thing:
            clock.advance(1.0)
            return Thing()

        pool = MockPool(supervise=False, clock=clock)
        pool.register(ServiceSpec(name="a", factory=slow))
        async with pool:
            async with pool.acquire("a"):
                pass  # measures a creation (1 s) and a hold (0 s)
            held = pool.acquire("a")
            await held.__aenter__()
            waiter = asyncio.create_task(_acquire_once(pool, "a"))
            await _until(lambda: pool.stats("a").waiting == 1)
            assert pool.stats("a").creating == 0
            assert pool.expect(["a"]) == 0
            await held.__aexit__(None, None, None)
            await waiter
            assert pool.stats("a").created == 1

    @pytest.mark.asyncio
    async def test_the_supervisor_samples_usage_and_creates_nothing_ahead(self, tmp_path: Path) -> None:
        """Creating ahead of a demand forecast made no measurable difference (issue 14) and
        over-created on one loop, where the sizing controller decides creations: the warming
        supervisor only folds the counters into this run's record."""
        path = _history(tmp_path / "h.json", peaks={"a": 6}, demand={"a": [0, 0, 0, 40, 40, 40]}, hold_s=0.5)
        clock = FakeClock()
        pool = MockPool(history=path, supervise=False, clock=clock)
        pool.register(ServiceSpec(name="a", factory=Thing, max_size=32))
        async with pool:
            svc = pool.service_pools["a"]
            while (entry := svc.core.take_idle_for_removal()) is not None:
                svc.destroy_soon(entry)
            supervisor = WarmingSupervisor(pool)
            async with pool.acquire("a"):
                pass
            for _ in range(6):
                clock.advance(1.0)
                await supervisor.tick()
            stats = pool.stats("a")
            assert stats.size + stats.creating == 1  # nothing made ahead
            record = pool.run_record()
            assert record.services["a"].acquisitions == 1
            assert record.services["a"].size == 6  # the start-up warm, from history


# -- eviction --------------------------------------------------------------------------------


async def _use_in_order(pool: MockPool, clock: FakeClock, name: str, n: int) -> list[Any]:
    """Lease ``n`` instances at once, then release them one by one, 0.01 s apart on the
    clock; returns the instances in release order (least recently used first)."""
    leases = [pool.acquire(name) for _ in range(n)]
    held = [await lease.__aenter__() for lease in leases]
    for lease in leases:
        clock.advance(0.01)
        await lease.__aexit__(None, None, None)
    return held


class TestEviction:
    @pytest.mark.asyncio
    async def test_over_the_memory_budget_lru_idle_go_one_per_window_and_never_below_min_size(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clock = FakeClock()
        destroyed: list[Thing] = []
        pool = MockPool(
            supervise=False,
            clock=clock,
            memory_budget_mb=100,
            scaling=ScalingConfig(shrink_window_s=1.0, cooldown_s=2.0),
        )
        pool.register(ServiceSpec(name="a", factory=Thing, destroy=destroyed.append, min_size=1))
        rss = [50.0]
        monkeypatch.setattr(scaling, "read_rss_mb", lambda: rss[0])
        async with pool:
            order = await _use_in_order(pool, clock, "a", 4)
            supervisor = ScalingSupervisor(pool)
            await supervisor.tick()  # under the budget: nothing goes
            assert destroyed == []
            rss[0] = 500.0
            await supervisor.tick()
            assert pool.service_pools["a"].memory_tight  # creating only for liveness now
            for _ in range(8):
                clock.advance(1.0)
                await supervisor.tick()
            # One per window once the cooldown after the last creation passed, LRU first...
            assert destroyed == order[:3]
            # ...and never below min_size: the most recently used one stays.
            stats = pool.stats("a")
            assert (stats.size, stats.idle) == (1, 1)
            async with pool.acquire("a") as kept:
                assert kept is order[3]
            assert [e.trigger for e in pool.events] == ["RSS over memory budget"] * 3
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_idle_never_needed_in_a_window_go_one_per_window_after_the_cooldown(self) -> None:
        """A hint made five instances; tests needed two at once. The three no test needed go,
        one per window once the cooldown after the last creation passed, least recently used
        first; the two that were needed stay (their tests may come back), as min_size would."""
        clock = FakeClock()
        destroyed: list[Thing] = []
        pool = MockPool(
            supervise=False, clock=clock, scaling=ScalingConfig(shrink_window_s=1.0, cooldown_s=5.0)
        )
        pool.register(ServiceSpec(name="a", factory=Thing, destroy=destroyed.append))
        async with pool:
            assert pool.expect(["a"], count=5) == 5
            await pool.service_pools["a"].creations_settled()
            made = list(pool.service_pools["a"].core.idle)
            clock.advance(0.01)
            used = await _use_in_order(pool, clock, "a", 2)
            supervisor = ScalingSupervisor(pool)
            await supervisor.tick()  # opens the first shrink window
            for _ in range(3):
                clock.advance(1.0)
                await supervisor.tick()
            assert destroyed == []  # within the cooldown of the last creation: no churn
            for _ in range(5):
                clock.advance(1.0)
                await supervisor.tick()
            never_used = [entry.instance for entry in made if entry.instance not in used]
            assert destroyed == never_used  # the least recently used: made, never leased
            assert pool.stats("a").size == 2  # what the tests needed at once stays
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_the_watermark_keeps_what_the_tests_needed_and_the_warm_up_made(self) -> None:
        """Instances the tests had in use at once, or the start-up warm made from history, are
        kept through quiet windows: their tests come back after a quiet spell (a module that
        leases them again, the next burst), and destroyed, each was made again (churn)."""
        clock = FakeClock()
        destroyed: list[Thing] = []
        pool = MockPool(
            supervise=False, clock=clock, scaling=ScalingConfig(shrink_window_s=1.0, cooldown_s=1.0)
        )
        pool.register(ServiceSpec(name="a", factory=Thing, destroy=destroyed.append))
        pool.register(ServiceSpec(name="b", factory=Thing, destroy=destroyed.append))
        async with pool:
            await pool.warm({"b": 3})
            await _use_in_order(pool, clock, "a", 4)
            supervisor = ScalingSupervisor(pool)
            for _ in range(20):
                clock.advance(1.0)
                pool.sample_usage()  # folds the peaks in, as the usage sampler does
                await supervisor.tick()
            assert destroyed == []
            assert (pool.stats("a").size, pool.stats("b").size) == (4, 3)

    @pytest.mark.asyncio
    async def test_an_instance_used_in_the_window_is_not_evicted(self) -> None:
        clock = FakeClock()
        pool = MockPool(supervise=False, clock=clock, scaling=ScalingConfig(shrink_window_s=1.0))
        pool.register(ServiceSpec(name="a", factory=Thing))
        async with pool:
            await pool.warm({"a": 2})
            supervisor = ScalingSupervisor(pool)
            await supervisor.tick()
            for _ in range(4):
                clock.advance(1.0)
                pool.sample_usage()
            # Both instances busy at once during the window: the watermark (idle low) is 0.
            async with pool.acquire("a"), pool.acquire("a"):
                pass
            await supervisor.tick()
            assert pool.stats("a").size == 2


# -- the report ------------------------------------------------------------------------------


class TestReport:
    @pytest.mark.asyncio
    async def test_predicted_against_actual_demand_and_hit_rate(self, tmp_path: Path) -> None:
        path = _history(tmp_path / "h.json", peaks={"a": 2}, demand={"a": [3, 1]})
        pool = MockPool(history=path, supervise=False)
        pool.register(ServiceSpec(name="a", factory=Thing))
        pool.register(ServiceSpec(name="b", factory=Thing))
        async with pool:
            async with pool.acquire("a"), pool.acquire("a"), pool.acquire("a"):
                pass  # the third waits for a creation: a miss
            async with pool.acquire("b"):
                pass
            learning = pool.report().to_dict()["learning"]
            assert learning["a"] == {
                "predicted_size": 2.0,
                "warmed": 2,
                "actual_size": 3,
                "predicted_peak": 2.0,
                "actual_peak": 3,
                "predicted_acquisitions": 4.0,
                "actual_acquisitions": 3,
                "hit_rate": pytest.approx(2 / 3),
                "reuse_rate": pytest.approx(2 / 3),
            }
            assert learning["b"]["predicted_peak"] is None
            assert learning["b"]["predicted_acquisitions"] is None
            assert (learning["b"]["actual_acquisitions"], learning["b"]["hit_rate"]) == (1, 0.0)  # a miss
            assert pool.stats("a").hit_rate == pytest.approx(2 / 3)
            assert "history predicted/actual: a size 2/3" in str(pool.report())

    @pytest.mark.asyncio
    async def test_a_second_run_warms_from_what_the_first_one_saved(self, tmp_path: Path) -> None:
        path = tmp_path / "h.json"
        rates = []
        for _ in range(2):
            pool = MockPool(history=path, supervise=False)
            pool.register(ServiceSpec(name="a", factory=Thing, max_size=8))
            async with pool:
                async with AsyncExitStack() as stack:
                    for _ in range(4):
                        await stack.enter_async_context(pool.acquire("a"))
                rates.append(pool.stats("a").hit_rate)
        assert rates == [0.0, 1.0]
        assert History.load(path).runs == 2


# -- settling at the learned size -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_warm_start_is_capped_at_the_settled_size_and_records_the_searchs_limit(
    tmp_path: Path,
) -> None:
    """A run that starts from history starts with the search capped at the size earlier runs
    settled at (a cold one is not capped), and a run records the size its search kept, not
    instances made past it: under pytest-asyncio-cooperative each run grew past the last one's
    size on a load reading from its start burst, 11 -> 21 -> 38 -> 64, and the next warmed to it."""
    path = _history(tmp_path / "h.json", peaks={"db": 3})
    pool = MockPool(history=path, supervise=False, clock=FakeClock())
    pool.register(ServiceSpec(name="db", factory=Thing))
    pool.register(ServiceSpec(name="cold", factory=Thing, max_size=10))
    db, cold = pool.service_pools["db"], pool.service_pools["cold"]
    assert (db.limit.limit, cold.limit.limit) == (3, 10)
    async with pool:
        async with AsyncExitStack() as stack:
            for _ in range(5):
                await stack.enter_async_context(pool.acquire("db"))
            await stack.enter_async_context(pool.acquire("cold"))
        # Five made (a stall's creations are not bound by the search), three kept by it.
        assert (db.peak_size, db.settled_at(), cold.settled_at()) == (5, 3, 1)
        assert pool.run_record().services["db"].size == 3
