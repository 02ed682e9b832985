"""What a run records: :class:`UsageRecorder` counts one run's usage, :class:`RunRecord` is the
frozen result.

The recorder is owned by the pool for one run. Its ``record_*`` methods are O(1) and allocate
nothing in the steady state; times are seconds from the run start, read from the pool's clock.
Acquisition times are not kept: they are counted per window of ``window_s`` as they arrive (the
recorder doubles its window when a run outgrows ``max_windows``, so memory stays bounded).
:meth:`UsageRecorder.finish` gives per service a :class:`ServiceUsage`, per named test the
services it used. :meth:`RunRecord.combine` adds up the records of workers that ran *at the same
time* (pytest-xdist).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .format import DEFAULT_LIMITS, DEMAND_DECIMALS, OUTSIDE_TESTS, ServiceUsage, read_run, write_run

if TYPE_CHECKING:
    # numpy (about 40 ms to import) loads when first used, not with mockpool: ``import
    # mockpool`` stays cheap for suites that never summarise demand.
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = ("RunRecord", "UsageRecorder")

# Times beyond this (about 30 years) are garbage; counting them would allocate without bound.
_MAX_T_REL = 1e9


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one run (or several parallel workers, combined) used."""

    window_s: float
    duration_s: float
    services: Mapping[str, ServiceUsage] = field(default_factory=lambda: MappingProxyType({}))
    #: Test id -> the services it used, sorted.
    tests: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _check_window(self.window_s)
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "tests", MappingProxyType(dict(self.tests)))

    @staticmethod
    def combine(runs: Iterable[RunRecord]) -> RunRecord:
        """Add up runs that happened at the same time (xdist workers) into one.

        Demand and acquisitions are summed on the coarsest window; peaks are summed too, an
        upper bound since the workers' peaks need not coincide; hold means are weighted by
        acquisitions, the p95 is the worst worker's. Tests are united (a later run wins a tie),
        and so are the services each leased outside tests (:data:`OUTSIDE_TESTS`).
        """
        import numpy as np

        runs = list(runs)
        if not runs:
            raise ValueError("RunRecord.combine needs at least one run")
        window = max(r.window_s for r in runs)
        services: dict[str, ServiceUsage] = {}
        for name in sorted({n for r in runs for n in r.services}):
            parts = [(r, r.services[name]) for r in runs if name in r.services]
            demand = _sum_series([_rebin(np.asarray(u.demand), r.window_s, window) for r, u in parts])
            acquisitions = sum(u.acquisitions for _, u in parts)
            hold_mean = (
                sum(u.hold_mean_s * u.acquisitions for _, u in parts) / acquisitions if acquisitions else 0.0
            )
            services[name] = ServiceUsage(
                acquisitions=acquisitions,
                peak_concurrency=sum(u.peak_concurrency for _, u in parts),
                hold_mean_s=hold_mean,
                hold_p95_s=max(u.hold_p95_s for _, u in parts),
                demand=_to_tuple(demand),
                # Each worker has a pool of its own: the size one settled at (the largest).
                size=max(u.size for _, u in parts),
            )
        tests: dict[str, tuple[str, ...]] = {}
        for r in runs:
            tests.update(r.tests)
        # Each worker leased its own share outside tests (its session fixtures, threads).
        outside = sorted({name for r in runs for name in r.tests.get(OUTSIDE_TESTS, ())})
        if outside:
            tests[OUTSIDE_TESTS] = tuple(outside)
        return RunRecord(window, max(r.duration_s for r in runs), services, tests)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (pytest-xdist's ``workeroutput`` carries it to the controller)."""
        return write_run(self.window_s, self.duration_s, self.services, self.tests)

    @staticmethod
    def from_dict(data: object) -> RunRecord:
        """Parse :meth:`to_dict`'s output; :class:`HistoryFormatError` naming the bad field otherwise."""
        return RunRecord(*read_run(data))


class _Tally:
    """Running counts of one service during a run."""

    __slots__ = ("acquisitions", "counts", "hold_i", "hold_n", "hold_ring", "hold_sum", "peak")

    def __init__(self, hold_samples: int) -> None:
        self.acquisitions = 0
        self.peak = 0
        self.counts: list[int] = []
        self.hold_sum = 0.0
        self.hold_n = 0
        # A ring of recent hold times: the p95 is of the last ``hold_samples`` releases.
        self.hold_ring = [0.0] * hold_samples
        self.hold_i = 0


class UsageRecorder:
    """Records one run's usage. Not thread-safe: call it from the pool's event loop."""

    __slots__ = ("_hold_samples", "_max_tests", "_max_windows", "_tallies", "_tests", "_window")

    def __init__(
        self,
        *,
        window_s: float = 1.0,
        max_windows: int = DEFAULT_LIMITS.max_windows,
        max_tests: int = DEFAULT_LIMITS.max_tests,
        hold_samples: int = 1024,
    ) -> None:
        _check_window(window_s)
        if max_windows < 2 or max_tests < 0 or hold_samples < 1:
            raise ValueError("max_windows must be >= 2, max_tests >= 0 and hold_samples >= 1")
        self._window = float(window_s)
        self._max_windows = max_windows
        self._max_tests = max_tests
        self._hold_samples = hold_samples
        self._tallies: dict[str, _Tally] = {}
        self._tests: dict[str, tuple[str, ...]] = {}

    @property
    def window_s(self) -> float:
        """The current window; it doubles each time the run outgrows ``max_windows``."""
        return self._window

    def _tally(self, service: str) -> _Tally:
        tally = self._tallies.get(service)
        if tally is None:
            tally = self._tallies[service] = _Tally(self._hold_samples)
        return tally

    def record_acquire(self, service: str, t_rel: float, in_use: int) -> None:
        """Count an acquisition at ``t_rel`` seconds from the run start, ``in_use`` included."""
        tally = self._tally(service)
        tally.peak = max(tally.peak, in_use)
        self._count(tally, t_rel, 1)

    def record_window(self, service: str, t_rel: float, count: int, peak: int) -> None:
        """Count ``count`` acquisitions at ``t_rel`` at once, with the peak concurrency seen
        meanwhile: how the pool feeds the recorder from sampled counters, at no cost per
        acquire."""
        tally = self._tally(service)
        tally.peak = max(tally.peak, peak)
        if count > 0:
            self._count(tally, t_rel, count)

    def _count(self, tally: _Tally, t_rel: float, count: int) -> None:
        """Add ``count`` acquisitions to the window of ``t_rel``, coarsening the windows when
        the run outgrows ``max_windows``."""
        tally.acquisitions += count
        if not 0.0 <= t_rel < _MAX_T_REL:  # also false for NaN
            t_rel = 0.0
        i = int(t_rel / self._window)
        while i >= self._max_windows:
            self._coarsen()
            i = int(t_rel / self._window)
        counts = tally.counts
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += count

    def _coarsen(self) -> None:
        # Double the window for every service at once, so all share one time grid.
        for tally in self._tallies.values():
            c = tally.counts
            tally.counts = [sum(c[j : j + 2]) for j in range(0, len(c), 2)]
        self._window *= 2

    def record_release(self, service: str, hold_s: float) -> None:
        """Record how long a lease of ``service`` was held."""
        if not 0.0 <= hold_s < _MAX_T_REL:
            return
        tally = self._tally(service)
        tally.hold_sum += hold_s
        tally.hold_n += 1
        ring = tally.hold_ring
        ring[tally.hold_i] = hold_s
        tally.hold_i = (tally.hold_i + 1) % len(ring)

    def record_test(self, test_id: str, services: Iterable[str]) -> None:
        """Remember the services ``test_id`` used (the last call for a test wins)."""
        if test_id in self._tests or len(self._tests) < self._max_tests:
            self._tests[test_id] = tuple(sorted(set(services)))

    def demand(self, service: str, *, t_rel: float | None = None) -> FloatArray:
        """This run's demand so far, per window of :attr:`window_s`.

        With ``t_rel`` (now, from the run start) only the windows complete by then, padded with
        zeros for idle ones: a reader must not see a half-counted window, nor miss a silence.
        """
        import numpy as np

        tally = self._tallies.get(service)
        counts = np.asarray(tally.counts if tally else [], dtype=np.float64)
        if t_rel is None:
            return counts
        complete = int(min(max(t_rel, 0.0), _MAX_T_REL) / self._window) if not math.isnan(t_rel) else 0
        complete = min(complete, self._max_windows)
        out = np.zeros(complete, dtype=np.float64)
        m = min(complete, counts.size)
        out[:m] = counts[:m]
        return out

    def finish(self, *, duration_s: float | None = None, sizes: Mapping[str, int] | None = None) -> RunRecord:
        """Summarise the run. ``duration_s`` pads the demand with the run's idle tail; ``sizes``
        are the most instances each service had alive at once."""
        import numpy as np

        windows = max((len(t.counts) for t in self._tallies.values()), default=0)
        if duration_s is not None and 0.0 <= duration_s < _MAX_T_REL:
            windows = max(windows, math.ceil(duration_s / self._window))
        windows = min(windows, self._max_windows)
        services: dict[str, ServiceUsage] = {}
        for name, t in self._tallies.items():
            demand = np.zeros(windows, dtype=np.float64)
            counts = t.counts[:windows]
            demand[: len(counts)] = counts
            holds = t.hold_ring[: t.hold_n] if t.hold_n < len(t.hold_ring) else t.hold_ring
            services[name] = ServiceUsage(
                acquisitions=t.acquisitions,
                peak_concurrency=t.peak,
                hold_mean_s=t.hold_sum / t.hold_n if t.hold_n else 0.0,
                hold_p95_s=float(np.percentile(holds, 95)) if holds else 0.0,
                demand=_to_tuple(demand),
                size=(sizes or {}).get(name, 0),
            )
        valid = duration_s is not None and 0.0 <= duration_s < _MAX_T_REL
        duration = duration_s if duration_s is not None and valid else windows * self._window
        return RunRecord(self._window, duration, services, self._tests)


# --------------------------------------------------------------------------- demand series
# Shared with the store, which merges runs on the same arithmetic.


def _check_window(window_s: object) -> None:
    if isinstance(window_s, bool) or not isinstance(window_s, int | float):
        raise TypeError(f"window_s must be a number, got {window_s!r}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be positive and finite, got {window_s!r}")


def _to_tuple(a: FloatArray) -> tuple[float, ...]:
    import numpy as np

    return tuple(np.round(a, DEMAND_DECIMALS).tolist())


def _sum_series(series: list[FloatArray]) -> FloatArray:
    import numpy as np

    total = np.zeros(max((s.size for s in series), default=0))
    for s in series:
        total[: s.size] += s
    return total


def _rebin(counts: FloatArray, from_w: float, to_w: float) -> FloatArray:
    """Re-bin counts per ``from_w`` window to ``to_w``, preserving totals (linear within bins)."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    if from_w == to_w or counts.size == 0:
        return counts
    span = counts.size * from_w
    m = max(math.ceil(span / to_w - 1e-9), 1)
    edges = np.arange(counts.size + 1, dtype=np.float64) * from_w
    cum = np.concatenate(([0.0], np.cumsum(counts)))
    return np.diff(np.interp(np.arange(m + 1, dtype=np.float64) * to_w, edges, cum))
