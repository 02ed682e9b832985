"""MockPool: registration, acquire semantics, errors, recovery basics, loops, stats."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import anyio
import looptime
import pytest

from mockpool import (
    AcquireTimeout,
    DependencyError,
    FakeClock,
    HookTimeout,
    MockPool,
    MockPoolError,
    PoolClosedError,
    RecoveryFailedError,
    ServiceConfigError,
    ServiceSpec,
    UnknownServiceError,
)
from mockpool.sizing import STALL_MAX_RETRY_S, STALL_MIN_S


class Counter:
    """A factory that numbers its instances."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self) -> dict[str, int]:
        self.made += 1
        return {"id": self.made}


def _pool(name: str = "svc", **spec: object) -> MockPool:
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name=name, factory=spec.pop("factory", Counter()), **spec))  # type: ignore[arg-type]
    return pool


class TestRegistry:
    def test_register_decorator_and_services(self) -> None:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="a", factory=object))

        @pool.service("jwt", max_size=32)
        def jwt_service() -> object:
            return object()

        @pool.service
        def plain() -> object:
            return object()

        assert pool.services == ("a", "jwt", "plain")
        assert pool.stats("jwt").max_size == 32

    def test_duplicate_name_is_refused(self) -> None:
        pool = _pool()
        with pytest.raises(ServiceConfigError, match=r"^service 'svc': name='svc' is already registered"):
            pool.register(ServiceSpec(name="svc", factory=object))

    def test_unknown_dependency_and_self_cycle(self) -> None:
        pool = MockPool()
        with pytest.raises(DependencyError, match=r"depends on 'redis', which is not registered"):
            pool.register(ServiceSpec(name="s", factory=lambda redis: redis, depends_on=("redis",)))
        with pytest.raises(DependencyError, match="cycle"):
            pool.register(ServiceSpec(name="s", factory=lambda s: s, depends_on=("s",)))
        assert pool.services == ()

    @pytest.mark.parametrize(
        ("option", "value", "message"),
        [
            ("max_total", float("inf"), r"^max_total=inf must be a whole number >= 1 or None$"),
            ("name", "", r"^name='' must be a non-empty string or None$"),
            ("supervise", "false", r"^supervise='false' must be True or False$"),
            ("isolation_verify", 1, r"^isolation_verify=1 must be True or False$"),
            ("history_window_s", 0, r"^history_window_s=0 must be seconds > 0$"),
            ("history_window_s", float("nan"), r"^history_window_s=nan must be seconds > 0$"),
            ("history", "", r"^history='' is an empty path"),
            ("history", 5, r"^history=5 must be a file path, a History or None$"),
            ("clock", 5, r"^clock=5 must have now\(\) and sleep\(seconds\)"),
        ],
    )
    def test_a_bad_pool_option_is_named_when_the_pool_is_made(
        self, option: str, value: object, message: str
    ) -> None:
        """Before, these raised OverflowError, a plain ValueError or TypeError from deep inside,
        an AttributeError at the first tick, or (a truthy string) nothing at all."""
        with pytest.raises(ServiceConfigError, match=message) as caught:
            MockPool(**{option: value})  # type: ignore[arg-type]
        assert caught.value.field == option

    def test_the_decorator_takes_the_name_as_a_keyword_too(self) -> None:
        pool = MockPool(supervise=False)

        @pool.service(name="jwt", max_size=2)
        def make_jwt() -> object:
            return object()

        assert pool.services == ("jwt",)
        assert pool.service_pools["jwt"].spec.max_size == 2

    def test_unknown_service_suggests_close_names(self) -> None:
        pool = _pool("redis")
        with pytest.raises(UnknownServiceError) as caught:
            pool.acquire("rdis")
        assert str(caught.value) == "no service named 'rdis' in pool 'p'; did you mean 'redis'?"
        assert isinstance(caught.value, LookupError)
        with pytest.raises(UnknownServiceError, match=r"registered: 'redis'$"):
            pool.stats("zzzzzz")

    def test_unregister_refuses_while_a_group_depends_on_it(self) -> None:
        pool = _pool("a")
        pool.register(ServiceSpec(name="g", factory=lambda a: a, depends_on=("a",)))
        with pytest.raises(DependencyError, match="'g' depend on it"):
            pool.unregister("a")
        pool.unregister("g")
        pool.unregister("a")
        assert pool.services == ()


