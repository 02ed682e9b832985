"""Cheap-to-watch metrics: O(1) counters and ring buffers written on the hot path,
summarised (with numpy) only when someone asks for :class:`PoolStats`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ("RECOVERY_TIERS", "PoolStats", "Ring", "ServiceMetrics", "TierCounts")

#: Recovery tiers in the order they are tried; ``TierCounts`` also accepts 1-4 as keys.
RECOVERY_TIERS = ("snapshot", "factory", "minimal", "stub")

# Smoothing of the hold/wait EWMAs: each new sample weighs 10 %.
_EWMA_ALPHA = 0.1


class Ring:
    """A fixed-size ring of floats: O(1) append, the last ``capacity`` samples kept."""

    __slots__ = ("_data", "_i", "count")

    def __init__(self, capacity: int = 2048) -> None:
        self._data = [0.0] * capacity
        self._i = 0
        self.count = 0

    def append(self, value: float) -> None:
        data = self._data
        i = self._i
        data[i] = value
        i += 1
        self._i = 0 if i == len(data) else i
        self.count += 1

    def values(self) -> list[float]:
        """The kept samples, oldest first."""
        if self.count < len(self._data):
            return self._data[: self.count]
        return self._data[self._i :] + self._data[: self._i]

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        values = self.values()
        if not values:
            return tuple(0.0 for _ in qs)
        import numpy as np  # when stats are read, not with mockpool (about 40 ms)

        result = np.percentile(np.asarray(values, dtype=np.float64), qs)
        return tuple(float(x) for x in result)


class ServiceMetrics:
    """Mutable counters of one service, written by the pool; read through ``PoolStats``."""

    __slots__ = (
        "acquisitions",
        "cancellations",
        "create_failures",
        "created",
        "degraded_leases",
        "destroyed",
        "discards",
        "health_checks",
        "health_failures",
        "hits",
        "hold_ewma",
        "holds",
        "isolation_failures",
        "leaks",
        "lease_errors",
        "misses",
        "queued",
        "recoveries",
        "recovery_failures",
        "recovery_times",
        "reset_failures",
        "resets",
        "timeouts",
        "wait_ewma",
        "waits",
    )

    def __init__(self) -> None:
        self.acquisitions = 0
        self.hits = 0
        self.misses = 0
        #: Acquisitions that joined the waiter queue (the rest were served at once).
        self.queued = 0
        self.timeouts = 0
        self.cancellations = 0
        self.created = 0
        self.create_failures = 0
        self.destroyed = 0
        self.resets = 0
        self.reset_failures = 0
        self.health_checks = 0
        self.health_failures = 0
        self.lease_errors = 0
        self.discards = 0
        self.degraded_leases = 0
        self.leaks = 0
        self.isolation_failures = 0
        self.recoveries = dict.fromkeys(RECOVERY_TIERS, 0)
        self.recovery_failures = 0
        self.recovery_times = {tier: Ring(512) for tier in RECOVERY_TIERS}
        self.waits = Ring()
        self.holds = Ring()
        self.hold_ewma = 0.0
        self.wait_ewma = 0.0

    def wait_percentiles(self, *qs: float) -> tuple[float, ...]:
        """Percentiles of the wait of every acquisition. Served-at-once acquisitions (hits
        that never queued) waited 0 s; they are counted, not stored, to keep the hot path
        short, and weighed in here as the share of zeros."""
        zeros = self.acquisitions - self.queued
        total = zeros + self.waits.count
        if total <= 0 or zeros <= 0:
            return self.waits.percentiles(*qs)
        share = zeros / total
        if share >= 1.0:
            return tuple(0.0 for _ in qs)
        ranks = [max(0.0, (q / 100.0 - share) / (1.0 - share)) * 100.0 for q in qs]
        above = self.waits.percentiles(*ranks)
        return tuple(0.0 if q / 100.0 <= share else v for q, v in zip(qs, above, strict=True))

    def record_wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.wait_ewma += _EWMA_ALPHA * (seconds - self.wait_ewma)

    def record_hold(self, seconds: float) -> None:
        self.holds.append(seconds)
        self.hold_ewma += _EWMA_ALPHA * (seconds - self.hold_ewma)

    def error_rate(self) -> float:
        """Errors (in leases, resets, health checks) per acquisition."""
        errors = self.lease_errors + self.reset_failures + self.health_failures
        return errors / self.acquisitions if self.acquisitions else 0.0


class TierCounts(Mapping[str, int]):
    """Recoveries per tier, keyed by tier name; ``counts[1]`` also reads ``counts["snapshot"]``."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = {tier: int(counts.get(tier, 0)) for tier in RECOVERY_TIERS}

    def __getitem__(self, key: object) -> int:
        if isinstance(key, int) and not isinstance(key, bool) and 1 <= key <= len(RECOVERY_TIERS):
            key = RECOVERY_TIERS[key - 1]
        if not isinstance(key, str):
            raise KeyError(key)
        return self._counts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"TierCounts({self._counts!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._counts.items()))

    def total(self) -> int:
        return sum(self._counts.values())


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one service's pool. A *hit* is an acquisition served by an instance that
    already existed (idle, or handed over by a release) rather than one created for it.
    """

    name: str
    size: int
    idle: int
    in_use: int
    waiting: int
    max_size: int
    min_size: int
    creating: int
    recovering: int
    created: int
    destroyed: int
    acquisitions: int
    hits: int
    misses: int
    hit_rate: float
    timeouts: int
    cancellations: int
    resets: int
    reset_failures: int
    health_checks: int
    health_failures: int
    create_failures: int
    lease_errors: int
    discards: int
    recoveries: TierCounts
    recovery_failures: int
    degraded_leases: int
    leaks: int
    isolation_failures: int
    peak_in_use: int
    wait_p50_s: float
    wait_p99_s: float
    hold_p50_s: float
    hold_p99_s: float
    hold_ewma_s: float
    wait_ewma_s: float
    error_rate: float
    recovery_p50_s: Mapping[str, float] = field(default_factory=dict)
    recovery_p99_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        data = asdict(self)
        data["recoveries"] = dict(self.recoveries.items())
        data["recovery_p50_s"] = dict(self.recovery_p50_s)
        data["recovery_p99_s"] = dict(self.recovery_p99_s)
        return data
