"""The run over time: one :class:`Sample` every ``interval_s`` (tests running, leases held,
per service: pool size, waiters, the waits that ended, faults, recoveries and degraded leases;
hits, reuses, RSS), for the progress bar, the plot and peak RSS.

Sampling reads each service's counters and the waits recorded since the last sample (no
percentiles), and stays off the hot path: fifty times a second costs well under 1 % of a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import psutil  # type: ignore[import-untyped]  # no stubs installed

from mockpool import MockPool

from .runner import RunOutcomes

__all__ = ("Sample", "Timeline", "held_by_groups")

_MB = 1024 * 1024


def held_by_groups(pool: MockPool) -> dict[str, int]:
    """Instances of each member service that its groups hold (one per group instance)."""
    held: dict[str, int] = {}
    for svc in pool.service_pools.values():
        for member in svc.spec.depends_on:
            held[member] = held.get(member, 0) + svc.core.size
    return held


@dataclass(frozen=True, slots=True)
class Sample:
    """What the sampler saw at ``t_s``. Per-service counters are cumulative; ``waits`` holds
    the waits (seconds) recorded since the previous sample, ``zero_waits`` those served at
    once since then."""

    t_s: float
    running: int
    done: int
    in_use: int
    size: dict[str, int]
    waiting: dict[str, int]
    hits: int
    reuses: int
    served: int
    rss_mb: float
    waits: dict[str, list[float]] = field(default_factory=dict)
    zero_waits: dict[str, int] = field(default_factory=dict)
    #: Hook failures and discards: what sends an instance to recovery (or fails a creation).
    faults: dict[str, int] = field(default_factory=dict)
    recoveries: dict[str, int] = field(default_factory=dict)
    recovery_failures: dict[str, int] = field(default_factory=dict)
    degraded: dict[str, int] = field(default_factory=dict)


@dataclass
class Timeline:
    """Samples of one pool run; ``peak_rss_mb`` also counts samples taken outside it."""

    pool: MockPool | None
    # A run of 1,199 tests takes about a second: at 0.1 s the plot had 8 points.
    interval_s: float = 0.02
    samples: list[Sample] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    outcomes: RunOutcomes | None = None
    _process: psutil.Process = field(default_factory=psutil.Process)
    _t0: float = field(default_factory=time.perf_counter)
    #: Per service, the wait ring's count and the zero waits at the previous sample.
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def rss(self) -> float:
        rss = float(self._process.memory_info().rss) / _MB
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss

    def sample(self) -> Sample:
        # The counters straight from each service, not ``pool.stats()``: that computes wait and
        # hold percentiles (numpy), a cost the sampler would add to the run it measures.
        services = self.pool.service_pools if self.pool is not None else {}
        out = self.outcomes
        groups_hold = held_by_groups(self.pool) if self.pool is not None else {}
        waits: dict[str, list[float]] = {}
        zeros: dict[str, int] = {}
        for name, svc in services.items():
            m = svc.metrics
            recorded, zero = self._seen.get(name, (0, 0))
            waits[name] = m.waits.since(recorded)
            zeros[name] = m.zero_waits() - zero
            self._seen[name] = (m.waits.count, m.zero_waits())
        sample = Sample(
            t_s=time.perf_counter() - self._t0,
            running=out.running if out is not None else 0,
            done=out.done if out is not None else 0,
            # Leases the tests hold: members held by their group are not the tests'.
            in_use=sum(max(0, s.core.in_use - groups_hold.get(n, 0)) for n, s in services.items()),
            size={n: s.core.size for n, s in services.items()},
            waiting={n: s.core.waiting for n, s in services.items()},
            hits=sum(s.metrics.hits for s in services.values()),
            reuses=sum(s.metrics.hits + s.metrics.handoffs for s in services.values()),
            served=sum(s.metrics.hits + s.metrics.handoffs + s.metrics.misses for s in services.values()),
            rss_mb=self.rss(),
            waits=waits,
            zero_waits=zeros,
            faults={
                n: s.metrics.reset_failures
                + s.metrics.health_failures
                + s.metrics.create_failures
                + s.metrics.discards
                for n, s in services.items()
            },
            recoveries={n: sum(s.metrics.recoveries.values()) for n, s in services.items()},
            recovery_failures={n: s.metrics.recovery_failures for n, s in services.items()},
            degraded={n: s.metrics.degraded_leases for n, s in services.items()},
        )
        self.samples.append(sample)
        return sample

    async def run(self, on_sample: Callable[[Sample], None] | None = None) -> None:
        """Sample until cancelled."""
        while True:
            sample = self.sample()
            if on_sample is not None:
                on_sample(sample)
            await anyio.sleep(self.interval_s)