class TestAcquire:
    @pytest.mark.asyncio
    async def test_exclusive_and_clean(self) -> None:
        """Each lease holds its own instance; a reset runs before the next lease sees it."""

        def reset(d: dict[str, int]) -> None:
            d.pop("dirty", None)

        pool = _pool(reset=reset, max_size=2)
        async with pool:
            async with pool.acquire("svc") as a, pool.acquire("svc") as b:
                assert a is not b
                a["dirty"] = 1
            async with pool.acquire("svc") as again:
                assert "dirty" not in again
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_waiters_are_served_first_come_first_served(self) -> None:
        pool = _pool(max_size=1)
        order: list[int] = []
        async with pool:
            holder = pool.acquire("svc")
            await holder.__aenter__()

            async def wait(i: int) -> None:
                async with pool.acquire("svc"):
                    order.append(i)

            tasks = []
            for i in range(5):
                tasks.append(asyncio.create_task(wait(i)))
                while pool.stats("svc").waiting <= i:
                    await asyncio.sleep(0)
            await holder.__aexit__(None, None, None)
            await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]

    @pytest.mark.asyncio
    async def test_timeout_message_names_service_and_state(self) -> None:
        pool = _pool(max_size=1)
        async with pool, pool.acquire("svc"):
            with pytest.raises(AcquireTimeout) as caught:
                async with pool.acquire("svc", timeout=0.001):
                    pass  # pragma: no cover
        assert isinstance(caught.value, TimeoutError)
        assert str(caught.value) == (
            "no 'svc' instance became available within 0.001 s (size=1, in_use=1, waiting=1, "
            "creating=0, max_size=1); the service is at max_size=1: raise max_size, pass a longer "
            "timeout=, or look for tests that hold leases too long"
        )

    @pytest.mark.asyncio
    async def test_hits_and_misses(self) -> None:
        """The first acquire waits for a creation (a miss); later ones find it idle (hits)."""
        pool = _pool()
        async with pool:
            for _ in range(3):
                async with pool.acquire("svc"):
                    pass
        stats = pool.stats("svc")
        assert (stats.acquisitions, stats.misses, stats.hits, stats.created) == (3, 1, 2, 1)
        assert stats.hit_rate == pytest.approx(2 / 3)

    @pytest.mark.asyncio
    async def test_warming_creates_min_size_before_the_first_acquire(self) -> None:
        factory = Counter()
        pool = _pool(factory=factory, min_size=3)
        async with pool:
            assert factory.made == 3
            assert pool.stats("svc").idle == 3

    @pytest.mark.asyncio
    async def test_max_total_caps_the_whole_pool_and_evicts_idle_of_other_services(self) -> None:
        pool = MockPool(max_total=2, supervise=False)
        pool.register(ServiceSpec(name="a", factory=object, min_size=0))
        pool.register(ServiceSpec(name="b", factory=object))
        async with pool:
            async with pool.acquire("a"), pool.acquire("a"):
                pass
            assert pool.stats("a").size == 2
            async with pool.acquire("b"):
                assert pool.stats("a").size + pool.stats("b").size == 2
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_nested_leases_of_two_services_do_not_deadlock_on_max_total(self) -> None:
        """Tests that hold ``a`` and then wait for ``b``: ``a`` may not take the slot ``b``'s
        first instance needs, or every ``a`` would be held by a test waiting for a ``b`` that
        can never be made (nothing idle to evict). That was a deadlock until the timeout."""
        pool = MockPool(max_total=4, supervise=False, default_timeout=None)
        # min_size=4 asks for every slot at start: the warm-up is what would take b's.
        pool.register(ServiceSpec(name="a", factory=object, min_size=4))
        pool.register(ServiceSpec(name="b", factory=object))
        go = asyncio.Event()

        async def test() -> None:
            async with pool.acquire("a"):
                await go.wait()
                async with pool.acquire("b"):
                    pass

        async with pool:
            # Before anyone asks for b, a has grown only to the slots b does not need.
            assert (pool.stats("a").size, pool.stats("b").size) == (3, 0)
            tasks = [asyncio.create_task(test()) for _ in range(6)]
            await anyio.wait_all_tasks_blocked()
            go.set()
            with anyio.fail_after(30):  # a guard against a hang, not a timing
                await asyncio.gather(*tasks)
            assert pool.stats("b").acquisitions == 6
            pool.check_invariants()

    def test_holders_waiting_for_another_service_that_serves_do_not_evict_at_max_total(self) -> None:
        """``a`` is at its share of ``max_total`` and its one lease is held by a test waiting in
        line for ``b``, whose leases keep ending. ``a``'s waiter stalls for seconds, but it is
        served once that holder gets ``b``: evicting ``c``'s idle instance for it would destroy
        what was made (churn). Only a stall with no lease ended anywhere may take it (the holder
        may then be waiting for ``a`` itself)."""
        destroyed: list[str] = []

        def spec(name: str) -> ServiceSpec:
            return ServiceSpec(
                name=name, factory=lambda: {"name": name}, destroy=lambda d: destroyed.append(d["name"])
            )

        async def main() -> None:
            pool = MockPool(max_total=4, supervise=False, default_timeout=None)
            for name in "abc":
                pool.register(spec(name))
            async with pool:
                async with pool.acquire("c"), pool.acquire("c"):
                    pass  # c keeps two idle instances: the second one could be evicted
                b_held = asyncio.Event()

                async def use_b(hold_s: float) -> None:
                    async with pool.acquire("b"):
                        b_held.set()
                        await asyncio.sleep(hold_s)

                # b serves 100 tests one after another, 0.1 s each: its leases keep ending.
                line = [asyncio.create_task(use_b(0.1))]
                await b_held.wait()
                line += [asyncio.create_task(use_b(0.1)) for _ in range(99)]

                async def nested() -> None:
                    # a first, then b, behind the 99 in b's line: about 10 s.
                    async with pool.acquire("a"), pool.acquire("b"):
                        pass

                holder = asyncio.create_task(nested())
                while pool.stats("b").waiting < 100:  # the holder has a, and is in b's line
                    await asyncio.sleep(0)
                assert pool.stats("a").in_use == 1
                async with pool.acquire("a"):  # waits for the holder: about 10 s, not a stall
                    assert asyncio.get_running_loop().time() > 9.0
                await asyncio.gather(holder, *line)
                stats = pool.stats()
                assert (stats["a"].size, stats["b"].size, stats["c"].size) == (1, 1, 2)
                assert destroyed == []
                pool.check_invariants()

        loop = looptime.new_event_loop(start=0.0)  # virtual time: the 10 s pass at once
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
        assert sorted(destroyed) == ["a", "b", "c", "c"]  # at close, not before

    @staticmethod
    async def _a_held_by_a_test_in_line_for_b(*, b_moves: bool, saturated: bool) -> tuple[int, float]:
        """``a`` (one instance; the throughput search allows no second: only a stall makes
        one) is held by a test that queued for it and now waits in line for ``b``. ``b``
        serves a line of 20 tests, 0.1 s each (``b_moves``), or its one holder waits for
        ``a``'s next test to start (a deadlock only a second ``a`` breaks: ``b``'s
        ``max_size`` is 1). ``saturated``: the loop reads as busy all the time, as the sizing
        supervisor measures a CPU-bound suite's. Returns ``a``'s size and when the next test
        of ``a`` got it."""
        from mockpool.sizing import LimitState

        pool = MockPool(supervise=False, default_timeout=None)
        if saturated:
            pool.loop_load = lambda: (1.0, 0.1, 0.0)  # type: ignore[method-assign]
        pool.register(ServiceSpec(name="a", factory=dict))
        pool.register(ServiceSpec(name="b", factory=dict, max_size=1))
        async with pool:
            pool.service_pools["a"].limit = LimitState(limit=1)
            second_started = asyncio.Event()
            b_held, a_held = asyncio.Event(), asyncio.Event()

            async def use_b(hold_s: float) -> None:
                async with pool.acquire("b"):
                    b_held.set()
                    if b_moves:
                        await asyncio.sleep(hold_s)
                    else:
                        await second_started.wait()

            line = [asyncio.create_task(use_b(0.1))]
            await b_held.wait()
            line += [asyncio.create_task(use_b(0.1)) for _ in range(19 if b_moves else 0)]

            async def holder() -> None:
                async with pool.acquire("a"):  # queued for: a's first instance is made for it
                    a_held.set()
                    async with pool.acquire("b"):
                        pass

            first = asyncio.create_task(holder())
            await a_held.wait()
            while pool.stats("b").waiting < len(line):  # the holder is in b's line
                await asyncio.sleep(0)
            await asyncio.sleep(0.25)  # b's line moved (or not) a while: two leases ended there
            async with pool.acquire("a"):
                second_started.set()
                got_at = asyncio.get_running_loop().time()
            await asyncio.gather(first, *line)
            size = pool.stats("a").size
            pool.check_invariants()
        return size, got_at

    def test_a_holder_waiting_in_a_queue_that_moves_is_no_stall_on_a_saturated_loop(self) -> None:
        """``a``'s waiter waits about 2 s with no lease of ``a`` ended, but its holder is in
        ``b``'s line, which moves: it is served when the holder gets ``b``. On a saturated loop
        a second ``a`` made for that stall runs no test sooner (1,199 stress tests made youtube
        one more 50-80 ms autospec'd client at each lasting stall this way)."""
        size, got_at = self._in_virtual_time(b_moves=True, saturated=True)
        assert size == 1
        assert got_at >= 1.9  # after the 20 tests of b's line

    def test_a_holder_waiting_in_a_queue_that_moves_stalls_on_a_loop_with_idle_time(self) -> None:
        """With idle time, a second ``a`` runs ``a``'s next test sooner: the stall stands."""
        size, got_at = self._in_virtual_time(b_moves=True, saturated=False)
        assert size == 2
        assert got_at < 1.0

    def test_a_holder_waiting_in_a_queue_that_does_not_move_is_a_stall(self) -> None:
        """Liveness: ``b``'s holder waits for ``a``'s next test, so ``b``'s line does not move;
        the stall check makes a second ``a`` for the waiter, beyond the search's limit (on a
        saturated loop, once the stall lasts)."""
        for saturated in (False, True):
            size, got_at = self._in_virtual_time(b_moves=False, saturated=saturated)
            assert size == 2
            assert got_at < 1.9  # a stall's time (a lasting one's), not a deadlock

    def _in_virtual_time(self, *, b_moves: bool, saturated: bool) -> tuple[int, float]:
        result: list[tuple[int, float]] = []

        async def main() -> None:
            result.append(await self._a_held_by_a_test_in_line_for_b(b_moves=b_moves, saturated=saturated))

        _run_in_virtual_time(main())
        return result[0]

    def test_waiters_served_by_creations_just_ended_are_no_stall(self) -> None:
        """A warm run's first tests: the service's limit is the one instance earlier runs
        settled at, and the waiters queued while it was being created. It ends just before a
        stall check, whose waiters then waited on the creation, not on a holder: no instance
        was held when the check was armed. Read as a stall, it made a second instance, past the
        settled size, on every warm run of a cooperative suite."""
        from mockpool.sizing import LimitState

        async def make() -> dict[str, int]:
            await asyncio.sleep(2.6 * STALL_MIN_S)  # ends just before the third check
            return {}

        async def main() -> None:
            pool = MockPool(supervise=False, default_timeout=None)
            pool.register(ServiceSpec(name="s", factory=make, reset=dict.clear))
            pool.service_pools["s"].limit = LimitState(limit=1)  # as a warm run's history sets it

            async def test() -> None:
                async with pool.acquire("s"):
                    await asyncio.sleep(0.8 * STALL_MIN_S)  # past the check, short of a stall

            async with pool:
                await asyncio.gather(*(test() for _ in range(4)))
                stats = pool.stats("s")
                assert (stats.created, stats.size, stats.acquisitions) == (1, 1, 4)
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_slots_kept_for_first_instances(self) -> None:
        """One slot for each other service with no instance, none for a service's own first
        one, at most half the bound; a lasting stall counts only services someone waits for."""
        pool = MockPool(max_total=6, supervise=False)
        for name in "abcde":
            pool.register(ServiceSpec(name=name, factory=object))
        a = pool.service_pools["a"].core
        assert pool.kept_for_others(a) == 0  # a's first instance: first come
        a.creating = 1  # a has one on its way: b..e keep their slots, capped at 6 // 2
        assert pool.kept_for_others(a) == 3
        assert pool.kept_for_others(a, lasting=True) == 0  # nobody waits for b..e
        a.creating = 0

    @pytest.mark.asyncio
    async def test_closed_pool_refuses(self) -> None:
        pool = _pool()
        async with pool:
            pass
        with pytest.raises(PoolClosedError, match=r"^pool 'p' is closed; acquire inside 'async with pool:'$"):
            pool.acquire("svc")
        with pytest.raises(PoolClosedError):
            pool.register(ServiceSpec(name="b", factory=object))

    @pytest.mark.asyncio
    async def test_a_lease_shared_by_two_tasks_is_refused_to_the_second_and_leaks_nothing(self) -> None:
        """Both tasks waited on one lease; the second entry overwrote the first, and as the
        lease was released already, its instance stayed in use for good."""
        pool = _pool(max_size=1)
        async with pool:
            lease = pool.acquire("svc")
            second_waits = asyncio.Event()

            async def first() -> None:
                async with lease:
                    await second_waits.wait()

            async def second() -> None:
                second_waits.set()
                async with lease:
                    pass

            results = await asyncio.gather(first(), second(), return_exceptions=True)
            assert results[0] is None
            assert isinstance(results[1], MockPoolError)
            assert str(results[1]) == (
                "service 'svc': another task is entering this lease already; a lease serves one "
                "task: call pool.acquire('svc') in each task"
            )
            stats = pool.stats("svc")
            assert (stats.in_use, stats.idle, stats.acquisitions) == (0, 1, 1)
            assert repr(lease) == "<Lease 'svc' released>"
            with pytest.raises(MockPoolError, match=r"entered already .* call pool.acquire\('svc'\) again"):
                async with lease:
                    pass
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_a_second_async_with_pool_is_refused_rather_than_closing_the_first(self) -> None:
        pool = _pool()
        async with pool:
            with pytest.raises(
                MockPoolError, match=r"^pool 'p' is started already; enter 'async with pool:' once"
            ):
                async with pool:
                    pass
            async with pool.acquire("svc"):  # still open
                pass

    @pytest.mark.asyncio
    async def test_close_fails_waiters_and_destroys_everything(self) -> None:
        destroyed: list[object] = []
        pool = _pool(max_size=1, destroy=destroyed.append)
        pool.close_timeout = 0
        await pool.start()
        holder = pool.acquire("svc")
        await holder.__aenter__()
        waiter = asyncio.create_task(pool.acquire("svc").__aenter__())
        while pool.stats("svc").waiting == 0:
            await asyncio.sleep(0)
        await pool.aclose()
        with pytest.raises(PoolClosedError):
            await waiter
        assert len(destroyed) == 1  # the leaked lease's instance too
        assert pool.stats("svc").leaks == 1
        await holder.__aexit__(None, None, None)  # a late release is harmless


