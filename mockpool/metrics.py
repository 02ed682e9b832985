"""Cheap-to-watch metrics: O(1) counters and ring buffers written on the hot path,
summarised (with numpy) only when someone asks for :class:`PoolStats`.

Each acquisition ends in exactly one outcome, counted once by the task that acquires: a
*hit* (served at once by an idle instance), a *handoff* (served after waiting, by a release or
a recovery: no creation), a *miss* (served by an instance created meanwhile), a *timeout*, a
*cancellation*, or an *acquire error* (anything else raised to the caller).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import AcquireTimeout

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = (
    "HANDOFF",
    "HIT",
    "MISS",
    "LoopBlocks",
    "RECOVERY_TIERS",
    "PoolStats",
    "Ring",
    "ServiceMetrics",
    "TierCounts",
    "format_error",
    "merged_wait_percentiles",
    "reset_problem",
    "wait_percentiles",
)

#: Recovery tiers in the order they are tried; ``TierCounts`` also accepts 1-4 as keys.
RECOVERY_TIERS = ("snapshot", "factory", "minimal", "stub")

# Smoothing of the hold/wait EWMAs: each new sample weighs 10 %.
_EWMA_ALPHA = 0.1


class LoopBlocks:
    """When sync factories held the loop (the last spans, on the pool's clock): no lease ran
    then, so a lease's own work is its hold less these spans (what the sizing controller
    weighs a creation against)."""

    __slots__ = ("last_end", "spans")

    def __init__(self, keep: int = 256) -> None:
        self.spans: deque[tuple[float, float]] = deque(maxlen=keep)
        #: When the last span ended: a lease that started after it had none (one comparison).
        self.last_end = -math.inf

    def add(self, start: float, end: float) -> None:
        if end > start:
            self.spans.append((start, end))
            self.last_end = max(self.last_end, end)

    def within(self, since: float, until: float) -> float:
        """Seconds of the spans between ``since`` and ``until``."""
        total = 0.0
        for start, end in reversed(self.spans):
            if end <= since:
                break
            total += max(0.0, min(end, until) - max(start, since))
        return total


class Ring:
    """A fixed-size ring of floats: O(1) append, the last ``capacity`` samples kept."""

    __slots__ = ("_data", "_hole", "_i", "count")

    def __init__(self, capacity: int = 2048) -> None:
        self._data = [0.0] * capacity
        self._i = 0
        self.count = 0
        #: ``count`` when :meth:`drop_last` left a full ring's slot ``_i`` stale: the sample it
        #: replaced is gone, and it stays out until the next append fills the slot.
        self._hole = -1

    def append(self, value: float) -> None:
        data = self._data
        i = self._i
        data[i] = value
        i += 1
        self._i = 0 if i == len(data) else i
        self.count += 1

    def drop_last(self) -> None:
        """Take back the sample appended last (one appended since the last drop)."""
        self._i = (self._i or len(self._data)) - 1
        self.count -= 1
        if self.count >= len(self._data):
            self._hole = self.count

    def values(self) -> list[float]:
        """The kept samples, oldest first."""
        if self.count < len(self._data):
            return self._data[: self.count]
        if self._hole == self.count:
            return self._data[self._i + 1 :] + self._data[: self._i]
        return self._data[self._i :] + self._data[: self._i]

    def since(self, count: int) -> list[float]:
        """The samples appended after ``self.count`` was ``count``, oldest first (at most the
        ``capacity`` kept). For samplers that read a ring in windows."""
        new = min(self.count - count, len(self._data))
        if new <= 0:
            return []
        end = self._i or len(self._data)
        if new <= end:
            return self._data[end - new : end]
        return self._data[len(self._data) - (new - end) :] + self._data[:end]

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        return _percentiles(self.values(), qs)


def _percentiles(values: Sequence[float], qs: Sequence[float]) -> tuple[float, ...]:
    if not values:
        return tuple(0.0 for _ in qs)
    import numpy as np  # when stats are read, not with mockpool (about 40 ms)

    # Nearest rank, as the waits (see merged_wait_percentiles): a value some sample had.
    result = np.percentile(np.asarray(values, dtype=np.float64), qs, method="inverted_cdf")
    return tuple(float(x) for x in result)


def wait_percentiles(samples: Sequence[float], recorded: int, zeros: int, *qs: float) -> tuple[float, ...]:
    """Percentiles ``qs`` (0-100) of waits of which ``zeros`` were 0 s (counted, not stored)
    and ``recorded`` were stored; ``samples`` are the stored ones still kept (a ring keeps the
    latest). As ``numpy.percentile(method="inverted_cdf")`` (nearest rank: each figure a wait
    some acquisition had) of the zeros and the samples in one list, the zeros not
    materialised. When the ring dropped some (``recorded > len(samples)``), the
    kept samples stand for all ``recorded``, spread evenly over their part of that list.
    0 s when no wait was stored."""
    return merged_wait_percentiles(((samples, recorded),), zeros, *qs)


def merged_wait_percentiles(
    parts: Sequence[tuple[Sequence[float], int]], zeros: int, *qs: float
) -> tuple[float, ...]:
    """:func:`wait_percentiles` of several processes' waits (xdist workers; the pytest plugin
    merges so): each part is one ring's kept samples and how many it recorded. Each part's
    samples stand for all it recorded, so a worker whose ring dropped waits weighs as many
    waits as it had, not as many as it kept; with nothing dropped, the figures are those of
    one process that had them all."""
    parts = [(part, max(recorded, len(part))) for part, recorded in parts if len(part)]
    if not parts:
        return tuple(0.0 for _ in qs)
    import numpy as np  # when stats are read, not with mockpool (about 40 ms)

    values = np.concatenate([np.asarray(part, dtype=np.float64) for part, _ in parts])
    order = np.argsort(values, kind="stable")
    kept = values[order]
    zeros = max(0, zeros)
    recorded = sum(n for _, n in parts)
    if recorded == len(kept):
        positions = np.arange(len(kept), dtype=np.float64)
    elif len(kept) == 1:
        positions = np.zeros(1)
    else:
        # Each kept sample stands for its ring's recorded / kept waits: it sits at the middle
        # of its share of the list, the first at the start and the last at the end.
        weights = np.concatenate([np.full(len(part), n / len(part)) for part, n in parts])[order]
        centres = np.cumsum(weights) - weights / 2
        positions = (centres - centres[0]) * ((recorded - 1) / (centres[-1] - centres[0]))
    total = zeros + recorded
    # Nearest rank, as numpy's "inverted_cdf" computes it: the smallest wait that q % of the
    # waits do not exceed, a wait some acquisition had. Interpolating would make the p50 of a
    # hit and a 16 ms miss read 8 ms, a wait nobody had.
    index = total * (np.asarray(qs, dtype=np.float64) / 100.0) - 1
    below = np.floor(index)
    rank = np.where(index - below > 0, below + 1, below)
    result = _nth_wait(np.clip(rank, 0, total - 1), zeros, positions, kept)
    return tuple(float(x) for x in result)


def _nth_wait(
    index: npt.NDArray[np.float64],
    zeros: int,
    positions: npt.NDArray[np.float64],
    kept: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The waits at ``index`` in the sorted list of ``zeros`` zeros and the stored waits
    (``kept``, sorted, at ``positions`` among them): waits are never negative, so the zeros
    come first."""
    import numpy as np

    position = np.maximum(index - zeros, 0.0)
    return np.where(index < zeros, 0.0, np.interp(position, positions, kept))


