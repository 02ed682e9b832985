"""The fault matrix: factory, reset, health check, destroy and snapshot/restore, each ok,
raising, slow or hanging: all 4 ** 5 = 1,024 combinations.

Each combination runs with the supervisors on, eight concurrent acquirers (holding, raising,
discarding, cancelled while waiting or holding), in virtual time (``looptime``: the hooks'
timeouts and the acquire timeouts fire at once) and under a hang bound. It checks the pool's
invariants throughout, ``size <= max_size``, and that the pool serves again once every hook
works: the hooks are switchable, cleared after the faulty phase.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import anyio
import looptime
import pytest

from mockpool import AcquireTimeout, Lease, MockPool, PoolClosedError, RecoveryFailedError, ServiceSpec
from mockpool.supervisors import AdaptationConfig, ScalingConfig

from .conftest import Double, LoopClock

MODES = ("ok", "raise", "slow", "hang")
HOOKS = ("factory", "reset", "health", "destroy", "snapshot")
TIMEOUT = 1.0  # every hook timeout
SLOW = 0.4  # a slow hook: late, but within its timeout
MAX_SIZE = 3
ACQUIRERS = 8


class Boom(Exception):
    """A hook failing on purpose."""


class BodyError(Exception):
    """A test body failing on purpose."""


class Faults:
    """Switchable behaviour per hook."""

    def __init__(self, modes: dict[str, str]) -> None:
        self.modes = dict(modes)

    async def act(self, hook: str) -> None:
        mode = self.modes[hook]
        if mode == "raise":
            raise Boom(hook)
        if mode == "slow":
            await asyncio.sleep(SLOW)
        elif mode == "hang":
            await asyncio.Event().wait()  # until a timeout cancels it

    def clear(self) -> None:
        self.modes = dict.fromkeys(self.modes, "ok")


def make_spec(faults: Faults, *, allow_degraded: bool) -> ServiceSpec:
    async def factory() -> Double:
        await faults.act("factory")
        return Double()

    async def reset(d: Double) -> None:
        await faults.act("reset")
        d.state.clear()

    async def health(d: Double) -> bool:
        await faults.act("health")
        return True

    async def destroy(d: Double) -> None:
        await faults.act("destroy")

    async def snapshot(d: Double) -> dict[str, object]:
        await faults.act("snapshot")
        return dict(d.state)

    async def restore(d: Double, state: dict[str, object]) -> None:
        await faults.act("snapshot")
        d.state = dict(state)

    return ServiceSpec(
        name="svc",
        factory=factory,
        reset=reset,
        health_check=health,
        destroy=destroy,
        snapshot=snapshot,
        restore=restore,
        minimal=Double if allow_degraded else None,
        allow_degraded=allow_degraded,
        min_size=1,
        max_size=MAX_SIZE,
        create_timeout=TIMEOUT,
        reset_timeout=TIMEOUT,
        health_timeout=TIMEOUT,
        destroy_timeout=TIMEOUT,
        health_interval=0.5,
    )


def check(pool: MockPool) -> None:
    pool.check_invariants()
    stats = pool.stats("svc")
    assert stats.size <= stats.max_size


async def acquirer(pool: MockPool, role: int, rng: random.Random) -> None:
    await asyncio.sleep(rng.random() * 0.5)
    try:
        if role == 0:  # a plain test
            lease = pool.acquire("svc", timeout=3.0)
            async with lease as d:
                _write(lease, d, role)
                await asyncio.sleep(rng.random() * 0.3)
        elif role == 1:  # cancelled while waiting or holding
            with anyio.move_on_after(rng.random() * 0.6):
                lease = pool.acquire("svc", timeout=3.0)
                async with lease as d:
                    _write(lease, d, role)
                    await asyncio.sleep(1.0)
        elif role == 2:  # the body raises
            with pytest.raises(BodyError):
                async with pool.acquire("svc", timeout=3.0):
                    raise BodyError
        else:  # the test discards its instance
            async with pool.acquire("svc", timeout=3.0) as lease_value:
                del lease_value
            lease = pool.acquire("svc", timeout=3.0)
            async with lease:
                lease.discard()
    except (AcquireTimeout, RecoveryFailedError):
        pass  # expected while the factory (or snapshot) is broken


def _write(lease: Lease[Double], d: Double, role: int) -> None:
    """What a test writes; an emergency stub (tier 4: an autospec of ``Double``, made even when
    the factory never worked) has no instance attributes, and is only checked to be flagged."""
    if lease.tier == "stub":
        assert lease.degraded
        return
    d.state["mine"] = role


async def watch(pool: MockPool) -> None:
    while True:
        check(pool)
        await asyncio.sleep(0.05)


async def run_combination(modes: dict[str, str], seed: int) -> MockPool:
    rng = random.Random(seed)
    faults = Faults(modes)
    pool = MockPool(
        clock=LoopClock(),
        default_timeout=3.0,
        close_timeout=2.0,
        adaptation=AdaptationConfig(min_samples=4, cooldown_s=1.0, interval_s=0.25),
        scaling=ScalingConfig(shrink_window_s=1.0, interval_s=0.25),
    )
    pool.register(make_spec(faults, allow_degraded=seed % 2 == 1))
    with anyio.fail_after(600):  # virtual seconds: only a real hang gets here
        async with pool, anyio.create_task_group() as tg:
            tg.start_soon(watch, pool)
            async with anyio.create_task_group() as acquirers:
                for i in range(ACQUIRERS):
                    acquirers.start_soon(acquirer, pool, i % 4, rng)
            await asyncio.sleep(2.0)  # supervisors tick: health, scaling, adaptation
            check(pool)
            # The faults clear: the pool must serve again, without a restart.
            faults.clear()
            async with pool.acquire("svc", timeout=10.0) as d:
                assert d is not None
                assert not getattr(d, "state", {}).get("mine"), "a test saw another test's state"
            async with anyio.create_task_group() as again:
                for _ in range(4):
                    again.start_soon(_use, pool)
            check(pool)
            tg.cancel_scope.cancel()
        with pytest.raises(PoolClosedError):
            async with pool.acquire("svc"):
                pass
    return pool


async def _use(pool: MockPool) -> None:
    async with pool.acquire("svc", timeout=10.0) as d:
        await asyncio.sleep(0.01)
        assert d is not None


COMBINATIONS = [dict(zip(HOOKS, combo, strict=True)) for combo in itertools.product(MODES, repeat=len(HOOKS))]


def run_in_virtual_time(modes: dict[str, str], seed: int) -> MockPool:
    """Run one combination in a fresh loop whose time is virtual (looptime, used directly:
    its pytest plugin predates pytest-asyncio 1.x's loop handling and leaks loops there)."""
    loop = looptime.new_event_loop(start=0.0)  # enabled from the start
    try:
        return loop.run_until_complete(run_combination(modes, seed))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize(
    "index",
    [pytest.param(i, id="-".join(f"{h}={m}" for h, m in c.items())) for i, c in enumerate(COMBINATIONS)],
)
def test_fault_combination(index: int) -> None:
    pool = run_in_virtual_time(COMBINATIONS[index], seed=index)
    stats = pool.stats("svc")
    assert stats.acquisitions >= 5
    assert pool.supervisor_errors == {}, pool.supervisor_errors


def test_matrix_is_complete() -> None:
    assert len(COMBINATIONS) == 4**5 == len({tuple(c.values()) for c in COMBINATIONS})