class TestRecovery:
    @pytest.mark.asyncio
    async def test_failed_reset_sends_to_recovery_never_to_idle(self) -> None:
        def reset(d: dict[str, int]) -> None:
            raise RuntimeError("reset broke")

        factory = Counter()
        pool = _pool(factory=factory, reset=reset)
        async with pool:
            async with pool.acquire("svc") as first:
                pass
            for _ in range(5):
                await asyncio.sleep(0)
            async with pool.acquire("svc") as second:
                assert second is not first
            stats = pool.stats("svc")
            assert stats.reset_failures == 2
            assert stats.recoveries["factory"] >= 1
            assert stats.recoveries[2] == stats.recoveries["factory"]

    @pytest.mark.asyncio
    async def test_discard_restores_the_pristine_snapshot(self) -> None:
        pool = _pool(
            snapshot=lambda d: dict(d),
            restore=lambda d, state: (d.clear(), d.update(state)),
        )
        async with pool:
            lease = pool.acquire("svc")
            async with lease as inst:
                inst["dirty"] = 1
                lease.discard()
            for _ in range(5):
                await asyncio.sleep(0)
            async with pool.acquire("svc") as again:
                assert again is inst and "dirty" not in again
            stats = pool.stats("svc")
            assert (stats.discards, stats.recoveries["snapshot"]) == (1, 1)
            assert set(stats.recovery_p99_s) == {"snapshot"}

    @pytest.mark.asyncio
    async def test_broken_factory_fails_waiters_with_the_cause_and_heals(self) -> None:
        broken = True

        def factory() -> object:
            if broken:
                raise ConnectionError("factory down")
            return object()

        pool = _pool(factory=factory)
        async with pool:
            with pytest.raises(RecoveryFailedError) as caught:
                async with pool.acquire("svc"):
                    pass  # pragma: no cover
            assert isinstance(caught.value.__cause__, ConnectionError)
            assert "service 'svc' could not get a working instance; tried factory" in str(caught.value)
            broken = False
            async with pool.acquire("svc"):
                pass
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_degraded_service_falls_back_to_minimal_then_stub(self) -> None:
        class Client:
            def get(self, key: str) -> str:
                return key

        made = Client()
        calls = {"factory": 0}

        def factory() -> Client:
            calls["factory"] += 1
            if calls["factory"] > 1:
                raise ConnectionError("down")
            return made

        def minimal() -> Client:
            raise ConnectionError("also down")

        pool = _pool(factory=factory, minimal=minimal, allow_degraded=True)
        async with pool:
            lease = pool.acquire("svc")
            async with lease:
                lease.discard()
            for _ in range(5):
                await asyncio.sleep(0)
            lease = pool.acquire("svc")
            async with lease as stub:
                assert lease.degraded and lease.tier == "stub"
                stub.get("k")
                with pytest.raises(TypeError):
                    stub.get()  # the stub keeps the real signature
            stats = pool.stats("svc")
            assert (stats.recoveries["stub"], stats.degraded_leases) == (1, 1)
            assert "degraded leases: svc=1" in str(pool.report())