def _error_rate_operations(served: int, reset_failures: int, health_checks: int) -> int:
    """The operations ``error_rate`` is a share of, each failing once at most: the leases
    given (a lease fails when its body raises; with its reset when that succeeds, so that
    every lease raising reads 100 %), each failed reset as one operation more (one lease
    whose body and reset both failed is two failures of two), the health checks run."""
    return served + reset_failures + health_checks


def reset_problem(
    service: str, resets: int, failures: int, last_error: str | None, *, isolation: bool = False
) -> str | None:
    """A sentence naming the fix when most resets of ``service`` failed (each such lease sent
    its instance to recovery instead of reusing it), else None. ``isolation``: some failures
    were isolation checks (``isolation_verify``) rather than the hook raising."""
    if failures <= resets:
        return None
    if isolation:
        fix = "resets leave state behind (isolation check failed): make the reset hook clear it"
    else:
        fix = "the reset hook raises: fix it, or remove reset="
    return (
        f"service {service!r}: {failures} of {failures + resets} resets failed, so those leases "
        f"rebuilt their instance (last error: {last_error or 'not recorded'}); {fix}"
    )


#: How an acquisition that was served got its instance (``ServiceMetrics.unserve``).
HIT, HANDOFF, MISS = 0, 1, 2


def format_error(exc: BaseException | None, limit: int = 160) -> str | None:
    """``"Type: message"`` on one line, cut to ``limit`` characters (None for no error)."""
    if exc is None:
        return None
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ServiceMetrics:
    """Mutable counters of one service, written by the pool; read through ``PoolStats``."""

    __slots__ = (
        "_blocked_at",
        "_blocked_mean",
        "acquire_errors",
        "acquisitions",
        "cancellations",
        "create_ewma",
        "create_failures",
        "created",
        "degraded_leases",
        "destroyed",
        "discards",
        "handoffs",
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
        "released_at",
        "reset_failures",
        "resets",
        "timeouts",
        "wait_ewma",
        "waits",
    )

    def __init__(self) -> None:
        self.acquisitions = 0
        #: The outcomes, one per finished acquisition (see the module docstring).
        self.hits = 0
        self.handoffs = 0
        self.misses = 0
        self.timeouts = 0
        self.cancellations = 0
        self.acquire_errors = 0
        #: Acquisitions that joined the waiter queue (the rest were served at once).
        self.queued = 0
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
        #: When the last lease ended (the pool's clock; the stall check reads it).
        self.released_at = 0.0
        #: EWMA of the seconds sync factories held the loop per lease, as of hold number
        #: ``_blocked_at`` (see record_blocked_hold).
        self._blocked_mean = 0.0
        self._blocked_at = 0
        self.wait_ewma = 0.0
        #: Mean creation time (EWMA; the first creation sets it), None before one ended.
        self.create_ewma: float | None = None

    def wait_percentiles(self, *qs: float) -> tuple[float, ...]:
        """Percentiles of the wait of every acquisition that was served or timed out.
        Acquisitions served at once (hits) waited 0 s; they are counted, not stored, to keep
        the hot path short, and weighed in here as the share of zeros."""
        return wait_percentiles(self.waits.values(), self.waits.count, self.zero_waits(), *qs)

    def zero_waits(self) -> int:
        """Acquisitions served at once: each waited 0 s. Not those that failed before they
        could queue (no asyncio loop, a bind that raised): they waited for nothing, and five
        such under trio read as a median wait of 0 s."""
        return self.hits

    def unserve(self, how: int) -> None:
        """Take back the outcome of an acquisition counted as served (``HIT``, ``HANDOFF``
        or ``MISS``) that ends otherwise after all: its bind raised, or its check on acquire
        failed and it waits again."""
        if how == HIT:
            self.hits -= 1
        elif how == HANDOFF:
            self.handoffs -= 1
        else:
            self.misses -= 1

    def count_failure(self, exc: BaseException) -> None:
        """Count the outcome of an acquisition that raised ``exc`` to its caller."""
        if isinstance(exc, AcquireTimeout):
            self.timeouts += 1
        elif isinstance(exc, asyncio.CancelledError):
            self.cancellations += 1
        else:
            self.acquire_errors += 1

    def record_wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.wait_ewma += _EWMA_ALPHA * (seconds - self.wait_ewma)

    def unrecord_wait(self, seconds: float) -> None:
        """Take back the wait recorded last, ``seconds`` long: the acquisition failed in the
        same loop step (a lease hook raised), so it was not served after all."""
        self.waits.drop_last()
        self.wait_ewma = (self.wait_ewma - _EWMA_ALPHA * seconds) / (1 - _EWMA_ALPHA)

    def record_hold(self, seconds: float) -> None:
        holds = self.holds
        # The first hold sets the mean: starting from 0 would read a tenth of it for a while,
        # and the sizing controller would take leases for shorter than they are.
        self.hold_ewma = (
            seconds if holds.count == 0 else self.hold_ewma + _EWMA_ALPHA * (seconds - self.hold_ewma)
        )
        holds.append(seconds)

    def record_blocked_hold(self, seconds: float, blocked: float) -> None:
        """A lease held ``seconds``, during which sync factories held the loop ``blocked``.

        The mean of the blocked seconds per lease is an EWMA over every hold, kept lazily: the
        holds without any (nearly all) would only decay it, so it is decayed when read and
        when the next blocked hold comes, and the release path stays as it was."""
        previous = self.holds.count
        mean = blocked if previous == 0 else self._blocked_decayed(previous) * (1 - _EWMA_ALPHA)
        self.record_hold(seconds)
        self._blocked_mean = mean if previous == 0 else mean + _EWMA_ALPHA * blocked
        self._blocked_at = previous + 1

    def _blocked_decayed(self, count: int) -> float:
        return self._blocked_mean * (1 - _EWMA_ALPHA) ** (count - self._blocked_at)

    @property
    def work_ewma(self) -> float | None:
        """Mean hold less the time sync factories held the loop during each lease (None
        before the first hold). A lease that awaited through a creation was not slowed by all
        of it: this reads low, so the sizing controller makes too few rather than too many
        (later holds no creation stretched raise it again; an instance made stays)."""
        count = self.holds.count
        if count == 0:
            return None
        return max(0.0, self.hold_ewma - self._blocked_decayed(count))

    def record_creation(self, seconds: float) -> None:
        mean = self.create_ewma
        self.create_ewma = seconds if mean is None else mean + _EWMA_ALPHA * (seconds - mean)

    def error_rate(self) -> float:
        """The share of the operations on this service's instances that failed, in [0, 1]
        (``_error_rate_operations``). Per acquisition it passed 1: health checks of idle
        instances and a group's recovery of its members fail with no acquisition of theirs."""
        errors = self.lease_errors + self.reset_failures + self.health_failures
        done = _error_rate_operations(
            self.hits + self.handoffs + self.misses, self.reset_failures, self.health_checks
        )
        return errors / done if done else 0.0


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
    """A snapshot of one service's pool.

    A *hit* is an acquisition served at once by an idle, ready instance: no wait at all. A
    *reuse* is one served without a creation: at once (a hit), or by a release or a recovery
    while it waited. A *miss* waited for an instance created meanwhile. ``hit_rate`` and
    ``reuse_rate`` are shares of the served acquisitions (``hits + (reuses - hits) + misses``).
    ``timeouts``, ``cancellations`` and ``acquire_errors`` are the acquisitions that raised
    instead; each acquisition has exactly one of these outcomes. ``created`` and ``destroyed``
    count every instance made (factory, minimal or stub) and discarded (closed, shrunk,
    replaced by recovery), so ``size == created - destroyed`` once nothing is being created or
    recovered. ``last_error`` is the service's last hook failure (factory, reset, recovery),
    ``last_reset_error`` its last reset failure, each ``"Type: message"``. ``lent`` is how
    many of ``in_use`` are held by instances of the groups built on this service (idle or
    leased ones): no lease of this service holds them. ``released`` counts the leases that
    ended: the hold figures are of those, none while every lease served is still held.
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
    reuses: int
    misses: int
    hit_rate: float
    reuse_rate: float
    timeouts: int
    cancellations: int
    acquire_errors: int
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
    last_error: str | None = None
    last_reset_error: str | None = None
    lent: int = 0
    released: int = 0

    @property
    def served(self) -> int:
        """Acquisitions that got an instance: hits, reuses after a wait, misses."""
        return self.reuses + self.misses

    def reset_problem(self) -> str | None:
        """A sentence naming the fix when most resets failed, else None."""
        return reset_problem(
            self.name,
            self.resets,
            self.reset_failures,
            self.last_reset_error or self.last_error,
            isolation=self.isolation_failures > 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; null for a figure of nothing (as ``-`` in the report's
        table): rates when no acquisition was served, holds when no lease ended, waits when
        none was served or timed out, the error rate when nothing it is a share of happened
        (no lease, reset or health check). 0.0 would read as "every acquisition missed",
        "served at once", "returned at once" or "no errors"."""
        data = asdict(self)
        if not _error_rate_operations(self.served, self.reset_failures, self.health_checks):
            data["error_rate"] = None
        if not self.released:  # no lease ended yet (or none served)
            for key in ("hold_p50_s", "hold_p99_s", "hold_ewma_s"):
                data[key] = None
        if not self.served:
            for key in ("hit_rate", "reuse_rate"):
                data[key] = None
            if not self.timeouts:
                for key in ("wait_p50_s", "wait_p99_s", "wait_ewma_s"):
                    data[key] = None
        data["recoveries"] = dict(self.recoveries.items())
        data["recovery_p50_s"] = dict(self.recovery_p50_s)
        data["recovery_p99_s"] = dict(self.recovery_p99_s)
        return data
