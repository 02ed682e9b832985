"""Every end-of-run check of the stress suite can fail: each is fed a run where what it checks
does not add up, and must say so (a check that cannot fail proves nothing)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from mockpool import MockPool, PoolStats, ServiceSpec, TierCounts
from stress import cli
from stress.faults import FaultInjector
from stress.results import Check, StressResult
from stress.runner import Outcome, RunOutcomes


def _stats(**changes: Any) -> PoolStats:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=object))
    return dataclasses.replace(pool.stats("svc"), **changes)


def _result(
    stats: PoolStats, *, degraded_seen: int = 0, injected: dict[str, int] | None = None, **out: Any
) -> StressResult:
    outcomes = RunOutcomes(total=10)
    for key, value in out.items():
        if key in Outcome.__members__:
            outcomes.counts[Outcome[key]] = value
        else:
            setattr(outcomes, key, value)
    return StressResult(
        tests=10,
        seed=0,
        faults=0.1,
        outcomes=outcomes,
        stats={"svc": stats},
        peak_rss_mb=1.0,
        warmup_s=0.0,
        degraded_seen=degraded_seen,
        injected=injected or {},
    )


def _check(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def _accounting(result: StressResult) -> list[Check]:
    return cli._accounting(result, FaultInjector(0.1, 0))


def test_all_checks_hold_on_a_run_that_adds_up() -> None:
    stats = _stats(discards=2, degraded_leases=1, reset_failures=3, recoveries=TierCounts({"snapshot": 5}))
    result = _result(
        stats,
        degraded_seen=1,
        injected={"raise": 2, "cancel": 3, "discard": 2},
        INJECTED=2,
        CANCELLED=1,
        cancels_delivered=1,
        discarded=2,
    )
    assert all(c.ok for c in _accounting(result)), _accounting(result)


@pytest.mark.parametrize(
    ("name", "stats", "fields"),
    [
        ("leaks", {"leaks": 1, "recovery_failures": 1}, {}),
        ("degraded leases counted", {"degraded_leases": 2}, {"degraded_seen": 1}),
        ("recoveries counted", {"reset_failures": 1}, {}),
        ("injected test faults", {}, {"injected": {"raise": 2}, "INJECTED": 1}),
        ("injected test faults", {}, {"injected": {"cancel": 2}, "cancels_delivered": 2, "CANCELLED": 1}),
        (
            "discards reached recovery",
            {"discards": 1, "recovery_failures": 1},
            {"injected": {"discard": 2}, "discarded": 2},
        ),
    ],
    ids=["leak", "degraded", "recoveries", "raise", "cancel", "discard"],
)
def test_each_accounting_check_fails_when_its_figures_disagree(
    name: str, stats: dict[str, Any], fields: dict[str, Any]
) -> None:
    degraded_seen = fields.pop("degraded_seen", 0)
    injected = fields.pop("injected", {})
    check = _check(
        _accounting(_result(_stats(**stats), degraded_seen=degraded_seen, injected=injected, **fields)), name
    )
    assert not check.ok, check


def test_settled_and_invariants_fail_on_a_busy_or_broken_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SETTLE_S", 0.0)

    async def run() -> list[Check]:
        pool = MockPool(supervise=False)
        pool.register(ServiceSpec(name="svc", factory=object))
        async with pool:
            lease = pool.acquire("svc")
            await lease.__aenter__()
            pool.service_pools["svc"].core.resetting += 1  # books that no longer add up
            checks = await cli._settle_and_check(pool)
            pool.service_pools["svc"].core.resetting -= 1
            await lease.__aexit__(None, None, None)
            return checks

    checks = asyncio.run(run())
    assert not _check(checks, "settled").ok
    assert not _check(checks, "invariants").ok