def _group_over_a_and_b(log: list[str], *, reset_b: Callable[[Any], None] | None = None) -> MockPool:
    """Services ``a`` and ``b`` and a group ``g`` over them; each reset logs its name (``b``'s
    is ``reset_b`` when given)."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="a", factory=list, reset=lambda a: log.append("a")))
    pool.register(ServiceSpec(name="b", factory=dict, reset=reset_b or (lambda b: log.append("b"))))
    pool.register(
        ServiceSpec(
            name="g", factory=lambda a, b: [a, b], depends_on=("a", "b"), reset=lambda g: log.append("g")
        )
    )
    return pool


async def _use_once(pool: MockPool, name: str) -> None:
    async with pool.acquire(name):
        pass


def _member_and_group(*, max_size: int) -> MockPool:
    """A service ``m`` of ``max_size`` and a group ``g`` over it; acquires time out after 5 s
    (virtual seconds, under :func:`_run_in_virtual_time`)."""
    pool = MockPool(supervise=False, default_timeout=5.0)
    pool.register(ServiceSpec(name="m", factory=list, reset=list.clear, max_size=max_size))
    pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
    return pool


def _member_and_group_with_a_breakable_factory() -> tuple[MockPool, list[bool]]:
    """A pool without supervisors on the loop's clock: ``m`` (``max_size=2``), whose factory
    raises ``OSError`` while ``broken[0]`` is set, and a group ``g`` built on it."""
    broken = [False]

    def make() -> list[int]:
        if broken[0]:
            raise OSError("factory down")
        return []

    pool = MockPool(supervise=False, default_timeout=None, clock=_LoopClock())
    pool.register(ServiceSpec(name="m", factory=make, reset=list.clear, max_size=2))
    pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
    return pool, broken


class _LoopClock:
    """The running loop's time as the pool's clock (virtual under :func:`_run_in_virtual_time`)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _run_in_virtual_time(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a looptime loop: timers fire at once, in virtual time."""
    loop = looptime.new_event_loop(start=0.0)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


class TestGroups:
    @pytest.mark.asyncio
    async def test_group_leases_members_as_one_unit(self) -> None:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="a", factory=list, reset=list.clear, max_size=2))
        pool.register(ServiceSpec(name="b", factory=dict, reset=dict.clear, max_size=2))
        pool.register(ServiceSpec(name="g", factory=lambda a, b: (a, b), depends_on=("a", "b")))
        async with pool:
            lease = pool.acquire("g")
            async with lease as (a, b):
                assert lease.members == {"a": a, "b": b}
                a.append(1)
                b["k"] = 1
            async with pool.acquire("g") as (a2, b2):
                assert (a2, b2) == ([], {})
            assert pool.stats("a").in_use == 1  # held by the idle group entry
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_a_group_whose_resets_are_sync_is_idle_again_as_its_block_ends(self) -> None:
        """Members first, in ``depends_on`` order, then the group's own reset, all inline:
        the group is idle the moment ``async with`` ends, with no background reset."""
        order: list[str] = []
        pool = _group_over_a_and_b(order)
        async with pool:
            lease = pool.acquire("g")
            await lease.__aenter__()
            release = lease.__aexit__(None, None, None)
            with pytest.raises(StopIteration):  # done at its first step: it never suspended
                release.send(None)
            stats = pool.stats("g")
            assert (stats.idle, stats.in_use, stats.resets) == (1, 0, 1)
            assert order == ["a", "b", "g"]
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_a_group_goes_on_in_the_background_from_its_first_async_reset(self) -> None:
        """A sync member reset runs inline; from the async one on, the rest (the next member,
        then the group's own) runs after it, in order, and the block waits for all of them."""
        order: list[str] = []
        gate = asyncio.Event()

        async def reset_b(b: dict[str, int]) -> None:
            order.append("b started")
            await gate.wait()
            order.append("b done")

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="a", factory=list, reset=lambda a: order.append("a")))
        pool.register(ServiceSpec(name="b", factory=dict, reset=reset_b))
        pool.register(ServiceSpec(name="c", factory=set, reset=lambda c: order.append("c")))
        pool.register(
            ServiceSpec(
                name="g",
                factory=lambda a, b, c: [a, b, c],
                depends_on=("a", "b", "c"),
                reset=lambda g: order.append("g"),
            )
        )

        async def use() -> None:
            async with pool.acquire("g"):
                pass
            order.append("block ended")

        async with pool:
            task = asyncio.create_task(use())
            while "b started" not in order:
                await asyncio.sleep(0)
            assert order == ["a", "b started"]
            stats = pool.stats("g")
            assert (stats.idle, stats.resets) == (0, 0) and not task.done()
            gate.set()
            await task
            assert order == ["a", "b started", "b done", "c", "g", "block ended"]
            assert (pool.stats("g").idle, pool.stats("g").resets) == (1, 1)
            pool.check_invariants()

    def test_a_direct_waiter_of_a_member_lent_to_a_group_gets_a_creation_at_once(self) -> None:
        """``m``'s one instance is lent to an idle group instance, which keeps it for as long
        as it lives. Measured holds (0.1 s) against creations (1 s) say a release would come
        sooner than a creation, but no release will: the waiter gets a creation at once, and
        is served after one creation's time, not after a stall and then a creation."""

        async def make_m() -> dict[str, int]:
            await asyncio.sleep(1.0)
            return {}

        async def main() -> None:
            pool = MockPool(supervise=False, default_timeout=None)
            pool.register(ServiceSpec(name="m", factory=make_m))
            pool.register(ServiceSpec(name="g", factory=lambda m: [m], depends_on=("m",)))
            async with pool:
                async with pool.acquire("m"):  # measures a creation (1 s) and a hold (0.1 s)
                    await asyncio.sleep(0.1)
                async with pool.acquire("g"):  # takes m's idle instance for good
                    pass
                m = pool.service_pools["m"]
                assert (m.core.in_use, m.core.lent, m.sizing_input().in_use) == (1, 1, 0)
                asked = asyncio.get_running_loop().time()
                async with pool.acquire("m"):
                    assert asyncio.get_running_loop().time() - asked == pytest.approx(1.0)
                    assert m.sizing_input().in_use == 1  # a test's lease: it will end
                assert pool.stats("m").size == 2
                pool.check_invariants()

        loop = looptime.new_event_loop(start=0.0)  # virtual time: the creations pass at once
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    @pytest.mark.asyncio
    async def test_a_members_sync_reset_that_raises_sends_the_group_to_recovery(self) -> None:
        calls: list[str] = []

        def reset_b(b: dict[str, int]) -> None:
            raise RuntimeError("b's reset broke")

        pool = _group_over_a_and_b(calls, reset_b=reset_b)
        async with pool:
            async with pool.acquire("g"):
                pass
            stats = pool.stats("g")
            assert stats.reset_failures == 1 and stats.recovering == 1
            assert calls == ["a"], "the group's own reset ran after a member's failed"
            pool.check_invariants()

    @pytest.mark.asyncio
    async def test_a_group_being_built_is_served_before_direct_waiters_of_its_member(self) -> None:
        """The member's one instance is held; a direct acquire of the member queues, then a
        group acquire (whose creation needs the member) queues behind it. The release goes to
        the group's creation: the group then serves a queue of its own, while a direct waiter
        first would leave every group waiter starving behind the member's queue."""
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="m", factory=list, reset=list.clear, max_size=1))
        pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
        order: list[str] = []

        async def use(name: str) -> None:
            async with pool.acquire(name):
                order.append(name)

        async with pool:
            held = pool.acquire("m")
            await held.__aenter__()
            direct = asyncio.create_task(use("m"))
            while pool.stats("m").waiting < 1:
                await asyncio.sleep(0)
            group = asyncio.create_task(use("g"))
            while pool.stats("m").waiting < 2:  # the group's creation waits for the member
                await asyncio.sleep(0)
            await held.__aexit__(None, None, None)
            await group
            assert order == ["g"]
            assert not direct.done(), "the direct waiter was served while the group held m"
            assert pool.stats("m").waiting == 1
            # The idle group keeps its member until the stall check sees that nothing else
            # will serve the direct waiter: then the group instance goes, and gives it back.
            await direct
            assert order == ["g", "m"]
            assert pool.stats("g").size == 0
            pool.check_invariants()

    def test_an_idle_group_gives_back_a_member_at_max_size_to_a_direct_waiter(self) -> None:
        """``m``'s one instance (max_size=1) is lent to an idle group instance, which keeps it
        for as long as it lives: a direct acquire of ``m`` waited until its timeout (the error
        blamed tests holding leases). The group instance is destroyed at once instead, and its
        member serves the waiter."""

        async def main() -> None:
            pool = _member_and_group(max_size=1)
            async with pool:
                async with pool.acquire("g"):
                    pass
                assert (pool.stats("g").idle, pool.stats("m").in_use) == (1, 1)
                asked = asyncio.get_running_loop().time()
                async with pool.acquire("m") as m:
                    assert asyncio.get_running_loop().time() == asked
                    assert m == []
                assert (pool.stats("g").size, pool.stats("m").size) == (0, 1)
                async with pool.acquire("g"):  # the group is built again on the same instance
                    pass
                assert pool.stats("m").created == 1
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_an_idle_group_of_groups_gives_back_a_member_at_max_size_to_a_direct_waiter(self) -> None:
        """``m``'s one instance is lent to ``g``'s, itself lent to an idle ``app`` instance:
        no ``g`` instance was idle to destroy, so a direct acquire of ``m`` waited until its
        timeout. The idle ``app`` is destroyed, then the ``g`` it gave back, at the next
        stall check, and the member serves the waiter."""

        async def main() -> None:
            pool = _member_and_group(max_size=1)
            pool.register(ServiceSpec(name="app", factory=lambda g: ("app", g), depends_on=("g",)))
            async with pool:
                async with pool.acquire("app"):
                    pass
                assert (pool.stats("app").idle, pool.stats("g").in_use, pool.stats("m").in_use) == (1, 1, 1)
                asked = asyncio.get_running_loop().time()
                async with pool.acquire("m") as m:
                    assert asyncio.get_running_loop().time() - asked <= 2 * STALL_MIN_S
                    assert m == []
                assert (pool.stats("app").size, pool.stats("g").size, pool.stats("m").size) == (0, 0, 1)
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_member_lent_while_a_direct_waiter_waits_comes_back_when_the_group_is_idle(self) -> None:
        """The direct waiter queued while a test held ``m``; the release went to a group being
        built (it queues first), and that group's lease ended: no release of ``m`` will come.
        The stall check armed when ``m`` was lent takes it back from the idle group."""

        async def main() -> None:
            pool = _member_and_group(max_size=1)
            async with pool:
                held = pool.acquire("m")
                await held.__aenter__()
                direct = asyncio.create_task(_use_once(pool, "m"))
                group = asyncio.create_task(_use_once(pool, "g"))
                while pool.stats("m").waiting < 2:
                    await asyncio.sleep(0)
                await held.__aexit__(None, None, None)
                await group
                assert not direct.done() and pool.stats("g").idle == 1
                lent_at = asyncio.get_running_loop().time()
                await direct
                assert asyncio.get_running_loop().time() - lent_at <= 2 * STALL_MIN_S
                assert pool.stats("g").size == 0
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_an_idle_group_keeps_its_member_while_a_test_holds_another(self) -> None:
        """``m`` has two instances: one lent to an idle group, one held by a test. Its release
        will serve the direct waiter, so the group instance is not destroyed for it."""

        async def main() -> None:
            pool = _member_and_group(max_size=2)
            async with pool:
                async with pool.acquire("g"):
                    pass
                held = pool.acquire("m")
                await held.__aenter__()
                direct = asyncio.create_task(_use_once(pool, "m"))
                await asyncio.sleep(10 * STALL_MIN_S)  # virtual: stall checks come and go
                assert not direct.done() and pool.stats("g").idle == 1
                await held.__aexit__(None, None, None)
                await direct
                assert (pool.stats("g").size, pool.stats("m").size) == (1, 2)
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_an_idle_group_gives_back_a_member_to_a_direct_waiter_at_max_total(self) -> None:
        """``m``'s one instance is lent to an idle group instance, and the pool is at its
        ``max_total``: ``b``'s one idle instance takes the last slot, and a service's last
        instance is evicted only for another's first. ``m`` is far below its ``max_size``, so
        the idle group kept its member, and a direct acquire of ``m``, with nothing held and
        nothing on its way, waited until its timeout, with or without supervisors. The group
        instance gives it back, as it does at ``max_size``."""

        async def main() -> None:
            for supervise in (False, True):
                pool = MockPool(max_total=3, supervise=supervise, default_timeout=5.0)
                pool.register(ServiceSpec(name="m", factory=list, reset=list.clear))
                pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
                pool.register(ServiceSpec(name="b", factory=dict))
                async with pool:
                    await _use_once(pool, "g")
                    await _use_once(pool, "b")
                    assert pool.budget.total == 3 and pool.stats("g").idle == 1
                    asked = asyncio.get_running_loop().time()
                    async with pool.acquire("m") as m:
                        assert asyncio.get_running_loop().time() - asked <= 2 * STALL_MIN_S
                        assert m == []
                    assert (pool.stats("g").size, pool.stats("m").size, pool.stats("b").size) == (0, 1, 1)
                    pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_test_holding_a_group_gets_its_member_at_max_total(self) -> None:
        """A test holds ``g`` and then leases its member ``m`` directly; ``m``'s one instance
        is lent to that very group instance, and ``b``'s one idle instance takes the pool's
        last slot. ``b``'s last instance was evicted only for another service's first, and
        ``m`` has one: lent, it serves none of ``m``'s own tests. The waiter, with nothing held
        for it, waited until its timeout; it now takes that slot, as a first instance does."""

        async def main() -> None:
            for supervise in (False, True):
                pool = MockPool(max_total=3, supervise=supervise, default_timeout=5.0)
                pool.register(ServiceSpec(name="m", factory=list, reset=list.clear))
                pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
                pool.register(ServiceSpec(name="b", factory=dict))
                async with pool:
                    await _use_once(pool, "b")
                    async with pool.acquire("g") as (_, lent):
                        assert pool.budget.total == 3
                        asked = asyncio.get_running_loop().time()
                        async with pool.acquire("m") as m:
                            assert asyncio.get_running_loop().time() - asked <= 2 * STALL_MIN_S
                            assert m is not lent
                    assert (pool.stats("g").size, pool.stats("m").size, pool.stats("b").size) == (1, 2, 0)
                    pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_waiter_whose_holder_lent_its_instance_to_a_group_is_retried_soon(self) -> None:
        """A direct waiter of ``m`` queued while a test held ``m``'s one instance and the
        factory failed: its stall check was armed for a stall measured on that holder (twice
        ``m``'s 10 s holds). Then the release went to a group being built, for good: nothing
        is held for the waiter any more, and without supervisors its next creation attempt
        waited for that check, 20 s, however soon the factory worked again. Lending the
        instance looks again at the shortest stall (backed off for the failures, at most 1 s)."""

        async def main() -> None:
            pool, broken = _member_and_group_with_a_breakable_factory()
            async with pool:
                async with pool.acquire("m"):
                    await asyncio.sleep(10.0)  # m's holds are long
                held = pool.acquire("m")
                await held.__aenter__()
                broken[0] = True
                waiter = asyncio.create_task(_use_once(pool, "m"))
                group_held = asyncio.Event()

                async def use_group() -> None:
                    async with pool.acquire("g"):
                        group_held.set()
                        await asyncio.sleep(60.0)

                group = asyncio.create_task(use_group())
                while pool.stats("m").waiting < 2:  # the group's creation waits for m, first
                    await asyncio.sleep(0)
                await held.__aexit__(None, None, None)  # m goes to the group, for good
                await group_held.wait()
                assert pool.stats("m").last_error == "OSError: factory down" and not waiter.done()
                broken[0] = False
                healed_at = asyncio.get_running_loop().time()
                await waiter
                assert asyncio.get_running_loop().time() - healed_at <= STALL_MAX_RETRY_S + 2 * STALL_MIN_S
                group.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await group
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_failed_creation_for_a_waiter_with_nothing_held_is_retried(self) -> None:
        """``m``'s one instance is lent to a group instance a test holds, and ``m``'s factory
        fails as a direct waiter comes: the creation started for it (liveness) failed, and as
        it was on its way when the waiter queued, no stall check was armed. Something is alive
        (the lent instance), so the waiter is not failed either: without supervisors it waited
        for ever, long after the factory worked again. It is retried with backoff."""

        async def main() -> None:
            broken = [False]

            def make() -> list[int]:
                if broken[0]:
                    raise OSError("factory down")
                return []

            pool = MockPool(supervise=False, default_timeout=5.0, clock=_LoopClock())
            pool.register(ServiceSpec(name="m", factory=make, reset=list.clear))
            pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
            async with pool:
                async with pool.acquire("g"):
                    broken[0] = True
                    waiter = asyncio.create_task(_use_once(pool, "m"))
                    await asyncio.sleep(0.5)
                    assert pool.stats("m").last_error == "OSError: factory down" and not waiter.done()
                    broken[0] = False
                    healed_at = asyncio.get_running_loop().time()
                    await waiter
                    assert asyncio.get_running_loop().time() - healed_at <= STALL_MAX_RETRY_S + STALL_MIN_S
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_waiter_whose_holders_instance_failed_its_recovery_is_retried_soon(self) -> None:
        """``m`` is at its ``max_size``: one instance lent to a group a test holds, one held by
        a test, whose 10 s holds armed the direct waiter's stall check 20 s ahead. The held
        instance is discarded while the factory fails: its recovery fails and destroys it, and
        so does the creation started for the waiter. Nothing is held for the waiter any more,
        but without supervisors it waited for that check, 20 s, however soon the factory
        worked again. It is retried at the shortest stall, backed off for the failures."""

        async def main() -> None:
            pool, broken = _member_and_group_with_a_breakable_factory()
            async with pool:
                async with pool.acquire("m"):
                    await asyncio.sleep(10.0)  # m's holds are long
                async with pool.acquire("g"):
                    held = pool.acquire("m")
                    await held.__aenter__()  # m is at its max_size
                    waiter = asyncio.create_task(_use_once(pool, "m"))
                    await asyncio.sleep(0.5)
                    broken[0] = True
                    held.discard()
                    await held.__aexit__(None, None, None)
                    await asyncio.sleep(0.5)
                    stats = pool.stats("m")
                    assert (stats.recovery_failures, stats.size, stats.lent) == (1, 1, 1)
                    assert not waiter.done()
                    broken[0] = False
                    healed_at = asyncio.get_running_loop().time()
                    await waiter
                    assert asyncio.get_running_loop().time() - healed_at <= STALL_MAX_RETRY_S + STALL_MIN_S
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_waiter_whose_holders_instance_a_lowered_max_size_retired_is_served_soon(self) -> None:
        """``m`` has two instances: one lent to an idle group, one held by a test, whose 10 s
        holds armed the direct waiter's stall check 20 s ahead. ``resize`` lowers ``m``'s
        ``max_size`` to 1, so the held instance is destroyed as it comes back: nothing is held
        for the waiter any more, and the idle group could give its member back, but without
        supervisors it waited for that check. It looks again at the shortest stall."""

        async def main() -> None:
            pool = MockPool(supervise=False, default_timeout=None, clock=_LoopClock())
            pool.register(ServiceSpec(name="m", factory=list, reset=list.clear, max_size=2))
            pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
            async with pool:
                async with pool.acquire("m"):
                    await asyncio.sleep(10.0)  # m's holds are long
                await _use_once(pool, "g")  # an idle group keeps m's instance
                held = pool.acquire("m")
                await held.__aenter__()  # m is at its max_size
                waiter = asyncio.create_task(_use_once(pool, "m"))
                await asyncio.sleep(0.5)
                await pool.resize("m", max_size=1)
                await held.__aexit__(None, None, None)  # destroyed: m is over its max_size
                released_at = asyncio.get_running_loop().time()
                await waiter
                assert asyncio.get_running_loop().time() - released_at <= 2 * STALL_MIN_S
                assert (pool.stats("m").size, pool.stats("g").size) == (1, 0)
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_waiter_with_nothing_held_is_served_soon_after_room_is_made_at_max_total(self) -> None:
        """``m``'s one instance is lent to a group instance a test holds, and the pool is at
        ``max_total`` with ``b``'s instances held: ``m``'s direct waiter has nothing held for it
        and no room to create. When ``b``'s leases end, one of its idle instances may make room
        (it has two), but without supervisors the waiter looked again only after a stall
        measured on ``m``'s own holds (twice 10 s): no lease of ``m`` is held for it to wait
        for. It looks again at the shortest stall."""

        async def main() -> None:
            # The holds measured on the loop's virtual time, as the waits are.
            pool = MockPool(max_total=4, supervise=False, default_timeout=None, clock=_LoopClock())
            pool.register(ServiceSpec(name="m", factory=list, reset=list.clear))
            pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))
            pool.register(ServiceSpec(name="b", factory=dict))
            async with pool:
                async with pool.acquire("m"):
                    await asyncio.sleep(10.0)  # m's holds are long
                async with pool.acquire("g"):
                    async with pool.acquire("b"), pool.acquire("b"):
                        assert pool.budget.total == 4
                        waiter = asyncio.create_task(_use_once(pool, "m"))
                        await asyncio.sleep(1.0)
                        assert not waiter.done()
                    released = asyncio.get_running_loop().time()
                    await waiter
                    assert asyncio.get_running_loop().time() - released <= 2 * STALL_MIN_S
                    assert (pool.stats("b").size, pool.stats("m").size) == (1, 2)
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_tests_that_hold_a_group_and_then_lease_its_member_all_finish(self) -> None:
        """Each test holds ``g`` and then leases ``m``, of ``max_size=4``, directly. A group
        instance keeps an ``m`` for good and its creations queue first at ``m``: allowed every
        ``m``, the groups took three or four, and the tests holding them took turns on what
        was left, or waited for an ``m`` that would never come: 59 of the 64 timed out. Groups
        keep at most half of a member its own tests lease."""

        async def main() -> None:
            pool = MockPool(supervise=False, default_timeout=5.0)
            pool.register(ServiceSpec(name="m", factory=list, reset=list.clear, max_size=4))
            pool.register(ServiceSpec(name="g", factory=lambda m: ("group", m), depends_on=("m",)))

            async def test() -> None:
                async with pool.acquire("g"), pool.acquire("m"):
                    await asyncio.sleep(0.05)

            async with pool:
                results = await asyncio.gather(*(test() for _ in range(64)), return_exceptions=True)
                assert [r for r in results if r is not None] == []
                assert pool.stats("g").size <= 2
                pool.check_invariants()

        _run_in_virtual_time(main())

    def test_a_group_held_back_by_its_members_half_says_so_when_a_wait_times_out(self) -> None:
        """``m`` (max_size 2) is leased directly, so groups keep at most one of its
        instances: a second ``g`` waits for the first, and its timeout names that bound."""

        async def main() -> None:
            pool = _member_and_group(max_size=2)
            async with pool:
                await _use_once(pool, "m")
                async with pool.acquire("g"):
                    with pytest.raises(AcquireTimeout) as caught:
                        async with pool.acquire("g", timeout=1.0):
                            pass
                assert "the groups built on member 'm' keep 1 of its max_size=2" in str(caught.value)
                assert "raise 'm''s max_size" in str(caught.value)

        _run_in_virtual_time(main())


class TestLoops:
    def test_one_pool_serves_many_event_loops(self) -> None:
        """pytest-asyncio gives each test its own loop; the pool serves them all."""
        pool = _pool(max_size=2)

        async def use() -> None:
            async def one() -> None:
                async with pool.acquire("svc"):
                    await asyncio.sleep(0)

            await asyncio.gather(one(), one(), one())
            pool.check_invariants()

        for _ in range(3):
            asyncio.run(use())
        stats = pool.stats("svc")
        # Whether a second instance is made depends on measured hold and creation times (the
        # sizing controller); the bound holds either way.
        assert stats.acquisitions == 9 and 1 <= stats.size <= 2
        pool.close()
        assert pool.closed

    def test_under_trio_each_entry_point_says_that_mockpool_needs_asyncio(self) -> None:
        """trio is not supported. ``aclose`` raised a bare ``RuntimeError: no running event
        loop``, and ``start`` named the pool as a service, and the call as an acquire."""
        pool = _pool()

        async def main() -> None:
            for call, said in (
                (lambda: pool.acquire("svc").__aenter__(), "service 'svc': acquire needs"),
                (pool.start, "pool 'p': start needs"),
                (pool.aclose, "pool 'p': aclose needs"),
            ):
                with pytest.raises(MockPoolError, match="trio is not supported") as caught:
                    await call()
                assert str(caught.value).startswith(said)

        anyio.run(main, backend="trio")
        pool.close()

    def test_close_inside_a_loop_says_to_await(self) -> None:
        pool = _pool()

        async def main() -> None:
            with pytest.raises(Exception, match=r"use 'await pool.aclose\(\)' there"):
                pool.close()
            await pool.aclose()

        asyncio.run(main())


class TestReport:
    @pytest.mark.asyncio
    async def test_report_forms(self) -> None:
        pool = _pool()
        async with pool:
            async with pool.acquire("svc"):
                pass
            report = pool.report()
        data = json.loads(report.to_json())
        assert data["pool"] == "p"
        assert data["services"]["svc"]["acquisitions"] == 1
        assert data["services"]["svc"]["recoveries"] == {"snapshot": 0, "factory": 0, "minimal": 0, "stub": 0}
        text = str(report)
        assert text.splitlines()[0].startswith("mockpool report: pool 'p'")
        assert "svc" in text
        assert "<MockPool 'p' closed [svc: 0 in use" in repr(pool)

    @pytest.mark.asyncio
    async def test_warmup_s_counts_the_creations_made_while_the_runtime_started(self) -> None:
        """The scaling supervisor's min_size floor may create everything before ``warm`` runs;
        that is warm-up too. Each creation costs 1 s on the fake clock: warmup_s is all of it."""
        clock = FakeClock()

        def factory() -> dict[str, int]:
            clock.advance(1.0)
            return {}

        pool = MockPool(clock=clock)
        pool.register(ServiceSpec(name="svc", factory=factory, min_size=3, max_size=3))
        async with pool:
            assert pool.stats("svc").size == 3
            assert pool.warmup_s == 3.0


def test_supervisor_settings_of_the_wrong_type_are_refused_at_once() -> None:
    with pytest.raises(
        ServiceConfigError, match=r"scaling='fast' must be a mockpool.supervisors.ScalingConfig"
    ):
        MockPool(scaling="fast")  # type: ignore[arg-type]
    with pytest.raises(ServiceConfigError, match="adaptation="):
        MockPool(adaptation={"error_rate": 0.5})  # type: ignore[arg-type]


def test_close_gives_up_on_a_leaked_lease_after_close_timeout_and_destroys_it() -> None:
    destroyed: list[object] = []

    async def main() -> float:
        pool = MockPool(close_timeout=5.0)
        pool.register(ServiceSpec(name="svc", factory=dict, destroy=destroyed.append))
        await pool.start()
        leaked = pool.acquire("svc")
        await leaked.__aenter__()  # never released
        loop = asyncio.get_running_loop()
        started = loop.time()
        await pool.aclose()
        return loop.time() - started

    loop = looptime.new_event_loop(start=0.0)  # virtual time: the 5 s pass at once
    try:
        waited = loop.run_until_complete(main())
    finally:
        loop.close()
    assert waited == pytest.approx(5.0, abs=0.01)
    assert destroyed == [{}]


@pytest.mark.asyncio
async def test_a_bind_that_raises_sends_the_instance_to_recovery_not_to_limbo() -> None:
    calls: list[int] = []

    def bind(d: dict[str, int]) -> dict[str, int]:
        calls.append(1)
        if len(calls) == 1:
            raise AttributeError("bind failed")
        return d

    pool = MockPool()
    pool.register(ServiceSpec(name="svc", factory=dict, bind=bind, max_size=1))
    async with pool:
        with pytest.raises(AttributeError, match="bind failed"):
            async with pool.acquire("svc"):
                pass
        assert pool.stats("svc").in_use == 0
        async with pool.acquire("svc", timeout=5.0) as d:  # recovered: the only slot is usable
            assert d == {}
        pool.check_invariants()


def test_sync_close_awaits_group_members_async_destroy_from_a_fresh_loop() -> None:
    destroyed: list[str] = []

    class Member:
        async def aclose(self) -> None:
            destroyed.append("member")

    pool = MockPool()
    pool.register(ServiceSpec(name="member", factory=Member, destroy=Member.aclose))
    pool.register(ServiceSpec(name="group", factory=lambda m: object(), depends_on=("member",)))

    async def use() -> None:
        async with pool.acquire("group"):
            pass

    asyncio.run(use())  # that loop and its runtime end here
    pool.close()  # a new loop, whose runtime never starts: the destroy is awaited directly
    assert destroyed == ["member"]
    assert pool.stats("member").leaks == 0


class TestTasksThatNeverRan:
    """A loop that ends right after the pool spawned background work cancels those tasks before
    their first step (pytest-asyncio closes each test's loop; a test's acquire may be waiting).
    What they would have settled must not stay reserved, and no coroutine may warn "never
    awaited" (fatal under ``filterwarnings = error``)."""

    def test_a_creation_spawned_as_its_loop_ends_does_not_block_the_service(self) -> None:
        pool = MockPool(supervise=False, default_timeout=2.0)
        pool.register(ServiceSpec(name="svc", factory=dict, max_size=1))

        async def queue_and_leave() -> None:
            waiting = asyncio.create_task(pool.acquire("svc").__aenter__())
            await asyncio.sleep(0)  # the waiter queued and a creation was spawned
            waiting.cancel()  # ... and the loop ends before the creation's first step

        asyncio.run(queue_and_leave())
        assert pool.stats("svc").creating == 0  # was 1 for ever: every later acquire timed out

        async def use() -> dict[str, int]:
            async with pool.acquire("svc") as instance:
                return dict(instance)

        assert asyncio.run(use()) == {}
        gc.collect()  # a coroutine left unawaited would warn here
        pool.check_invariants()
        pool.close()

    def test_a_background_reset_that_never_ran_is_recovered_by_the_next_loop(self) -> None:
        resets: list[dict[str, int]] = []

        async def reset(instance: dict[str, int]) -> None:
            instance.clear()
            resets.append(instance)

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))

        svc = pool.service_pools["svc"]

        lease = pool.acquire("svc")

        async def dirty() -> None:
            (await lease.__aenter__())["left"] = 1

        async def release_and_leave() -> None:
            # First thing in a new loop: the release spawns the async reset into this loop's
            # runtime, which is not even up yet; the loop ends before either takes a step.
            assert lease._entry is not None
            svc.release_entry(lease._entry)

        asyncio.run(dirty())
        asyncio.run(release_and_leave())
        assert pool.stats("svc").recovering == 1 and len(svc.orphans) == 1  # parked, not lost

        async def use() -> dict[str, int]:
            async with pool.acquire("svc") as instance:
                return dict(instance)

        assert asyncio.run(use()) == {}
        gc.collect()
        pool.check_invariants()
        pool.close()


@pytest.mark.asyncio
async def test_lowering_max_size_while_leased_destroys_the_extra_instances_as_they_come_back() -> None:
    destroyed: list[object] = []
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=object, destroy=destroyed.append, max_size=4))
    async with pool:
        leases = [pool.acquire("svc") for _ in range(4)]
        for lease in leases:
            await lease.__aenter__()
        await pool.resize("svc", max_size=2)
        pool.check_invariants()
        for lease in leases:
            await lease.__aexit__(None, None, None)
            pool.check_invariants()
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.max_size) == (2, 2, 2)
        assert len(destroyed) == 2 and stats.destroyed == 2
        # The bound holds from now on: 3 concurrent leases get 2 instances.
        async with pool.acquire("svc"), pool.acquire("svc"):
            with pytest.raises(AcquireTimeout):
                async with pool.acquire("svc", timeout=0):
                    pass


def test_supervisors_whose_loop_ends_before_their_first_step_never_warn() -> None:
    """asyncio.run ending mid-release started a runtime whose supervisors the loop cancelled
    before they ran: "coroutine 'run' was never awaited", fatal under filterwarnings=error."""
    pool = MockPool(supervise=True)

    async def reset(instance: dict[str, int]) -> None:
        instance.clear()

    pool.register(ServiceSpec(name="svc", factory=dict, reset=reset))

    async def start_a_runtime_and_leave() -> None:
        # Starts this loop's runtime lazily. The runtime's host takes its first step (and spawns
        # the supervisors) in the loop step that stops asyncio.run's loop: the supervisors are
        # cancelled before they ever ran.
        pool.spawn(asyncio.sleep, 0)

    for _ in range(3):
        asyncio.run(start_a_runtime_and_leave())
        gc.collect()  # an unawaited coroutine warns here (an error under filterwarnings)
    pool.close()


class TestLoopsClosedWithoutCancelling:
    """pytest-asyncio 0.23's ``event_loop`` fixture closes a test's loop without cancelling its
    tasks: background work started there (warming, ``expect``) is frozen mid-way for good. It
    must be settled when the pool next runs, in any loop."""

    #: The closed loops, kept alive: their frozen tasks must not be garbage-collected, which
    #: would run their cleanup and hide the bug.
    closed: ClassVar[list[asyncio.AbstractEventLoop]] = []

    def _close_without_cancelling(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        loop = asyncio.new_event_loop()
        self.closed.append(loop)
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()  # what the 0.23 fixture does: pending tasks stay pending, unrun

    def test_a_creation_frozen_in_a_closed_loop_is_settled_by_the_next_acquire(self) -> None:
        gate = asyncio.Event()
        made: list[int] = []

        async def factory() -> int:
            if not made:
                made.append(0)
                await gate.wait()  # the first creation freezes here with its loop
            made.append(len(made))
            return made[-1]

        pool = MockPool(default_timeout=5.0)
        pool.register(ServiceSpec(name="db", factory=factory, max_size=1))

        async def warm_then_end() -> None:
            assert pool.expect(["db"]) == 1
            for _ in range(5):
                await asyncio.sleep(0)  # the creation starts, and waits on the gate
            assert pool.stats("db").creating == 1

        self._close_without_cancelling(warm_then_end)

        async def use() -> int:
            async with pool.acquire("db", timeout=3) as instance:
                return int(instance)

        assert asyncio.run(use()) == 1  # was AcquireTimeout: size=0, in_use=0, waiting=1
        stats = pool.stats("db")
        assert (stats.size, stats.creating) == (1, 0)
        pool.check_invariants()
        pool.close()

    def test_a_reset_frozen_in_a_closed_loop_is_recovered_by_the_next_loop(self) -> None:
        gate = asyncio.Event()
        resets: list[int] = []

        async def reset(instance: dict[str, int]) -> None:
            resets.append(1)
            if len(resets) == 1:
                await gate.wait()  # the first reset freezes with its loop
            instance.clear()

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))

        async def use_and_leave_mid_reset() -> None:
            lease = pool.acquire("svc")
            instance = await lease.__aenter__()
            instance["dirty"] = 1
            release = asyncio.ensure_future(lease.__aexit__(None, None, None))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not release.done()  # frozen in the reset

        self._close_without_cancelling(use_and_leave_mid_reset)

        async def use() -> dict[str, int]:
            async with pool.acquire("svc", timeout=3) as instance:
                return dict(instance)

        assert asyncio.run(use()) == {}
        assert sum(pool.stats("svc").recoveries.values()) == 1
        pool.check_invariants()
        pool.close()

    def test_a_group_creation_frozen_with_its_members_gives_them_back(self) -> None:
        """A group's creation froze in its factory, after it had leased its members: the
        members went back only if the frozen coroutine ever ran its cleanup, which it never
        does. With ``max_size=1`` the member and the group then waited for ever."""
        gate = asyncio.Event()
        built: list[int] = []

        async def session(redis: dict[str, int]) -> dict[str, Any]:
            built.append(1)
            if len(built) == 1:
                await gate.wait()  # the first build freezes with its loop, members in hand
            return {"redis": redis}

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="redis", factory=dict, max_size=1))
        pool.register(ServiceSpec(name="session", factory=session, depends_on=("redis",), max_size=1))

        waiters: list[asyncio.Future[Any]] = []

        async def acquire_and_leave() -> None:
            waiters.append(asyncio.ensure_future(pool.acquire("session").__aenter__()))
            for _ in range(10):
                await asyncio.sleep(0)
            assert built == [1] and pool.stats("redis").in_use == 1  # frozen, member leased

        self._close_without_cancelling(acquire_and_leave)

        async def use() -> None:
            async with pool.acquire("redis", timeout=3):
                pass
            async with pool.acquire("session", timeout=3) as instance:
                assert set(instance) == {"redis"}

        asyncio.run(use())
        pool.check_invariants()
        assert (pool.stats("redis").size, pool.stats("session").size) == (1, 1)
        pool.close()

    def test_members_given_back_with_an_async_reset_start_one_runtime_in_the_next_loop(self) -> None:
        """As above, with a member whose reset is async. The next loop's first background
        need (its runtime's start) settles the closed loop: the member's reset, handed back,
        needs a runtime too, and started one from inside that settling; the first then made
        another and replaced it. The loop ran two runtimes (supervisors twice over), and the
        pool knew one: the other, with the reset in it, outlived ``aclose`` (and in a loop
        closed without cancelling, nothing would ever settle the reset: the member stayed
        "resetting" for good)."""
        gate = asyncio.Event()
        built: list[int] = []
        resets: list[object] = []

        async def reset(redis: dict[str, int]) -> None:
            resets.append(redis)

        async def session(redis: dict[str, int]) -> dict[str, Any]:
            built.append(1)
            if len(built) == 1:
                await gate.wait()  # the first build freezes with its loop, members in hand
            return {"redis": redis}

        pool = MockPool(supervise=False)
        # max_size=2: the next loop's acquire of the member starts a creation, and with it the
        # loop's runtime, at once.
        pool.register(ServiceSpec(name="redis", factory=dict, reset=reset, max_size=2))
        pool.register(ServiceSpec(name="session", factory=session, depends_on=("redis",), max_size=1))
        waiters: list[asyncio.Future[Any]] = []

        async def acquire_and_leave() -> None:
            waiters.append(asyncio.ensure_future(pool.acquire("session").__aenter__()))
            for _ in range(10):
                await asyncio.sleep(0)
            assert built == [1] and pool.stats("redis").in_use == 1  # frozen, member leased

        self._close_without_cancelling(acquire_and_leave)

        async def use() -> None:
            async with asyncio.timeout(5):
                async with pool.acquire("redis", timeout=3):
                    pass
                runtimes = [t for t in asyncio.all_tasks() if t.get_name().endswith("runtime")]
                assert len(runtimes) == 1  # was 2
                assert resets  # the given-back member's reset ran
                await pool.aclose()
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        asyncio.run(use())

    @staticmethod
    async def _hand_over_in_the_last_step(pool: MockPool, waiters: list[asyncio.Future[Any]]) -> None:
        """Hold the only instance, queue a waiter, and release in the loop's last step: the
        waiter is handed the instance but never runs. ``waiters`` keeps the waiting task
        referenced (as a failed test's traceback keeps its tasks), so that it is not collected."""
        lease = pool.acquire("svc")
        await lease.__aenter__()
        waiters.append(asyncio.ensure_future(pool.acquire("svc").__aenter__()))
        await asyncio.sleep(0)
        assert pool.stats("svc").waiting == 1
        asyncio.get_running_loop().stop()  # this step is the loop's last
        await lease.__aexit__(None, None, None)
        assert pool.stats("svc").in_use == 1  # handed over

    def test_an_instance_handed_to_a_waiter_whose_loop_closed_comes_back(self) -> None:
        """A release handed the instance to a waiter; its loop closed before the waiter ran.
        Nobody would ever end that lease: at ``max_size=1`` every later acquire timed out, for
        as long as the waiting task was referenced."""
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, max_size=1))
        waiters: list[asyncio.Future[Any]] = []
        self._close_without_cancelling(lambda: self._hand_over_in_the_last_step(pool, waiters))

        async def use() -> None:
            async with pool.acquire("svc", timeout=3):
                pass

        asyncio.run(use())
        pool.check_invariants()
        stats = pool.stats("svc")
        assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0)
        pool.close()

    @pytest.mark.parametrize("handed_over", [False, True], ids=["waiting", "handed-over"])
    def test_a_waiter_of_a_closed_loop_is_collected_without_an_error(
        self, handed_over: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The waiting task of a closed loop is collected at some point, which runs its
        cleanup outside any loop: cancelling its future raised "Event loop is closed", and
        giving back an instance the pool had destroyed since raised a MockPoolError, both as
        unraisable exceptions (an error under ``filterwarnings = error``)."""
        unraisable: list[BaseException | None] = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(info.exc_value))
        # close_timeout: the close need not wait for the lease leaked in the "waiting" case.
        pool = MockPool(supervise=False, close_timeout=0.01)
        pool.register(ServiceSpec(name="svc", factory=dict, max_size=1))
        waiters: list[asyncio.Future[Any]] = []

        async def wait_and_leave() -> None:
            await pool.acquire("svc").__aenter__()  # held for good: a leak, as the test's
            waiters.append(asyncio.ensure_future(pool.acquire("svc").__aenter__()))
            await asyncio.sleep(0)

        main = self._hand_over_in_the_last_step(pool, waiters) if handed_over else wait_and_leave()
        loop = asyncio.new_event_loop()  # not kept: its waiter is to be collected
        try:
            loop.run_until_complete(main)
        finally:
            loop.close()
        pool.close()  # destroys what is left, the instance handed over included
        del loop, waiters[:]
        gc.collect()
        assert unraisable == []
        pool.check_invariants()

    def test_waiting_tests_of_a_closed_loop_are_collected_without_an_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As above, with the waiting tasks a test's own (an ``async with`` in a coroutine
        of its own, not ``__aenter__`` itself), the first handed the instance in the loop's
        last step. The acquire kept its task in a local across the wait: once the pool had
        taken the instance back, only the cyclic garbage collector freed such a task, and it
        finalizes coroutines in any order. Closing a test's coroutine threw into its acquire
        while that was closing itself: "coroutine already executing", unraisable (an error
        under ``filterwarnings = error``). Twenty tasks: the collector's order hit it from
        fifteen on, every time."""
        unraisable: list[BaseException | None] = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(info.exc_value))
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, max_size=1))

        async def hand_over_in_the_last_step() -> None:
            lease = pool.acquire("svc")
            await lease.__aenter__()

            async def test() -> None:
                async with pool.acquire("svc"):
                    pass

            for _ in range(20):
                asyncio.ensure_future(test())  # noqa: RUF006  (referenced by its loop only: to be collected)
            await asyncio.sleep(0)
            asyncio.get_running_loop().stop()  # this step is the loop's last
            await lease.__aexit__(None, None, None)  # handed to the first test

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(hand_over_in_the_last_step())
        finally:
            loop.close()
        del loop

        async def use() -> None:  # takes the instance back
            async with asyncio.timeout(5):
                async with pool.acquire("svc", timeout=2):
                    pass

        asyncio.run(use())
        gc.collect()
        assert unraisable == []
        pool.check_invariants()
        pool.close()

    @pytest.mark.parametrize("ending", ["async reset", "discard"])
    def test_a_lease_of_a_task_collected_after_its_loop_closed_comes_back(
        self, ending: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task the test left holding a lease is collected once its loop, closed without
        cancelling it, drops it: its coroutine is closed, and its ``async with`` block ends
        outside any loop. The release began the async reset (or sent the discarded instance
        to recovery), then found no loop to run it in: the instance stayed "resetting" (or
        "recovering") for good, so at ``max_size=1`` every later acquire timed out; and
        awaiting the reset there raised "coroutine ignored GeneratorExit" as an unraisable
        exception (an error under ``filterwarnings = error``)."""
        unraisable: list[BaseException | None] = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(info.exc_value))
        resets: list[object] = []

        async def reset(instance: dict[str, int]) -> None:
            resets.append(instance)

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))

        async def leave_a_holder() -> None:
            entered = asyncio.Event()
            async with pool.acquire("svc"):  # made now: the holder's acquire is a hit (a
                pass  # queued one keeps its task referenced, for nesting, until it ends)

            async def holder() -> None:
                lease = pool.acquire("svc")
                async with lease:
                    if ending == "discard":
                        lease.discard()
                    entered.set()
                    await asyncio.Event().wait()  # the loop closes under it

            asyncio.ensure_future(holder())  # noqa: RUF006  (referenced by its loop only: to be collected)
            await entered.wait()

        loop = asyncio.new_event_loop()  # not kept: its holder is to be collected
        try:
            loop.run_until_complete(leave_a_holder())
        finally:
            loop.close()
        del loop
        gc.collect()  # the holder's block ends here, outside any loop
        assert unraisable == []

        async def use_again() -> None:
            async with asyncio.timeout(5):
                async with pool.acquire("svc", timeout=2):  # was AcquireTimeout
                    pass
            pool.check_invariants()
            stats = pool.stats("svc")
            assert (stats.size, stats.idle, stats.in_use, stats.recovering) == (1, 1, 0, 0)

        asyncio.run(use_again())
        pool.close()

    def test_a_lease_of_a_task_collected_while_another_loop_runs_comes_back_quietly(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The task left holding a lease in a closed loop is collected while the next test's
        loop runs (the garbage collector runs whenever it likes): its ``async with`` block ends
        in that other loop, which started the async reset and awaited it inside a coroutine
        being closed: "coroutine ignored GeneratorExit", an unraisable error charged to an
        unrelated test (fatal under ``filterwarnings = error``)."""
        unraisable: list[BaseException | None] = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(info.exc_value))
        resets: list[object] = []

        async def reset(instance: dict[str, int]) -> None:
            await asyncio.sleep(0)
            resets.append(instance)

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=dict, reset=reset, max_size=1))

        async def leave_a_holder() -> None:
            entered = asyncio.Event()
            async with pool.acquire("svc"):  # made now: the holder's acquire is a hit
                pass

            async def holder() -> None:
                async with pool.acquire("svc"):
                    entered.set()
                    await asyncio.Event().wait()  # the loop closes under it

            asyncio.ensure_future(holder())  # noqa: RUF006  (referenced by its loop only: to be collected)
            await entered.wait()

        loop = asyncio.new_event_loop()  # not kept: its holder is to be collected
        try:
            loop.run_until_complete(leave_a_holder())
        finally:
            loop.close()
        del loop

        async def use_again() -> None:
            gc.collect()  # the holder's block ends here, in this test's running loop
            async with asyncio.timeout(5):
                async with pool.acquire("svc", timeout=2):
                    pass
            pool.check_invariants()
            stats = pool.stats("svc")
            assert (stats.size, stats.idle, stats.in_use, stats.recovering) == (1, 1, 0, 0)

        asyncio.run(use_again())
        assert unraisable == []  # was RuntimeError('coroutine ignored GeneratorExit')
        assert len(resets) == 3  # the holder's instance was reset before it was used again
        pool.close()

    @pytest.mark.parametrize("reset", ["no reset", "async reset", "on_release fails the test"])
    def test_a_queued_lease_of_a_task_left_in_a_closed_loop_comes_back(
        self, reset: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task that queued for its lease (the first acquire of the service: a creation) is
        left holding it when its loop closes without cancelling it. The pool kept that task
        referenced (``MockPool.holds``: which task holds what it queued for, for nested
        leases), so it was never collected, its ``async with`` block never ended, and at
        ``max_size=1`` every later acquire timed out. A task of a closed loop will never run
        again: the next acquire from another loop ends its blocks (closes its coroutine, as
        its collection would), and takes the instance back. What that task's own cleanup
        raises (``pytest.fail`` in an ``on_release`` hook) is logged, not raised into the
        acquire of another test."""
        unraisable: list[BaseException | None] = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(info.exc_value))
        resets: list[object] = []

        async def async_reset(instance: dict[str, int]) -> None:
            await asyncio.sleep(0)
            resets.append(instance)

        released: list[object] = []

        def on_release(instance: dict[str, int], token: object) -> None:
            released.append(instance)
            if len(released) == 1:
                pytest.fail("the held lease's test fails as its block ends")

        pool = MockPool(supervise=False)
        pool.register(
            ServiceSpec(
                name="svc",
                factory=dict,
                reset=async_reset if reset == "async reset" else None,
                on_release=on_release if reset == "on_release fails the test" else None,
                max_size=1,
            )
        )
        ended: list[str] = []

        async def leave_a_holder() -> None:
            entered = asyncio.Event()

            async def holder() -> None:
                try:
                    async with pool.acquire("svc"):  # queued: no instance yet
                        entered.set()
                        await asyncio.Event().wait()  # the loop closes under it
                finally:
                    ended.append("holder")

            asyncio.ensure_future(holder())  # noqa: RUF006  (referenced by its loop only)
            await entered.wait()

        self._close_without_cancelling(leave_a_holder)
        gc.collect()  # nothing of the pool's may keep the holder alive; this alone did not free it
        assert pool.stats("svc").in_use == 1

        async def use_again() -> None:
            async with asyncio.timeout(5):
                async with pool.acquire("svc", timeout=2):  # was AcquireTimeout
                    pass
            pool.check_invariants()
            stats = pool.stats("svc")
            assert (stats.size, stats.idle, stats.in_use, stats.recovering) == (1, 1, 0, 0)

        asyncio.run(use_again())
        assert ended == ["holder"]
        assert len(resets) == (2 if reset == "async reset" else 0)
        assert not pool.holds.by_task
        assert unraisable == []
        pool.close()

    def test_a_stall_check_due_as_the_loop_closed_never_warns(self, caplog: pytest.LogCaptureFixture) -> None:
        """The stall check runs in a task that its timer starts. Due in the loop's last step
        (pytest-asyncio-cooperative's loop, at the end of the stress suite; ``asyncio.run``'s
        shutdown steps in a thread's loop, after it cancelled what was left), the task never
        ran, and its coroutine warned "never awaited" when the closed loop dropped it: fatal
        under ``filterwarnings = error``. So did the runtime that the timer started there.
        Closed unrun, the two tasks then still made asyncio log "Task was destroyed but it is
        pending!" as errors when collected."""
        caplog.set_level(logging.ERROR, logger="asyncio")
        gc.collect()  # what earlier tests left (their own closed loops' tasks) is logged now...
        caplog.clear()
        pool = MockPool(name="last-step", supervise=False)
        pool.register(ServiceSpec(name="last_step_svc", factory=dict, max_size=1))
        svc = pool.service_pools["last_step_svc"]
        loop = asyncio.new_event_loop()
        self.closed.append(loop)
        try:
            # The stall timer fires in the loop's last step: the task it starts never runs.
            loop.call_soon(svc._stall_due, loop)
            loop.call_soon(loop.stop)
            loop.run_forever()
        finally:
            loop.close()
        gc.collect()  # a stall check dropped unrun would warn here
        pool.settle_closed_loops()  # what the pool's next use, in any loop, does first
        pool.close()
        del pool, svc
        gc.collect()  # ...or here, with the pool and its abandoned runtime
        # ...and only this test's tasks count: a cycle an earlier test left may be freed here too.
        ours = [
            message
            for message in (r.getMessage() for r in caplog.records if r.name == "asyncio")
            if "last-step" in message or "last_step_svc" in message
        ]
        assert ours == []


class TestErrorsNameTheRealCause:
    @pytest.mark.asyncio
    async def test_a_hook_timeout_names_the_hook_and_its_timeout(self) -> None:
        async def slow_factory() -> object:
            await asyncio.Event().wait()
            return object()

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="slow", factory=slow_factory, create_timeout=0.01))
        async with pool:
            with pytest.raises(RecoveryFailedError) as caught:
                async with pool.acquire("slow", timeout=5):
                    pass  # pragma: no cover
        assert isinstance(caught.value.__cause__, HookTimeout)
        assert str(caught.value.__cause__) == (
            "service 'slow': the factory hook did not finish within 0.01 s (create_timeout); "
            "make it faster, or raise create_timeout= on the ServiceSpec"
        )
        assert "last error: HookTimeout: service 'slow': the factory hook" in str(caught.value)

    @pytest.mark.asyncio
    async def test_a_timeout_of_zero_during_the_first_creation_names_the_creation(self) -> None:
        """``timeout=0`` (take one only if ready) while the service's only instance is being
        made: the message blamed max_size and "tests that hold leases too long", though no
        test held anything."""
        gate = asyncio.Event()

        async def factory() -> object:
            await gate.wait()
            return object()

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=factory, max_size=1))
        async with pool:
            with pytest.raises(AcquireTimeout) as caught:
                async with pool.acquire("svc", timeout=0):
                    pass  # pragma: no cover
            gate.set()
            async with pool.acquire("svc", timeout=5):
                pass
            pool.check_invariants()
        message = str(caught.value)
        assert "within 0 s (size=0, in_use=0, waiting=1, creating=1, max_size=1)" in message
        assert "1 instance(s) were being created and none was ready in time" in message
        assert "hold leases too long" not in message

    @pytest.mark.asyncio
    async def test_acquire_timeout_names_max_total_when_that_is_the_bound(self) -> None:
        pool = MockPool(supervise=False, max_total=1)
        pool.register(ServiceSpec(name="a", factory=object))
        pool.register(ServiceSpec(name="b", factory=object))
        async with pool, pool.acquire("a"):
            with pytest.raises(AcquireTimeout) as caught:
                async with pool.acquire("b", timeout=0.001):
                    pass  # pragma: no cover
        message = str(caught.value)
        assert "(size=0, in_use=0, waiting=1, creating=0, max_size=64, max_total=1)" in message
        assert "the pool is at max_total=1 instances across its services: raise max_total" in message

    @pytest.mark.asyncio
    async def test_acquire_timeout_names_the_slot_kept_for_another_service(self) -> None:
        """a holds one of two slots and wants a second; the other slot is kept for b's first
        instance, and the timeout comes before a stall lasts long enough to take it."""
        pool = MockPool(supervise=False, max_total=2)
        pool.register(ServiceSpec(name="a", factory=object))
        pool.register(ServiceSpec(name="b", factory=object))
        async with pool, pool.acquire("a"):
            with pytest.raises(AcquireTimeout) as caught:
                async with pool.acquire("a", timeout=0.001):
                    pass  # pragma: no cover
        message = str(caught.value)
        assert "(size=1, in_use=1, waiting=1, creating=0, max_size=64, max_total=2)" in message
        assert (
            "the rest of the pool's max_total=2 is kept for the first instance of services that "
            "have none yet: raise max_total"
        ) in message

    @pytest.mark.asyncio
    async def test_acquire_timeout_names_a_group_member_at_its_max_size(self) -> None:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="redis", factory=object, max_size=1))
        pool.register(ServiceSpec(name="session", factory=lambda r: {"r": r}, depends_on=("redis",)))
        async with pool, pool.acquire("redis"):
            with pytest.raises(AcquireTimeout) as caught:
                async with pool.acquire("session", timeout=0.001):
                    pass  # pragma: no cover
        assert "member 'redis' is at its max_size=1" in str(caught.value)
        assert "raise 'redis''s max_size" in str(caught.value)

    def test_register_refuses_what_max_total_can_never_hold(self) -> None:
        pool = MockPool(max_total=3)
        with pytest.raises(
            ServiceConfigError, match=r"min_size=4 needs 4 instances, more than the pool's max_total=3"
        ):
            pool.register(ServiceSpec(name="big", factory=object, min_size=4))
        for name in ("redis", "jwt", "db"):
            pool.register(ServiceSpec(name=name, factory=object))
        with pytest.raises(ServiceConfigError) as caught:
            pool.register(
                ServiceSpec(name="session", factory=lambda *m: m, depends_on=("redis", "jwt", "db"))
            )
        assert str(caught.value) == (
            "service 'session': depends_on=('redis', 'jwt', 'db') makes one instance take 4 instances "
            "(itself and its members redis, jwt, db), more than the pool's max_total=3; raise max_total"
        )

    @pytest.mark.asyncio
    async def test_a_factory_that_returns_none_is_an_error_naming_it(self) -> None:
        def make_nothing() -> None:
            return None

        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=make_nothing))
        async with pool:
            with pytest.raises(RecoveryFailedError) as caught:
                async with pool.acquire("svc", timeout=5):
                    pass  # pragma: no cover
        assert "the factory TestErrorsNameTheRealCause" in str(caught.value.__cause__)
        assert "make_nothing returned None" in str(caught.value.__cause__)


@pytest.mark.asyncio
async def test_creations_settled_waits_only_for_the_creations_in_flight_when_called() -> None:
    """The start livelock: warm waited in creations_settled while the scaling floor kept
    restarting a failing creation, so 'creating' never reached 0 and start() never returned."""
    gates = [asyncio.Event(), asyncio.Event()]
    started: list[int] = []

    async def factory() -> int:
        started.append(len(started))
        await gates[started[-1]].wait()
        return started[-1]

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=factory))
    svc = pool.service_pools["svc"]
    async with pool:
        assert svc.grow(1) == 1
        settled = asyncio.ensure_future(svc.creations_settled())
        await asyncio.sleep(0)
        assert svc.grow(1) == 1  # a later creation, still in flight when the first ends
        for _ in range(3):
            await asyncio.sleep(0)
        assert started == [0, 1] and not settled.done()
        gates[0].set()
        await asyncio.wait_for(settled, 5)
        assert svc.core.creating == 1  # returned with the later one in flight
        gates[1].set()
        await svc.creations_settled()
        pool.check_invariants()


def test_the_health_jitter_is_seeded_from_the_pool() -> None:
    from mockpool.supervisors.health import HealthSupervisor

    draws = [HealthSupervisor(MockPool(seed=7)).rng.random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert HealthSupervisor(MockPool(seed=8)).rng.random() != draws[0]
    with pytest.raises(ServiceConfigError, match="seed"):
        MockPool(seed="7")  # type: ignore[arg-type]
